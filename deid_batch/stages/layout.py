"""Output layout: where each input's de-identified copy goes.

Takes the output folder, the run key and an input path; returns the output path. Names derive from
an HMAC of the absolute input path under the run key, so they carry no header value and no input
folder name (PACS exports are often foldered by patient name), two inputs never collide, and the
same input always lands at the same place for the same key (what makes ``--resume`` possible)::

    OUTDIR/3f/a2/3fa29c...e1.dcm      # 2 levels of 256 shard folders, 32 hex digits per name

With 65,536 leaf folders, a million files put about 15 files in a folder and a hundred million
about 1,500.
"""

from __future__ import annotations

import hashlib
import hmac
import os

__all__ = ["NAME_HEX_DIGITS", "output_path", "output_relpath"]

NAME_HEX_DIGITS = 32
_SUFFIX = ".dcm"


def output_relpath(key: bytes, source: str) -> str:
    """Relative output path (``ab/cd/<hash>.dcm``) of the absolute input path ``source``."""
    digest = hmac.new(key, b"output-name\0" + os.fsencode(source), hashlib.sha256).hexdigest()
    name = digest[:NAME_HEX_DIGITS]
    return os.path.join(name[0:2], name[2:4], name + _SUFFIX)


def output_path(output_folder: str, key: bytes, source: str) -> str:
    """Absolute output path of ``source`` inside ``output_folder``."""
    return os.path.join(output_folder, output_relpath(key, source))

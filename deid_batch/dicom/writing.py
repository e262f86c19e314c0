"""Writing: serialise a de-identified dataset and put it in place atomically.

The file meta is rebuilt to match the dataset (``MediaStorageSOPInstanceUID`` = the dataset's
``SOPInstanceUID``, removed when the dataset has none; ``MediaStorageSOPClassUID`` = ``SOPClassUID``),
so no original UID survives in the file meta, and the 128-byte preamble is zeroed (it may hold a
TIFF header or other data from the source). The bytes are written under a temporary name in the
target folder and then linked (no overwrite) or renamed (overwrite) into place, so no reader ever
sees a half-written output.
"""

from __future__ import annotations

import enum
import io
import os
import secrets
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

__all__ = ["Outcome", "encode", "write_atomic", "TMP_MARKER"]

TMP_MARKER = ".deid-batch-tmp-"
_PREAMBLE = b"\x00" * 128
_TEXT_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})


class Outcome(str, enum.Enum):
    WRITTEN = "written"
    IDENTICAL = "identical"  # the same bytes were already there (an earlier attempt of this job)
    EXISTS = "exists"  # a different file is there and overwrite is off


def _rebuild_file_meta(ds: Dataset) -> None:
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = FileMetaDataset()
        ds.file_meta = meta
    if "TransferSyntaxUID" not in meta:
        implicit = getattr(ds, "is_implicit_VR", None)
        if implicit is None:
            implicit = getattr(ds, "_is_implicit_VR", True)
        meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    for src, dst in (("SOPInstanceUID", "MediaStorageSOPInstanceUID"), ("SOPClassUID", "MediaStorageSOPClassUID")):
        value = ds.get(src)
        if isinstance(value, str) and value:
            setattr(meta, dst, value)
        elif dst in meta and dst == "MediaStorageSOPInstanceUID":
            del meta[dst]


def _has_non_ascii_text(ds: Dataset) -> bool:
    for elem in ds.iterall():
        if elem.VR in _TEXT_VRS:
            values = elem.value if isinstance(elem.value, (list, tuple)) else (elem.value,)
            if any(isinstance(v, str) and not v.isascii() for v in values):
                return True
            if any(not str(v).isascii() for v in values if v.__class__.__name__ == "PersonName"):
                return True
    return False


def encode(ds: Dataset, *, character_set: Any = None) -> bytes:
    """Serialise ``ds`` as a DICOM file (preamble zeroed, file meta rebuilt).

    ``character_set`` is the input's SpecificCharacterSet: if the recipe removed it while kept
    text still needs it, it is put back (pydicom would otherwise write ``?`` for what the default
    repertoire cannot encode, silently changing a kept value).
    """
    if character_set and "SpecificCharacterSet" not in ds and _has_non_ascii_text(ds):
        ds.SpecificCharacterSet = character_set
    _rebuild_file_meta(ds)
    ds.preamble = _PREAMBLE
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def _same_content(path: str, data: bytes) -> bool:
    try:
        if os.path.getsize(path) != len(data):
            return False
        with open(path, "rb") as fh:
            return fh.read() == data
    except OSError:
        return False


def _stamped(path: str, stamp_ns: int | None) -> bool:
    """Does the file at ``path`` carry this run's modification-time stamp?

    File systems keep nanoseconds, microseconds or whole seconds; the stamp is compared at the
    precision the file system kept.
    """
    if stamp_ns is None:
        return False
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return False
    if mtime == stamp_ns:
        return True
    if mtime % 1_000 == 0 and mtime // 1_000 == stamp_ns // 1_000:
        return True
    return mtime % 1_000_000_000 == 0 and mtime // 1_000_000_000 == stamp_ns // 1_000_000_000


def write_atomic(path: str, data: bytes, *, overwrite: bool, stamp_ns: int | None = None) -> Outcome:
    """Write ``data`` to ``path`` through a temporary file in the same folder.

    ``stamp_ns`` is the run's stamp: every output this run writes gets it as its modification
    time, so a retried or resumed partition of the same run recognises its own identical output
    (``IDENTICAL``, counted as written once) while an output left by an earlier run is
    ``EXISTS`` unless ``overwrite`` (deid: "already exists, overwrite set to False").
    """
    if os.path.lexists(path):
        if _same_content(path, data) and (overwrite or _stamped(path, stamp_ns)):
            return Outcome.IDENTICAL
        if not overwrite:
            return Outcome.EXISTS
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f"{TMP_MARKER}{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if stamp_ns is not None:
            os.utime(tmp, ns=(stamp_ns, stamp_ns))
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                if _same_content(path, data) and _stamped(path, stamp_ns):
                    return Outcome.IDENTICAL
                return Outcome.EXISTS
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return Outcome.WRITTEN

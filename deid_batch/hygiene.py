"""Keep header values out of logs and linkage files private.

Linkage files (the identifiers table, the manifest folder with the run key, mapping files we
write) hold PHI: :func:`private_folder` and :func:`private_file` create them 0700/0600.

Logs: pydicom's own warnings quote values.

pydicom reports invalid values with ``warn_and_log`` (a ``UserWarning`` plus a record on the
``pydicom`` logger) that contains the value itself, e.g. a name or a UID. Worker functions run
inside :func:`no_value_logging`, which silences both for the duration of the call and restores
them afterwards (workers run one task per thread; nothing leaks into other calls).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

__all__ = ["no_value_logging", "private_file", "private_folder"]


def private_folder(path: str) -> None:
    """Create ``path`` (and missing parents) with the leaf folder readable by its owner only (0700).

    An existing folder is left as it is.
    """
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)


def private_file(path: str) -> None:
    """Create ``path`` empty with mode 0600 (or truncate it and set 0600), before a writer fills it.

    Writers that open by name (pyarrow) then keep the mode: nobody else ever sees the content.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


@contextlib.contextmanager
def no_value_logging() -> Iterator[None]:
    logger = logging.getLogger("pydicom")
    previous = logger.disabled
    logger.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.disabled = previous

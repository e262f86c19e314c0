"""Keep header values out of logs: pydicom's own warnings quote values.

pydicom reports invalid values with ``warn_and_log`` (a ``UserWarning`` plus a record on the
``pydicom`` logger) that contains the value itself, e.g. a name or a UID. Worker functions run
inside :func:`no_value_logging`, which silences both for the duration of the call and restores
them afterwards (workers run one task per thread; nothing leaks into other calls).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

__all__ = ["no_value_logging"]


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

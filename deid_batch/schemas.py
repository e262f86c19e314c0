"""Typed Arrow schemas: how the pipeline stages talk to each other.

* :data:`IDENTIFIERS` - one row per readable input file (``get_identifiers`` / ``scan``).
* :data:`SCAN_ERRORS` - one row per input file that could not be read during a scan.
* :data:`MANIFEST` - one row per input file of an ``apply`` run (the accounting of every file).

Status and reason codes are closed sets (:class:`Status`, :class:`Reason`); their string values are
what is stored in the tables.
"""

from __future__ import annotations

import enum

import pyarrow as pa

__all__ = ["FIELD", "IDENTIFIERS", "MANIFEST", "SCAN_ERRORS", "Reason", "Status"]


class Status(str, enum.Enum):
    WRITTEN = "written"  # a de-identified output was written by this run
    EXISTS = "exists"  # the output already existed and overwrite was off: not written
    FAILED = "failed"  # the file could not be processed; see ``reason``
    SKIPPED = "skipped"  # not a file we process (DICOMDIR, non-regular file); see ``reason``


class Reason(str, enum.Enum):
    UNREADABLE = "unreadable"  # permission denied, I/O error
    NOT_DICOM = "not-dicom"  # no DICOM structure found
    TRUNCATED = "truncated"  # file ends inside the header or the pixel data
    EMPTY = "empty"  # zero-byte file
    DEID_ERROR = "deid-error"  # the recipe could not be applied to this dataset
    WRITE_ERROR = "write-error"  # the de-identified dataset could not be written
    DICOMDIR = "dicomdir"  # a DICOMDIR media directory, not an instance (skipped)
    NOT_REGULAR = "not-regular"  # FIFO, socket, device, broken or looping symlink (skipped)
    WORKER_LOST = "worker-lost"  # the worker died repeatedly on this partition


#: One flattened header element: ``path`` is readable (``RequestAttributesSequence[0].AccessionNumber``,
#: private elements as ``(0029,1010)``), ``tag`` is ``(GGGG,EEEE)``, ``value`` the text form.
FIELD = pa.struct(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("tag", pa.string(), nullable=False),
        pa.field("vr", pa.string(), nullable=False),
        pa.field("value", pa.string()),
    ]
)

IDENTIFIERS = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("entity_id", pa.string()),
        pa.field("item_id", pa.string()),
        pa.field("fields", pa.list_(FIELD)),
    ]
)

SCAN_ERRORS = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]
)

MANIFEST = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("output", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("warnings", pa.list_(pa.string())),
        pa.field("partition", pa.int32(), nullable=False),
        # how the output was encoded: "bytes" (input bytes copied, changed elements re-encoded),
        # "pydicom" (the whole dataset converted and encoded), null when nothing was encoded
        pa.field("writer", pa.string()),
    ]
)

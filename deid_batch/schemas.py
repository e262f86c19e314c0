"""Typed Arrow schemas: how the pipeline stages talk to each other.

* :data:`IDENTIFIERS` - one row per readable input file (``get_identifiers`` / ``scan``).
* :data:`SCAN_ERRORS` - one row per input file that could not be read during a scan.
* :data:`MANIFEST` - one row per input file of an ``apply`` run (the accounting of every file).
* :data:`DETECTIONS` - one row per input file of a ``detect`` run (the %filter verdicts).

Status and reason codes are closed sets (:class:`Status`, :class:`Reason`); their string values are
what is stored in the tables.
"""

from __future__ import annotations

import enum

import pyarrow as pa

__all__ = ["DETECTIONS", "FIELD", "IDENTIFIERS", "MANIFEST", "QUERY_COLUMNS", "SCAN_ERRORS", "Reason",
           "Status"]


class Status(str, enum.Enum):
    WRITTEN = "written"  # a de-identified output was written by this run
    EXISTS = "exists"  # the output already existed and overwrite was off: not written
    FAILED = "failed"  # the file could not be processed; see ``reason``
    SKIPPED = "skipped"  # not processed (DICOMDIR, non-regular file, no pixel data); see ``reason``


class Reason(str, enum.Enum):
    UNREADABLE = "unreadable"  # permission denied, I/O error
    NOT_DICOM = "not-dicom"  # no DICOM structure found
    TRUNCATED = "truncated"  # the bytes prove a cut: file ends inside an element, the meta or the pixels
    NO_PIXEL_DATA = "no-pixel-data"  # image storage SOP class without pixel data (skipped unless opted in)
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

#: Top-level elements copied into columns of their own in the identifiers table (named by keyword),
#: so that duckdb/pandas/polars can group and join on them without unnesting ``fields``.
QUERY_COLUMNS: tuple[str, ...] = (
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
    "StudyInstanceUID", "StudyDate", "StudyDescription", "SeriesInstanceUID", "SeriesNumber",
    "SeriesDescription", "Modality", "SOPClassUID", "SOPInstanceUID", "InstitutionName",
)

IDENTIFIERS = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("entity_id", pa.string()),
        pa.field("item_id", pa.string()),
        *(pa.field(name, pa.string()) for name in QUERY_COLUMNS),
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
        # True/False: the file had a row in the variable mapping or not; null: the run had no mapping
        pa.field("mapped", pa.bool_()),
        # the output's SOPInstanceUID (null when not written or absent): outputs that share one
        # are reported at the end of the run (a recipe such as deid's docs example can collide)
        pa.field("sop_instance_uid", pa.string()),
        # how the output was encoded: "bytes" (input bytes copied, changed elements re-encoded),
        # "pydicom" (the whole dataset converted and encoded), null when nothing was encoded
        pa.field("writer", pa.string()),
    ]
)

#: One rectangle of every frame: ``[x0, y0, x1, y1]`` (columns x0:x1, rows y0:y1, end-exclusive).
REGION = pa.list_(pa.int32())

#: One %filter verdict per input file (``detect``). ``flagged`` is deid's ``has_burned_pixels``
#: (null for a file that cannot be read, see ``reason``); ``group``/``label`` are the first LABEL
#: that flagged it; ``hits`` every one, in recipe order; ``regions`` the rectangles cleaning
#: blanks and ``keep_regions`` the ones it restores (applied in recipe order); ``needs_review``:
#: flagged, no whitelist hit and no LABEL with a region (``apply --clean-pixels`` skips the file).
DETECTIONS = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("flagged", pa.bool_()),
        pa.field("group", pa.string()),
        pa.field("label", pa.string()),
        pa.field("regions", pa.list_(REGION)),
        pa.field("keep_regions", pa.list_(REGION)),
        pa.field("needs_review", pa.bool_()),
        pa.field("hits", pa.list_(pa.struct([pa.field("group", pa.string()), pa.field("label", pa.string())]))),
        pa.field("reason", pa.string()),
    ]
)

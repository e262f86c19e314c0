"""Detect stage (workers): evaluate the recipe's ``%filter`` sections on each file's header.

Takes a partition of input paths and a frozen :class:`DetectConfig`; returns one record batch in
:data:`~deid_batch.schemas.DETECTIONS`, one row per input, in input order: whether deid's
``has_burned_pixels`` flags the file, the first LABEL that did (and every one), the regions
cleaning would blank, or the reason the file cannot be read. Headers only: pixels are not read
unless a criterion reads them. No image is written.

Pure and picklable: no dask, no state between calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pydicom.dataset import Dataset

from deid_batch.dicom import reading
from deid_batch.errors import DatasetError
from deid_batch.hygiene import no_value_logging
from deid_batch.recipe.filters import Detection, Filters, detect
from deid_batch.schemas import DETECTIONS, Reason

__all__ = ["DetectConfig", "detect_file", "detect_partition", "detection_row", "frame_size"]


@dataclass(frozen=True)
class DetectConfig:
    """What a detect worker needs: the checked filters of the recipe."""

    filters: Filters


def frame_size(ds: Dataset) -> tuple[int, int]:
    """``(Rows, Columns)`` of the image, 0 where absent or unreadable."""
    out = []
    for name in ("Rows", "Columns"):
        try:
            out.append(int(ds.get(name) or 0))
        except (TypeError, ValueError):
            out.append(0)
    return out[0], out[1]


def detection_row(source: str, detection: Detection, ds: Dataset) -> dict[str, Any]:
    """The report row of one file."""
    rows, columns = frame_size(ds)
    regions = detection.regions(rows, columns)
    return {
        "source": source, "flagged": detection.flagged, "group": detection.group,
        "label": detection.label,
        "regions": [r.as_list() for r in regions if not r.keep],
        "keep_regions": [r.as_list() for r in regions if r.keep],
        "needs_review": detection.needs_review,
        "hits": [{"group": h.group, "label": h.label} for h in detection.hits],
        "reason": None,
    }


def _unread(source: str, reason: str) -> dict[str, Any]:
    return {"source": source, "flagged": None, "group": None, "label": None, "regions": None,
            "keep_regions": None, "needs_review": None, "hits": None, "reason": reason}


def detect_file(source: str, config: DetectConfig) -> dict[str, Any]:
    """The report row of one file (never raises for bad input)."""
    problem = reading.classify_entry(source)
    if problem is not None:
        _, reason, message = problem
        return _unread(source, f"{Reason(reason).value}: {message}")
    try:
        ds = reading.read_dataset(source, stop_before_pixels=not config.filters.reads_pixels())
    except DatasetError as exc:
        return _unread(source, f"{exc.reason}: {exc}")
    try:
        return detection_row(source, detect(ds, config.filters), ds)
    except RecursionError:
        return _unread(source, f"{Reason.NOT_DICOM.value}: sequences nested too deeply to read")
    except Exception as exc:  # noqa: BLE001 - one bad file never stops a run; no message (values)
        return _unread(source, f"{Reason.NOT_DICOM.value}: a header element read by a %filter "
                       f"criterion cannot be decoded ({type(exc).__name__})")


def detect_partition(paths: Sequence[str], config: DetectConfig, partition: int = 0) -> pa.RecordBatch:
    """Evaluate the filters on every file of ``paths``; one row each, in order."""
    with no_value_logging():
        rows = [detect_file(path, config) for path in paths]
    return pa.RecordBatch.from_pylist(rows, schema=DETECTIONS)

"""Pixel cleaning in the apply pass: the recipe's %filter verdict on the original header, then the
matching regions blanked in every frame, before the header recipe runs.

Takes one dataset (read in full by the apply worker) and a frozen :class:`PixelConfig`; returns a
:class:`PixelOutcome`: either a manifest verdict that stops the file (``skipped`` when a filter
flags it without giving a region, ``failed`` when its pixel data cannot be cleaned) or the
warnings to record for a file that goes on to the header recipe. A file no filter flags is not
touched (no pixel work at all).

Pure and picklable: no dask, no state between calls.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pydicom.dataset import Dataset

from deid_batch.dicom.pixels import REASON, Rect, blank_regions
from deid_batch.errors import DatasetError
from deid_batch.recipe.filters import Filters, detect
from deid_batch.schemas import Status
from deid_batch.stages.detect import frame_size

__all__ = ["FlaggedPolicy", "PixelConfig", "PixelOutcome", "clean_before_recipe"]


class FlaggedPolicy(str, enum.Enum):
    """What apply does with a file a filter flags without a region (``--flagged``)."""

    SKIP = "skip"  # not written: manifest ``skipped``, ``burned-in: needs review (LABEL)``
    WRITE = "write"  # written (header recipe applied, pixels as they are), with a warning


@dataclass(frozen=True)
class PixelConfig:
    """``apply --clean-pixels``: the recipe's checked filters and what to do with flagged files."""

    filters: Filters
    flagged: FlaggedPolicy = FlaggedPolicy.SKIP
    #: decode compressed pixel data to clean it (written uncompressed; never re-compressed lossily)
    allow_decode: bool = False


@dataclass(frozen=True)
class PixelOutcome:
    stop: tuple[Status, str] | None = None
    warnings: tuple[str, ...] = ()


def clean_before_recipe(ds: Dataset, config: PixelConfig) -> PixelOutcome:
    """Detect on the original header of ``ds``; blank its regions in place or say why not."""
    try:
        detection = detect(ds, config.filters)
    except Exception as exc:  # noqa: BLE001 - one bad file never stops a run; no message (values)
        return PixelOutcome((Status.FAILED, f"{REASON}: a header element read by a %filter criterion "
                             f"cannot be decoded ({type(exc).__name__}); the file was not written"))
    if not detection.flagged:
        return PixelOutcome()
    warnings: list[str] = []
    if detection.needs_review:
        message = f"{REASON}: needs review ({detection.review_label})"
        if config.flagged is FlaggedPolicy.SKIP:
            return PixelOutcome((Status.SKIPPED, message))
        warnings.append(f"{message}; written because of --flagged write")
    rows, columns = frame_size(ds)
    regions = detection.regions(rows, columns)
    if not any(not r.keep for r in regions):
        return PixelOutcome(warnings=tuple(warnings))
    rects: list[Rect] = [(r.x0, r.y0, r.x1, r.y1, r.keep) for r in regions]
    try:
        frames = blank_regions(ds, rects, allow_decode=config.allow_decode)
    except DatasetError as exc:
        return PixelOutcome((Status.FAILED, f"{exc.reason}: {exc}"), tuple(warnings))
    labels = ", ".join(dict.fromkeys(h.label for h in detection.hits if h.coordinates))
    blanked = sum(1 for r in regions if not r.keep)
    warnings.append(f"{REASON}: {blanked} region(s) blanked in {frames} frame(s) ({labels})")
    return PixelOutcome(warnings=tuple(warnings))

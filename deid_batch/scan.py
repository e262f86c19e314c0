"""Scan stage (workers): read headers and return identifiers as Arrow record batches.

Takes a partition of input paths and a frozen :class:`ScanConfig`; returns two record batches,
one row per readable file in :data:`~deid_batch.schemas.IDENTIFIERS` and one row per unreadable
file in :data:`~deid_batch.schemas.SCAN_ERRORS`. Headers only: files are parsed with
``stop_before_pixels`` and bulk data (the config's skip list) is left out. Nested sequence
elements are flattened under readable paths such as ``RequestAttributesSequence[0].AccessionNumber``;
private elements are named by tag, ``(0029,1010)``.

Pure and picklable: no dask, no state between calls.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from deid_batch import reading
from deid_batch.errors import DatasetError
from deid_batch.hygiene import no_value_logging
from deid_batch.schemas import IDENTIFIERS, SCAN_ERRORS, Reason, Status

__all__ = ["DEFAULT_SCAN_SKIP", "ScanConfig", "flatten", "scan_partition"]

#: deid's config.json ``get.skip``: bulk data and file-meta plumbing are not identifiers.
DEFAULT_SCAN_SKIP: tuple[str, ...] = (
    "PixelData",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "VOILUTSequence",
    "FileMetaInformationGroupLength",
    "FileMetaInformationVersion",
    "TransferSyntaxUID",
    "ImplementationClassUID",
)

_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})


@dataclass(frozen=True)
class ScanConfig:
    """What a scan worker needs: which fields identify entity and item, what to skip."""

    entity_id: str = "PatientID"
    item_id: str = "SOPInstanceUID"
    skip: tuple[str, ...] = DEFAULT_SCAN_SKIP
    expand_sequences: bool = True
    extra: tuple[str, ...] = field(default=())


def _text(elem: DataElement) -> str | None:
    """Text form of an element value; ``None`` for binary data that is not text."""
    value = elem.value
    if value is None:
        return None
    if elem.VR in _BINARY_VRS or elem.VR == "UN" or isinstance(value, (bytes, bytearray)):
        if not isinstance(value, (bytes, bytearray)):
            return None
        raw = bytes(value).rstrip(b"\x00 ")
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            return None
        return text if text.isprintable() and text else None
    if elem.VM > 1 or isinstance(value, (list, tuple)):
        return "\\".join(str(v) for v in value)
    return str(value)


_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM",
                       "UC", "UI", "UR", "UT"})


def _raw_text(raw: RawDataElement, vr: str) -> str | None:
    """Fast text of a raw (unconverted) text element; ``...`` sentinel when it needs pydicom."""
    value = raw.value
    if not value:
        return ""
    try:
        text = value.decode("ascii")
    except (UnicodeDecodeError, AttributeError):
        return _NEEDS_PYDICOM  # type: ignore[return-value]
    text = text.rstrip("\x00 ") if vr == "UI" else text.strip(" \x00")
    return text


_NEEDS_PYDICOM = object()


def flatten(
    ds: Dataset, skip: Sequence[str] = DEFAULT_SCAN_SKIP, expand_sequences: bool = True
) -> Iterator[dict[str, str | None]]:
    """Yield ``{path, tag, vr, value}`` for every element of ``ds`` and its file meta.

    Plain ASCII text elements are decoded straight from their raw bytes (no pydicom conversion,
    which costs more than reading the file); everything else goes through pydicom.
    """
    skipset = frozenset(skip)
    names: dict[int, tuple[str, str]] = {}

    def info(tag: int) -> tuple[str, str]:
        found = names.get(tag)
        if found is None:
            tagstr = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
            keyword = "" if (tag >> 16) & 1 else (keyword_for_tag(tag) or "")
            found = names[tag] = (keyword, tagstr)
        return found

    def walk(dataset: Dataset, prefix: str) -> Iterator[dict[str, str | None]]:
        for elem in dataset.elements():
            tag = int(elem.tag)
            keyword, tagstr = info(tag)
            if keyword in skipset or tagstr in skipset:
                continue
            path = prefix + (keyword or tagstr)
            vr = elem.VR
            if vr is None and keyword:
                vr = dictionary_VR(tag)
            value: Any = _NEEDS_PYDICOM
            if isinstance(elem, RawDataElement) and vr in _TEXT_VRS:
                value = _raw_text(elem, vr)
            if value is _NEEDS_PYDICOM:
                converted = dataset[tag]
                vr = str(converted.VR)
                if vr == "SQ":
                    yield {"path": path, "tag": tagstr, "vr": "SQ", "value": None}
                    if expand_sequences:
                        for i, item in enumerate(converted.value or ()):
                            yield from walk(item, f"{path}[{i}].")
                    continue
                value = _text(converted)
            yield {"path": path, "tag": tagstr, "vr": str(vr), "value": value}

    yield from walk(ds, "")
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        yield from walk(meta, "")


def _id_value(ds: Dataset, keyword: str) -> str | None:
    elem = ds.get(keyword)
    if elem is None:
        return None
    text = _text(elem) if isinstance(elem, DataElement) else str(elem)
    return text or None


def scan_partition(paths: Sequence[str], config: ScanConfig, partition: int = 0
                   ) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """Read the headers of ``paths``; return (identifiers batch, errors batch)."""
    rows: dict[str, list[object]] = {"source": [], "entity_id": [], "item_id": [], "fields": []}
    errors: dict[str, list[object]] = {"source": [], "status": [], "reason": []}
    with no_value_logging():
        _scan_into(paths, config, rows, errors)
    return (
        pa.RecordBatch.from_pydict(rows, schema=IDENTIFIERS),
        pa.RecordBatch.from_pydict(errors, schema=SCAN_ERRORS),
    )


def _error(errors: dict[str, list[object]], path: str, reason: Reason, message: str) -> None:
    errors["source"].append(path)
    errors["status"].append(Status.FAILED.value)
    errors["reason"].append(f"{reason.value}: {message}")


def _scan_into(paths: Sequence[str], config: ScanConfig, rows: dict[str, list[object]],
               errors: dict[str, list[object]]) -> None:
    for path in paths:
        problem = reading.classify_entry(path)
        if problem is not None:
            status, reason, message = problem
            errors["source"].append(path)
            errors["status"].append(Status(status).value)
            errors["reason"].append(f"{reason.value}: {message}")
            continue
        try:
            ds = reading.read_dataset(path, stop_before_pixels=True)
        except DatasetError as exc:
            errors["source"].append(path)
            skipped = exc.reason == "dicomdir"
            errors["status"].append(Status.SKIPPED.value if skipped else Status.FAILED.value)
            errors["reason"].append(f"{exc.reason}: {exc}")
            continue
        try:
            fields = list(flatten(ds, config.skip, config.expand_sequences))
            entity, item = _id_value(ds, config.entity_id), _id_value(ds, config.item_id)
        except RecursionError:
            _error(errors, path, Reason.NOT_DICOM, "sequences nested too deeply to read")
            continue
        except Exception as exc:  # noqa: BLE001 - one bad file never stops a scan; no message (values)
            _error(errors, path, Reason.NOT_DICOM,
                   f"a header element cannot be decoded ({type(exc).__name__})")
            continue
        rows["source"].append(path)
        rows["entity_id"].append(entity)
        rows["item_id"].append(item)
        rows["fields"].append(fields)

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

import pyarrow as pa
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from deid_batch import reading
from deid_batch.errors import DatasetError
from deid_batch.hygiene import no_value_logging
from deid_batch.schemas import IDENTIFIERS, SCAN_ERRORS, Status

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


def _name(elem: DataElement) -> str:
    return elem.keyword or str(elem.tag)


def flatten(
    ds: Dataset, skip: Sequence[str] = DEFAULT_SCAN_SKIP, expand_sequences: bool = True
) -> Iterator[dict[str, str | None]]:
    """Yield ``{path, tag, vr, value}`` for every element of ``ds`` and its file meta."""
    skipset = frozenset(skip)

    def walk(dataset: Dataset, prefix: str) -> Iterator[dict[str, str | None]]:
        for elem in dataset:
            if elem.keyword in skipset or str(elem.tag) in skipset:
                continue
            path = prefix + _name(elem)
            if elem.VR == "SQ":
                yield {"path": path, "tag": str(elem.tag), "vr": "SQ", "value": None}
                if expand_sequences:
                    for i, item in enumerate(elem.value or ()):
                        yield from walk(item, f"{path}[{i}].")
                continue
            yield {"path": path, "tag": str(elem.tag), "vr": str(elem.VR), "value": _text(elem)}

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
        rows["source"].append(path)
        rows["entity_id"].append(_id_value(ds, config.entity_id))
        rows["item_id"].append(_id_value(ds, config.item_id))
        rows["fields"].append(list(flatten(ds, config.skip, config.expand_sequences)))

"""Scan stage (workers): read headers and return identifiers as Arrow record batches.

Takes a partition of input paths and a frozen :class:`ScanConfig`; returns two record batches,
one row per readable file in :data:`~deid_batch.schemas.IDENTIFIERS` and one row per unreadable
file in :data:`~deid_batch.schemas.SCAN_ERRORS`. A file apply can write (with
``write_no_pixel_data`` for an image storage object without pixel data: its headers are readable)
has an identifiers row; every other file has an error row with the reason apply gives. Headers
only: files are parsed with ``stop_before_pixels`` and bulk data (the config's skip list) is left out. Nested sequence
elements are flattened under readable paths such as ``RequestAttributesSequence[0].AccessionNumber``;
private elements are named by tag, ``(0029,1010)``.

Pure and picklable: no dask, no state between calls.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from deid_batch.dicom import reading
from deid_batch.errors import DatasetError
from deid_batch.hygiene import no_value_logging
from deid_batch.recipe.engine import DEFAULT_SKIP
from deid_batch.schemas import FIELD, IDENTIFIERS, QUERY_COLUMNS, SCAN_ERRORS, Reason, Status
from deid_batch.stages import storage

__all__ = ["DEFAULT_SCAN_SKIP", "ScanConfig", "flatten", "scan_partition"]

#: deid's config.json ``get.skip``: bulk data and file-meta plumbing are not identifiers.
DEFAULT_SCAN_SKIP: tuple[str, ...] = DEFAULT_SKIP

_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_QUERY = frozenset(QUERY_COLUMNS)


@dataclass(frozen=True)
class ScanConfig:
    """What a scan worker needs: which fields identify entity and item, what to skip."""

    entity_id: str = "PatientID"
    item_id: str = "SOPInstanceUID"
    skip: tuple[str, ...] = DEFAULT_SCAN_SKIP
    expand_sequences: bool = True
    #: fsspec options for URL inputs (may hold secrets: not in the repr)
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)


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
    text = text.rstrip("\x00 ")
    if not text.isprintable() or text[:1].isspace() or " \\" in text or "\\ " in text:
        return _NEEDS_PYDICOM  # leading or inner padding: pydicom's per-VR rules decide
    return text


_NEEDS_PYDICOM = object()

_NUMBER_FORMATS = {"US": "H", "UL": "I", "SS": "h", "SL": "i", "FL": "f", "FD": "d"}


def _raw_number(raw: RawDataElement, vr: str) -> Any:
    """Text of a raw binary number element, as ``str()`` of pydicom's values would give."""
    value = raw.value
    code = _NUMBER_FORMATS[vr]
    size = struct.calcsize(code)
    if not value or len(value) % size:
        return _NEEDS_PYDICOM
    count = len(value) // size
    numbers = struct.unpack(("<" if raw.is_little_endian else ">") + code * count, value)
    return "\\".join(str(n) for n in numbers) if count > 1 else str(numbers[0])


_NAMES: dict[int, tuple[str, str]] = {}  # tag -> (keyword, "(GGGG,EEEE)"): bounded by the dictionary


def _info(tag: int) -> tuple[str, str]:
    found = _NAMES.get(tag)
    if found is None:
        tagstr = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        keyword = "" if (tag >> 16) & 1 else (keyword_for_tag(tag) or "")
        found = (keyword, tagstr)
        if len(_NAMES) < 100_000:
            _NAMES[tag] = found
    return found


class _Columns:
    """Flattened fields of many files as four flat columns plus list offsets (no per-field dict)."""

    def __init__(self) -> None:
        self.path: list[str] = []
        self.tag: list[str] = []
        self.vr: list[str] = []
        self.value: list[str | None] = []
        self.offsets: list[int] = [0]

    def rollback(self) -> None:
        """Forget the fields appended since the last finished file."""
        n = self.offsets[-1]
        del self.path[n:], self.tag[n:], self.vr[n:], self.value[n:]

    def finish(self) -> None:
        self.offsets.append(len(self.path))

    def top_level(self, names: frozenset[str]) -> dict[str, str | None]:
        """Values of the last finished file's top-level elements named in ``names``."""
        start, end = self.offsets[-2], self.offsets[-1]
        return {p: v for p, v in zip(self.path[start:end], self.value[start:end]) if p in names}

    def add(self, ds: Dataset, skip: frozenset[str], expand_sequences: bool) -> None:
        self._walk(ds, "", skip, expand_sequences)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            self._walk(meta, "", skip, expand_sequences)

    def _walk(self, dataset: Dataset, prefix: str, skip: frozenset[str], expand: bool) -> None:
        path_, tag_, vr_, value_ = self.path, self.tag, self.vr, self.value
        for elem in dataset.elements():
            tag = int(elem.tag)
            keyword, tagstr = _info(tag)
            if keyword in skip or tagstr in skip:
                continue
            path = prefix + (keyword or tagstr)
            vr = elem.VR
            if vr is None and keyword:
                vr = dictionary_VR(tag)
            value: Any = _NEEDS_PYDICOM
            if isinstance(elem, RawDataElement):
                if vr in _TEXT_VRS:
                    value = _raw_text(elem, vr)
                elif vr in _NUMBER_FORMATS:
                    value = _raw_number(elem, vr)
            if value is _NEEDS_PYDICOM:
                converted = dataset[tag]
                vr = str(converted.VR)
                if vr == "SQ":
                    path_.append(path), tag_.append(tagstr), vr_.append("SQ"), value_.append(None)
                    if expand:
                        for i, item in enumerate(converted.value or ()):
                            self._walk(item, f"{path}[{i}].", skip, expand)
                    continue
                value = _text(converted)
            path_.append(path), tag_.append(tagstr), vr_.append(str(vr)), value_.append(value)

    def to_array(self) -> pa.Array:
        struct = pa.StructArray.from_arrays(
            [pa.array(self.path, pa.string()), pa.array(self.tag, pa.string()),
             pa.array(self.vr, pa.string()), pa.array(self.value, pa.string())],
            fields=list(FIELD))
        return pa.ListArray.from_arrays(pa.array(self.offsets, pa.int32()), struct,
                                        type=IDENTIFIERS.field("fields").type)


def flatten(
    ds: Dataset, skip: Sequence[str] = DEFAULT_SCAN_SKIP, expand_sequences: bool = True
) -> Iterator[dict[str, str | None]]:
    """Yield ``{path, tag, vr, value}`` for every element of ``ds`` and its file meta.

    Plain ASCII text elements are decoded straight from their raw bytes (no pydicom conversion,
    which costs more than reading the file); everything else goes through pydicom.
    """
    cols = _Columns()
    cols.add(ds, frozenset(skip), expand_sequences)
    for row in zip(cols.path, cols.tag, cols.vr, cols.value):
        yield dict(zip(("path", "tag", "vr", "value"), row))


def _id_value(ds: Dataset, keyword: str) -> str | None:
    elem = ds.get(keyword)
    if elem is None:
        return None
    text = _text(elem) if isinstance(elem, DataElement) else str(elem)
    return text or None


def scan_partition(paths: Sequence[str], config: ScanConfig, partition: int = 0
                   ) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """Read the headers of ``paths``; return (identifiers batch, errors batch)."""
    rows: dict[str, list[object]] = {name: [] for name in ("source", "entity_id", "item_id", *QUERY_COLUMNS)}
    errors: dict[str, list[object]] = {"source": [], "status": [], "reason": []}
    cols = _Columns()
    with no_value_logging():
        _scan_into(paths, config, rows, errors, cols)
    arrays = [pa.array(rows[name], pa.string()) for name in ("source", "entity_id", "item_id", *QUERY_COLUMNS)]
    return (
        pa.RecordBatch.from_arrays([*arrays, cols.to_array()], schema=IDENTIFIERS),
        pa.RecordBatch.from_pydict(errors, schema=SCAN_ERRORS),
    )


def _error(errors: dict[str, list[object]], path: str, reason: Reason, message: str) -> None:
    errors["source"].append(path)
    errors["status"].append(Status.FAILED.value)
    errors["reason"].append(f"{reason.value}: {message}")


def _scan_into(paths: Sequence[str], config: ScanConfig, rows: dict[str, list[object]],
               errors: dict[str, list[object]], cols: _Columns) -> None:
    skip = frozenset(config.skip)
    for path in paths:
        problem, data = storage.load_input(path, config.storage_options)
        if problem is not None:
            status, reason, message = problem
            errors["source"].append(path)
            errors["status"].append(Status(status).value)
            errors["reason"].append(f"{reason.value}: {message}")
            continue
        try:
            ds = reading.read_dataset(path, stop_before_pixels=True, allow_no_pixel_data=True, data=data)
        except DatasetError as exc:
            errors["source"].append(path)
            errors["status"].append(reading.status_for(exc.reason).value)
            errors["reason"].append(f"{exc.reason}: {exc}")
            continue
        try:
            cols.add(ds, skip, config.expand_sequences)
            entity, item = _id_value(ds, config.entity_id), _id_value(ds, config.item_id)
        except RecursionError:
            cols.rollback()
            _error(errors, path, Reason.NOT_DICOM, "sequences nested too deeply to read")
            continue
        except Exception as exc:  # noqa: BLE001 - one bad file never stops a scan; no message (values)
            cols.rollback()
            _error(errors, path, Reason.NOT_DICOM,
                   f"a header element cannot be decoded ({type(exc).__name__})")
            continue
        cols.finish()
        rows["source"].append(path)
        rows["entity_id"].append(entity)
        rows["item_id"].append(item)
        top = cols.top_level(_QUERY)
        for name in QUERY_COLUMNS:
            rows[name].append(top.get(name))

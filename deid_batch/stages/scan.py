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

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from deid_batch.dicom import reading, values
from deid_batch.dicom.raw import Unsupported
from deid_batch.dicom.values import (
    NEEDS_PYDICOM,
    NUMBER_FORMATS,
    TEXT_VRS,
    element_text,
    number_text,
    tag_info,
    text_of,
)
from deid_batch.errors import DatasetError
from deid_batch.hygiene import no_value_logging
from deid_batch.recipe.engine import DEFAULT_SKIP
from deid_batch.schemas import FIELD, IDENTIFIERS, QUERY_COLUMNS, SCAN_ERRORS, Reason, Status
from deid_batch.stages import storage

__all__ = ["DEFAULT_SCAN_SKIP", "ScanConfig", "flatten", "scan_partition"]

#: deid's config.json ``get.skip``: bulk data and file-meta plumbing are not identifiers.
DEFAULT_SCAN_SKIP: tuple[str, ...] = DEFAULT_SKIP

@dataclass(frozen=True)
class ScanConfig:
    """What a scan worker needs: which fields identify entity and item, what to skip."""

    entity_id: str = "PatientID"
    item_id: str = "SOPInstanceUID"
    skip: tuple[str, ...] = DEFAULT_SCAN_SKIP
    expand_sequences: bool = True
    #: fsspec options for URL inputs (may hold secrets: not in the repr)
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: read headers with the raw walker where it proves it reads them as pydicom does (False: the
    #: pydicom path for every file, the reference the raw path is tested against)
    raw: bool = True


_QUERY = frozenset(QUERY_COLUMNS)
_text = element_text
_info = tag_info
_NEEDS_PYDICOM = NEEDS_PYDICOM
_TEXT_VRS = TEXT_VRS
_NUMBER_FORMATS = NUMBER_FORMATS


def _raw_text(raw: RawDataElement, vr: str) -> str | None:
    """Fast text of a raw (unconverted) text element; ``NEEDS_PYDICOM`` when pydicom decides."""
    value = raw.value
    return text_of(value) if isinstance(value, bytes) else _NEEDS_PYDICOM


def _raw_number(raw: RawDataElement, vr: str) -> Any:
    """Text of a raw binary number element, as ``str()`` of pydicom's values would give."""
    value = raw.value
    return number_text(value, vr, raw.is_little_endian) if isinstance(value, bytes) else _NEEDS_PYDICOM


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

    @property
    def lists(self) -> values.Rows:
        return self.path, self.tag, self.vr, self.value

    def finish(self) -> None:
        self.offsets.append(len(self.path))

    def pending(self, names: frozenset[str]) -> dict[str, tuple[str, str | None]]:
        """``(vr, value)`` of the file being added: its top-level elements named in ``names``."""
        start, end = self.offsets[-1], len(self.path)
        return {p: (vr, v) for p, vr, v in zip(self.path[start:end], self.vr[start:end],
                                               self.value[start:end]) if p in names}

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
                    values.append_row(self.lists, path, tagstr, "SQ", None)
                    if expand:
                        for i, item in enumerate(converted.value or ()):
                            self._walk(item, f"{path}[{i}].", skip, expand)
                    continue
                value = _text(converted)
            path_.append(path)
            tag_.append(tagstr)
            vr_.append(str(vr))
            value_.append(value)

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


#: identifiers batch metadata: how many files each path read (the raw share of a scan)
RAW_COUNT, PYDICOM_COUNT = b"deid_batch.scan.raw", b"deid_batch.scan.pydicom"


def scan_partition(paths: Sequence[str], config: ScanConfig, partition: int = 0
                   ) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """Read the headers of ``paths``; return (identifiers batch, errors batch).

    The identifiers batch's schema metadata counts the files read by the raw walker
    (:data:`RAW_COUNT`) and by pydicom (:data:`PYDICOM_COUNT`, errors included).
    """
    rows: dict[str, list[object]] = {name: [] for name in ("source", "entity_id", "item_id", *QUERY_COLUMNS)}
    errors: dict[str, list[object]] = {"source": [], "status": [], "reason": []}
    cols = _Columns()
    with no_value_logging():
        n_raw = _scan_into(paths, config, rows, errors, cols)
    arrays = [pa.array(rows[name], pa.string()) for name in ("source", "entity_id", "item_id", *QUERY_COLUMNS)]
    counts = {RAW_COUNT: str(n_raw).encode(), PYDICOM_COUNT: str(len(paths) - n_raw).encode()}
    return (
        pa.RecordBatch.from_arrays([*arrays, cols.to_array()], schema=IDENTIFIERS.with_metadata(counts)),
        pa.RecordBatch.from_pydict(errors, schema=SCAN_ERRORS),
    )


def path_counts(batches: Sequence[pa.RecordBatch | pa.Table]) -> tuple[int, int]:
    """(raw, pydicom) file counts summed over scan batches or tables (0 where they are not given)."""
    n_raw = n_pydicom = 0
    for batch in batches:
        meta = batch.schema.metadata or {}
        n_raw += int(meta.get(RAW_COUNT, b"0"))
        n_pydicom += int(meta.get(PYDICOM_COUNT, b"0"))
    return n_raw, n_pydicom


def _error(errors: dict[str, list[object]], path: str, reason: Reason, message: str) -> None:
    errors["source"].append(path)
    errors["status"].append(Status.FAILED.value)
    errors["reason"].append(f"{reason.value}: {message}")


def _raw_possible(config: ScanConfig) -> bool:
    """The raw path gives the ids as ``ds.get(keyword)`` does only for data set keywords it lists."""
    if not config.raw:
        return False
    for keyword in (config.entity_id, config.item_id):
        tag = tag_for_keyword(keyword)
        if tag is None or tag >> 16 == 2 or keyword in config.skip or tag_info(tag)[1] in config.skip:
            return False
    return True


def _scan_raw(path: str, data: bytes | None, size: int, config: ScanConfig, skip: frozenset[str],
              cols: _Columns) -> tuple[str | None, str | None, dict[str, str | None]] | bytes | None:
    """(entity, item, query columns) of a file read by the raw walker; else the whole file's
    bytes if they were read (or None) after rolling back: the pydicom path decides (and says
    what is wrong with the file). ``data`` is the file's first bytes of ``size`` (None: unread)."""
    buf = data
    try:
        if buf is None:
            buf, size = values.read_header(path, None)
        values.flatten_file(path, buf, size, cols.lists, skip, config.expand_sequences, cols.rollback)
        found = cols.pending(_QUERY | {config.entity_id, config.item_id})  # one pass for both
        entity, item = found.get(config.entity_id), found.get(config.item_id)
        if entity and entity[0] == "SQ" or item and item[0] == "SQ":
            raise Unsupported("an id element that is a sequence")
    except Exception:  # noqa: BLE001 - any doubt: the pydicom path is the reference
        cols.rollback()
        return buf if buf is not None and len(buf) == size else None
    cols.finish()
    top = {name: found[name][1] for name in _QUERY if name in found}
    return (entity[1] or None if entity else None), (item[1] or None if item else None), top


def _scan_into(paths: Sequence[str], config: ScanConfig, rows: dict[str, list[object]],
               errors: dict[str, list[object]], cols: _Columns) -> int:
    skip = frozenset(config.skip)
    use_raw = _raw_possible(config)
    n_raw = 0
    for path in paths:
        if use_raw and not storage.is_url(path):  # one open: the entry's checks and the header
            problem, data, size = reading.read_entry(path, values.HEADER_BYTES)
        else:
            problem, data = storage.load_input(path, config.storage_options)
            size = -1 if data is None else len(data)
        if problem is not None:
            status, reason, message = problem
            errors["source"].append(path)
            errors["status"].append(Status(status).value)
            errors["reason"].append(f"{reason.value}: {message}")
            continue
        if use_raw:
            got = _scan_raw(path, data, size, config, skip, cols)
            if isinstance(got, tuple):
                n_raw += 1
                _add_row(rows, path, *got)
                continue
            data = got  # the whole file if it was read, else pydicom reads the path
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
        _add_row(rows, path, entity, item, cols.top_level(_QUERY))
    return n_raw


def _add_row(rows: dict[str, list[object]], path: str, entity: str | None, item: str | None,
             top: dict[str, str | None]) -> None:
    rows["source"].append(path)
    rows["entity_id"].append(entity)
    rows["item_id"].append(item)
    for name in QUERY_COLUMNS:
        rows[name].append(top.get(name))

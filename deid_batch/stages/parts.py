"""Table parts (workers write, the client consolidates): a partition's rows as one Parquet file.

A worker that scanned a partition writes its identifiers to ``FOLDER/part-NNNNNN.parquet`` itself
(atomically, named by partition, so a retried task replaces the part of a lost attempt and each
file is there exactly once) and sends back only a count and its (few) error rows. The client then
streams the parts, in partition order, into the one identifiers file (:func:`consolidate`): it
holds one partition's rows at a time, never the archive's.

Takes a partition of paths and a frozen :class:`ScanParts`; returns ``(rows written, errors)``.
Pure and picklable: no dask, no state between calls.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from deid_batch.hygiene import private_file, private_folder
from deid_batch.schemas import IDENTIFIERS, SCAN_ERRORS
from deid_batch.stages import storage
from deid_batch.stages.scan import PYDICOM_COUNT, RAW_COUNT, ScanConfig, path_counts, scan_partition

__all__ = ["ScanParts", "consolidate", "parts_folder", "prepare_folder", "remove_parts", "scan_to_part", "write_part"]


def parts_folder(target: str) -> str:
    """The folder of ``target``'s parts while they are written: ``TARGET.parts`` beside it."""
    return target.rstrip("/") + ".parts"


def part_name(partition: int) -> str:
    return f"part-{partition:06d}.parquet"


def write_part(folder: str, partition: int, batch: pa.RecordBatch | pa.Table,
               options: Mapping[str, Any] | None = None) -> None:
    """Write ``batch`` (or a table) as ``folder/part-N.parquet``: one put on object storage, else a private
    temporary file of this writer renamed over the part."""
    target = storage.join(folder, part_name(partition))
    if storage.is_url(folder):
        sink = pa.BufferOutputStream()
        pq.write_table(_table(batch), sink)
        storage.write_bytes(target, sink.getvalue().to_pybytes(), options)
        return
    tmp = os.path.join(folder, f"_{part_name(partition)}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    private_file(tmp)
    try:
        pq.write_table(_table(batch), tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _table(rows: pa.RecordBatch | pa.Table) -> pa.Table:
    return rows if isinstance(rows, pa.Table) else pa.Table.from_batches([rows])


@dataclass(frozen=True)
class ScanParts:
    """A scan whose workers write their identifiers to ``folder`` (local or URL)."""

    scan: ScanConfig
    folder: str
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)


#: files read per slice of a partition: a partition of 500 files built its identifiers as Python
#: objects all at once (a worker's peak RSS grew 11% from 50- to 500-file partitions); slices of
#: this many are turned into Arrow one after the other.
SCAN_SLICE = 50


def scan_to_part(paths: Sequence[str], config: ScanParts, partition: int) -> tuple[int, pa.RecordBatch]:
    """:func:`~deid_batch.stages.scan.scan_partition`, its identifiers written as the partition's
    part; returns (identifier rows written, error rows carrying the raw/pydicom file counts of
    :func:`~deid_batch.stages.scan.path_counts` as schema metadata)."""
    pieces = [scan_partition(paths[start:start + SCAN_SLICE], config.scan, partition)
              for start in range(0, len(paths), SCAN_SLICE)] or [scan_partition([], config.scan, partition)]
    n_raw, n_pydicom = path_counts([ids for ids, _errors in pieces])
    counts = {RAW_COUNT: str(n_raw).encode(), PYDICOM_COUNT: str(n_pydicom).encode()}
    ids = pa.Table.from_batches([ids for ids, _errors in pieces], schema=IDENTIFIERS)
    errors = pa.Table.from_batches([e for _ids, e in pieces], schema=SCAN_ERRORS).combine_chunks()
    write_part(config.folder, partition, ids, config.storage_options)
    errors_batch = errors.to_batches()[0] if errors.num_rows else pa.RecordBatch.from_pylist([], schema=SCAN_ERRORS)
    return ids.num_rows, errors_batch.replace_schema_metadata(counts)


def prepare_folder(folder: str, options: Mapping[str, Any] | None = None) -> None:
    """An empty parts folder (a crashed run's parts are removed first)."""
    remove_parts(folder, options)
    if not storage.is_url(folder):
        private_folder(folder)


def remove_parts(folder: str, options: Mapping[str, Any] | None = None) -> None:
    """Remove the parts folder and everything in it (nothing when it does not exist)."""
    if storage.is_url(folder):
        fs, path = storage.filesystem(folder, options)
        if fs.exists(path):
            fs.rm(path, recursive=True)
        return
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)


def _read_part(folder: str, partition: int, options: Mapping[str, Any] | None) -> pa.Table | None:
    target = storage.join(folder, part_name(partition))
    if storage.is_url(folder):
        try:
            return pq.read_table(pa.BufferReader(storage.read_bytes(target, options)), schema=IDENTIFIERS)
        except FileNotFoundError:
            return None
    if not os.path.exists(target):
        return None
    return pq.read_table(target, schema=IDENTIFIERS)


def consolidate(folder: str, partitions: int, writer: pq.ParquetWriter,
                options: Mapping[str, Any] | None = None) -> int:
    """Append parts ``0 .. partitions-1`` (in order; a missing part has no rows) to ``writer``,
    one row group per part; return the number of rows."""
    rows = 0
    for i in range(partitions):
        table = _read_part(folder, i, options)
        if table is not None and table.num_rows:
            writer.write_table(table)
            rows += table.num_rows
    return rows


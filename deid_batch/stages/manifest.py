"""Manifest stage (client): record one row per input file, incrementally, and summarise.

The manifest is a folder (by default ``OUTDIR.manifest`` beside the output) holding a Parquet
dataset readable with ``pyarrow.dataset.dataset(folder)`` (the folder is created 0700 and its
files 0600: it is a linkage file): one ``part-NNNNNN.parquet`` file per
finished partition, written atomically by the worker that ran the partition (the client writes
only the parts of partitions whose workers were lost), so a crash loses at most the partitions in
flight, and the client receives counts (:class:`PartResult`), never rows. Whole-table questions
(:meth:`ManifestStore.shared_uids`) are answered by a pyarrow dataset scan of the columns needed.
Files whose names start with ``_`` are not part of the dataset (pyarrow ignores them):
``_run.json`` (the run fingerprint that ``--resume`` checks, with the recipe stack), ``_recipe.json``
(the effective recipe, base included, in deid's dict shape: ``load_recipe(dict, base=None)``),
``_key`` (the run key, mode 0600) and
``_identifiers.parquet`` (when ``apply`` gathered the identifiers itself), ``_mapping.parquet``
(the mapping, sorted by its entity key, that the workers join their partitions with) and
``_keys.parquet`` (identifier keys given as a table or read off the mapping's ``source`` column).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from deid_batch.errors import ConfigError, ResumeMismatchError
from deid_batch.hygiene import private_file
from deid_batch.schemas import MANIFEST, Status
from deid_batch.stages import storage

__all__ = ["ManifestStore", "PartResult", "Summary", "default_manifest_dir", "read_manifest"]

RUN_FILE = "_run.json"
RECIPE_FILE = "_recipe.json"
#: names the Parquet dataset of the folder does not read: its own files (``_*``) and the linkage
#: files of :mod:`deid_batch.stages.linkage` (``uid_mapping.csv``, ``patid_mapping.csv``)
DATASET_IGNORES = [".", "_", "uid_mapping.", "patid_mapping."]
#: fingerprint entries that describe a run without being settings: not compared by --resume
_NOT_SETTINGS = frozenset({"run_stamp"})
#: schema metadata key of a part's counts (see :meth:`ManifestStore.write_part`)
_COUNTS = "deid_batch.counts"

logger = logging.getLogger(__name__)


def default_manifest_dir(output_folder: str) -> str:
    return storage.normalise(output_folder).rstrip("/" if storage.is_url(output_folder) else os.sep) + ".manifest"


def read_manifest(path: str, storage_options: storage.StorageOptions | None = None) -> pa.Table:
    """Read a manifest folder (or one part file; local or a URL) into a table."""
    folder = storage.Folder(path, storage_options)
    if not folder.exists():
        raise ConfigError(f"manifest {path} does not exist")
    fs, where = folder.open_dataset_source()
    return pads.dataset(where, format="parquet", schema=MANIFEST, filesystem=fs,
                        ignore_prefixes=DATASET_IGNORES).to_table()


@dataclass
class Summary:
    """Counts of a run, by status and by failure reason code."""

    total: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    warnings: int = 0
    files_with_warnings: int = 0
    unmapped: int = 0
    unused_rows: int = 0
    not_in_ids: int = 0
    shared_uids: int = 0  # SOPInstanceUIDs that more than one output of the run ends with
    shared_uid_outputs: int = 0  # outputs that end with such a SOPInstanceUID
    by_writer: Counter[str] = field(default_factory=Counter)

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        self.total += batch.num_rows
        self.by_status.update(batch.column("status").to_pylist())
        for status, reason in zip(batch.column("status").to_pylist(), batch.column("reason").to_pylist()):
            if status in (Status.FAILED.value, Status.SKIPPED.value) and reason:
                self.by_reason[reason.split(":", 1)[0]] += 1
        per_file = [len(w or ()) for w in batch.column("warnings").to_pylist()]
        self.warnings += sum(per_file)
        self.files_with_warnings += sum(1 for n in per_file if n)
        if "writer" in batch.schema.names:
            self.by_writer.update(w for w in batch.column("writer").to_pylist() if w)

    def merge(self, other: Summary) -> None:
        """Add the counts of ``other`` (a partition's) to these."""
        self.total += other.total
        self.by_status.update(other.by_status)
        self.by_reason.update(other.by_reason)
        self.warnings += other.warnings
        self.files_with_warnings += other.files_with_warnings
        self.unmapped += other.unmapped
        self.unused_rows += other.unused_rows
        self.not_in_ids += other.not_in_ids
        self.by_writer.update(other.by_writer)

    @property
    def failed(self) -> int:
        return self.by_status.get(Status.FAILED.value, 0)

    def lines(self) -> list[str]:
        out = [f"files: {self.total}"]
        for status in Status:
            if self.by_status.get(status.value):
                out.append(f"  {status.value:<8} {self.by_status[status.value]}")
        for reason, n in sorted(self.by_reason.items()):
            out.append(f"    {reason:<14} {n}")
        if self.not_in_ids:
            out.append(f"  not in the identifiers table: {self.not_in_ids} files (no variables for them)")
        if self.unmapped:
            out.append(f"  no mapping row: {self.unmapped} files (var: lookups missing for these files)")
        if self.unused_rows:
            out.append(f"  mapping rows matching no file: {self.unused_rows}")
        if self.by_writer:
            direct = self.by_writer.get("raw", 0)  # recipe.direct: straight from the raw elements
            out.append(f"  encoded: {self.by_writer.get('bytes', 0) + direct} by the byte-level writer "
                       f"({direct} straight from the raw elements), "
                       f"{self.by_writer.get('pydicom', 0)} by pydicom (fallback)")
        if self.warnings:
            out.append(f"  warnings: {self.warnings} on {self.files_with_warnings} files "
                       "(see the manifest's warnings column)")
        if self.shared_uids:
            out.append(f"  same SOPInstanceUID: {self.shared_uid_outputs} outputs share {self.shared_uids} "
                       "UIDs (see the manifest's sop_instance_uid column; check the recipe's new UIDs)")
        return out


@dataclass
class PartResult:
    """What a worker sends back for a partition whose manifest part it wrote: counts, no rows.

    ``exists`` lists the outputs found already there (``exists`` status; logged by the client).
    """

    partition: int
    summary: Summary
    exists: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, partition: int, batch: pa.RecordBatch, unmapped: int = 0, not_in_ids: int = 0) -> PartResult:
        summary = Summary(unmapped=unmapped, not_in_ids=not_in_ids)
        summary.add(batch)
        exists = batch.filter(pc.equal(batch.column("status"), Status.EXISTS.value)).column("output").to_pylist()
        return cls(partition, summary, [o for o in exists if o])


class ManifestStore:
    """The manifest folder of one run."""

    def __init__(self, folder: str, storage_options: storage.StorageOptions | None = None) -> None:
        self.dir = storage.Folder(folder, storage_options)
        self.folder = self.dir.location
        #: the run's stamp: this run's own, or on --resume the interrupted run's
        self.stamp: int | None = None
        #: partitions already done (filled by the caller from :meth:`prepare`)
        self.done: set[int] = set()

    def check_resumable(self) -> None:
        """Refuse ``--resume`` (creating nothing) when the folder holds no earlier run."""
        if not self.dir.exists(RUN_FILE):
            raise ConfigError(f"--resume: {self.folder} holds no earlier run to resume; "
                              "run without --resume to start one")

    def prepare(self, fingerprint: Mapping[str, Any], *, resume: bool) -> set[int]:
        """Create (0700) or check the folder; return the partitions already done (resume)."""
        if resume:
            self.check_resumable()
            parts = self.completed_partitions()
            before = json.loads(self.dir.read_bytes(RUN_FILE).decode("utf-8"))
            diff = sorted(k for k in set(before) | set(fingerprint)
                          if k not in _NOT_SETTINGS and before.get(k) != fingerprint.get(k))
            if diff:
                raise ResumeMismatchError(
                    "--resume refused: the interrupted run used a different "
                    + ", ".join(diff)
                    + "; resume with the same settings, or start a new run with another --out/--manifest"
                )
            self.stamp = before.get("run_stamp")
            retry = self._partitions_with_lost_workers(parts)
            if retry:
                logger.info("--resume: %d partitions with worker-lost files are run again", len(retry))
            return parts - retry
        self.dir.create()
        parts = self.completed_partitions()
        if parts:
            logger.info("replacing the manifest of an earlier run in %s", self.folder)
            for partition in parts:
                self.dir.remove(self._part_name(partition))
        self.write_json(RUN_FILE, fingerprint)
        self.stamp = fingerprint.get("run_stamp")
        return set()

    def write_json(self, name: str, data: Mapping[str, Any]) -> None:
        """Write a ``_name.json`` file of the run (atomically)."""
        self.dir.write_bytes(name, json.dumps(dict(data), indent=1, sort_keys=True).encode("utf-8"))

    def _partitions_with_lost_workers(self, parts: set[int]) -> set[int]:
        lost = set()
        for partition in parts:
            reasons = self.read_part(partition).column("reason")
            if any(r and r.startswith("worker-lost") for r in reasons.to_pylist()):
                lost.add(partition)
        return lost

    @staticmethod
    def _part_name(partition: int) -> str:
        return f"part-{partition:06d}.parquet"

    def part_path(self, partition: int) -> str:
        return self.dir.path(self._part_name(partition))

    def completed_partitions(self) -> set[int]:
        done = set()
        for name in self.dir.names():
            if name.startswith("part-") and name.endswith(".parquet"):
                done.add(int(name[5:-8]))
        return done

    def write_part(self, partition: int, batch: pa.RecordBatch, counts: Mapping[str, int] | None = None) -> None:
        """Write one partition's rows atomically (local: ``_part-N.tmp`` + rename; objects: one put).

        ``counts`` (e.g. the partition's files without a mapping row) are kept in the part's
        schema metadata, so a resumed run can still count them (:meth:`read_counts`).
        """
        sink = pa.BufferOutputStream()
        schema = MANIFEST.with_metadata({_COUNTS: json.dumps(dict(counts or {}), sort_keys=True)})
        pq.write_table(pa.Table.from_batches([batch], schema=MANIFEST).cast(schema), sink)
        data = sink.getvalue().to_pybytes()
        if self.dir.url:
            self.dir.write_bytes(self._part_name(partition), data)
            return
        # a name of its own per writer: a retried task may write while a lost attempt still does
        tmp = os.path.join(self.folder, f"_part-{partition:06d}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        private_file(tmp)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.part_path(partition))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def read_part(self, partition: int) -> pa.Table:
        if self.dir.url:
            return pq.read_table(pa.BufferReader(self.dir.read_bytes(self._part_name(partition))), schema=MANIFEST)
        return pq.read_table(self.part_path(partition), schema=MANIFEST)

    def read_counts(self, partition: int) -> dict[str, int]:
        """The ``counts`` :meth:`write_part` kept with a part (empty for parts without them)."""
        if self.dir.url:
            schema = pq.read_schema(pa.BufferReader(self.dir.read_bytes(self._part_name(partition))))
        else:
            schema = pq.read_schema(self.part_path(partition))
        raw = (schema.metadata or {}).get(_COUNTS.encode())
        return {str(k): int(v) for k, v in json.loads(raw).items()} if raw else {}

    def read(self) -> pa.Table:
        return read_manifest(self.folder, self.dir.options)

    def shared_uids(self, rows_per_pass: int = 2_000_000) -> tuple[int, int]:
        """(SOPInstanceUIDs written by more than one output, outputs ending with one of them).

        A dataset scan of the ``sop_instance_uid`` column of written rows. Above ``rows_per_pass``
        rows the UIDs are counted in up to 10 passes, each holding the UIDs whose last character
        falls in its bucket (two equal UIDs share their last character), so the client holds at
        most about ``rows_per_pass`` UIDs at a time.
        """
        fs, where = self.dir.open_dataset_source()
        dataset = pads.dataset(where, format="parquet", schema=MANIFEST, filesystem=fs,
                               ignore_prefixes=DATASET_IGNORES)
        written = pc.field("status") == Status.WRITTEN.value
        passes = min(10, max(1, -(-dataset.count_rows(filter=written) // max(1, rows_per_pass))))
        shared = outputs = 0
        for bucket in range(passes):
            batches = []
            for batch in dataset.to_batches(columns=["sop_instance_uid"], filter=written):
                uids = batch.column("sop_instance_uid")
                if passes > 1:
                    last = pc.index_in(pc.utf8_slice_codeunits(uids, -1), value_set=_LAST_CHARS)
                    uids = uids.filter(pc.equal(_bucket(last, passes), bucket))
                batches.append(uids)
            if not batches:
                continue
            table = pa.table({"sop_instance_uid": pa.chunked_array(batches, pa.string())})
            counts = table.group_by("sop_instance_uid").aggregate([([], "count_all")])
            counts = counts.filter(pc.and_(pc.greater(counts["count_all"], 1),
                                           pc.is_valid(counts["sop_instance_uid"])))
            shared += counts.num_rows
            outputs += int(pc.sum(counts["count_all"]).as_py() or 0)
        return shared, outputs


#: the characters a UID ends with (anything else, and nulls, go to bucket 0)
_LAST_CHARS = pa.array(list("0123456789."), pa.string())


def _bucket(index: pa.Array, passes: int) -> pa.Array:
    """``index % passes`` (nulls: 0) with Arrow kernels."""
    i = pc.fill_null(index, 0).cast(pa.int64())
    return pc.subtract(i, pc.multiply(pc.divide(i, passes), passes))

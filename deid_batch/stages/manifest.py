"""Manifest stage (client): record one row per input file, incrementally, and summarise.

The manifest is a folder (by default ``OUTDIR.manifest`` beside the output) holding a Parquet
dataset readable with ``pyarrow.dataset.dataset(folder)``: one ``part-NNNNNN.parquet`` file per
finished partition, written atomically as partitions finish, so a crash loses at most the partitions
in flight. Files whose names start with ``_`` are not part of the dataset (pyarrow ignores them):
``_run.json`` (the run fingerprint that ``--resume`` checks), ``_key`` (the run key, mode 0600) and
``_identifiers.parquet`` (when ``apply`` gathered the identifiers itself).
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
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from deid_batch.errors import ConfigError, ResumeMismatchError
from deid_batch.schemas import MANIFEST, Status

__all__ = ["ManifestStore", "Summary", "default_manifest_dir", "read_manifest"]

RUN_FILE = "_run.json"

logger = logging.getLogger(__name__)


def default_manifest_dir(output_folder: str) -> str:
    return os.path.abspath(output_folder).rstrip(os.sep) + ".manifest"


def read_manifest(path: str) -> pa.Table:
    """Read a manifest folder (or one part file) into a table."""
    if not os.path.exists(path):
        raise ConfigError(f"manifest {path} does not exist")
    return pads.dataset(path, format="parquet", schema=MANIFEST).to_table()


@dataclass
class Summary:
    """Counts of a run, by status and by failure reason code."""

    total: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    warnings: int = 0
    unmapped: int = 0

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        self.total += batch.num_rows
        self.by_status.update(batch.column("status").to_pylist())
        for status, reason in zip(batch.column("status").to_pylist(), batch.column("reason").to_pylist()):
            if status in (Status.FAILED.value, Status.SKIPPED.value) and reason:
                self.by_reason[reason.split(":", 1)[0]] += 1
        self.warnings += sum(len(w or ()) for w in batch.column("warnings").to_pylist())

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
        if self.unmapped:
            out.append(f"  no mapping row: {self.unmapped} (var: lookups missing for these files)")
        if self.warnings:
            out.append(f"  warnings: {self.warnings} (see the manifest's warnings column)")
        return out


class ManifestStore:
    """The manifest folder of one run."""

    def __init__(self, folder: str) -> None:
        self.folder = os.path.abspath(folder)

    def prepare(self, fingerprint: Mapping[str, Any], *, resume: bool) -> set[int]:
        """Create or check the folder; return the partitions already done (resume)."""
        os.makedirs(self.folder, exist_ok=True)
        run_file = os.path.join(self.folder, RUN_FILE)
        parts = self.completed_partitions()
        if resume:
            if not os.path.exists(run_file):
                raise ConfigError(f"--resume: {self.folder} holds no earlier run to resume")
            with open(run_file, encoding="utf-8") as fh:
                before = json.load(fh)
            diff = sorted(k for k in set(before) | set(fingerprint) if before.get(k) != fingerprint.get(k))
            if diff:
                raise ResumeMismatchError(
                    "--resume refused: the interrupted run used a different "
                    + ", ".join(diff)
                    + "; resume with the same settings, or start a new run with another --out/--manifest"
                )
            retry = self._partitions_with_lost_workers(parts)
            if retry:
                logger.info("--resume: %d partitions with worker-lost files are run again", len(retry))
            return parts - retry
        if parts:
            logger.info("replacing the manifest of an earlier run in %s", self.folder)
            for partition in parts:
                os.unlink(self.part_path(partition))
        tmp = run_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(dict(fingerprint), fh, indent=1, sort_keys=True)
        os.replace(tmp, run_file)
        return set()

    def _partitions_with_lost_workers(self, parts: set[int]) -> set[int]:
        lost = set()
        for partition in parts:
            reasons = pq.read_table(self.part_path(partition), columns=["reason"]).column("reason")
            if any(r and r.startswith("worker-lost") for r in reasons.to_pylist()):
                lost.add(partition)
        return lost

    def part_path(self, partition: int) -> str:
        return os.path.join(self.folder, f"part-{partition:06d}.parquet")

    def completed_partitions(self) -> set[int]:
        done = set()
        if os.path.isdir(self.folder):
            for name in os.listdir(self.folder):
                if name.startswith("part-") and name.endswith(".parquet"):
                    done.add(int(name[5:-8]))
        return done

    def write_part(self, partition: int, batch: pa.RecordBatch) -> None:
        path = self.part_path(partition)
        tmp = os.path.join(self.folder, f"_part-{partition:06d}.tmp")
        pq.write_table(pa.Table.from_batches([batch], schema=MANIFEST), tmp)
        os.replace(tmp, path)

    def read_part(self, partition: int) -> pa.Table:
        return pq.read_table(self.part_path(partition), schema=MANIFEST)

    def read(self) -> pa.Table:
        return read_manifest(self.folder)

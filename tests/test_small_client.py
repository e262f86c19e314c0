"""A client that stays small (issue 12 item 3): no per-file Python lists on the client.

Discovery returns Arrow; each partition's items are built when it is submitted; workers write
their manifest and identifier parts and send back counts; the mapping join runs per partition
against Parquet files the workers read. (Memory targets live in benchmarks/memory.py.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deid_batch.api import run_apply, run_scan
from deid_batch.schemas import MANIFEST
from deid_batch.stages import discover as discover_mod
from deid_batch.stages.apply import ApplyConfig, RecordConfig, apply_and_record
from deid_batch.stages.discover import PathList, discover, discover_paths
from deid_batch.stages.manifest import ManifestStore, PartResult
from deid_batch.stages.mapping import (
    PartitionJoin,
    join_variables,
    partition_variables,
    unused_mapping_rows,
)
from deid_batch.stages.pipeline import Executor, open_executor, run_partitions
from deid_batch.stages.scan import ScanConfig

RECIPE = {"format": "dicom", "header": [{"action": "REPLACE", "field": "PatientID", "value": "var:id"}]}


def test_discovery_returns_arrow_chunks_spilled_to_disk_in_the_listed_order(small_archive, monkeypatch):
    monkeypatch.setattr(discover_mod, "CHUNK", 5)
    paths = discover_paths(small_archive)
    assert isinstance(paths, PathList)
    assert len(paths) == 24 and paths.num_chunks == 5  # 24 paths, 5 per chunk
    chunks = list(paths.chunks())
    assert all(isinstance(c, pa.Array) and c.type == pa.string() for c in chunks)
    assert [len(c) for c in chunks] == [5, 5, 5, 5, 4]
    spill = paths._spill
    assert spill is not None and oct(os.stat(spill).st_mode & 0o777) == "0o600"
    listed = discover(small_archive)
    assert paths.to_pylist() == listed and len(set(listed)) == 24
    for start, stop in [(0, 3), (3, 12), (9, 10), (20, 30), (24, 30)]:
        assert paths.take_range(start, stop) == listed[start:stop]
    paths.close()
    assert not os.path.exists(spill)


def test_a_small_discovery_stays_in_memory(small_archive):
    paths = discover_paths(small_archive)
    assert paths._spill is None and paths.to_pylist() == discover(small_archive)


class Recorded(Sequence[str]):
    """A real sequence that records when a slice of it is taken."""

    def __init__(self, items: list[str], events: list[tuple[str, int]]) -> None:
        self.items, self.events = items, events

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            self.events.append(("slice", index.start))
        return self.items[index]

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("run_partitions walked every item up front")


def _record_run(events: list[tuple[str, int]]) -> Any:
    def func(chunk: list[str], config: Any, i: int) -> int:
        events.append(("run", i * 10))
        return len(chunk)
    return func


def test_each_partition_is_built_only_when_it_is_submitted():
    events: list[tuple[str, int]] = []
    items = Recorded([f"/f{i}" for i in range(35)], events)
    got = list(run_partitions(Executor(), _record_run(events), items, None, size=10, skip=frozenset({1})))
    assert [(i, n) for i, _r, n in got] == [(0, 10), (2, 10), (3, 5)]
    # slice, run, slice, run ...: never all partitions' items before the first one runs
    assert events == [("slice", 0), ("run", 0), ("slice", 20), ("run", 20), ("slice", 30), ("run", 30)]


def test_arrow_items_reach_the_worker_function_as_lists_of_str(local_client):
    paths = pa.chunked_array([[f"/a{i}" for i in range(7)], [f"/b{i}" for i in range(6)]])
    got = dict((i, r) for i, r, _n in run_partitions(Executor(local_client), _first_and_count, paths, None,
                                                     size=4))
    assert got == {0: ("/a0", 4, "str"), 1: ("/a4", 4, "str"), 2: ("/b1", 4, "str"), 3: ("/b5", 1, "str")}


def _first_and_count(chunk: list[str], config: Any, i: int) -> tuple[str, int, str]:
    return chunk[0], len(chunk), type(chunk[0]).__name__


def test_a_worker_writes_its_manifest_part_and_returns_counts_only(small_archive, tmp_path, key_file,
                                                                   local_client):
    from deid_batch.recipe.engine import EngineOptions
    from deid_batch.recipe.parse import load_recipe

    manifest = tmp_path / "out.manifest"
    ManifestStore(str(manifest)).dir.create()
    config = RecordConfig(ApplyConfig(load_recipe("dicom"), EngineOptions(uid_key=b"k" * 16),
                                      str(tmp_path / "out"), b"k" * 16), str(manifest))
    paths = discover(small_archive)[:6]
    future = local_client.submit(apply_and_record, paths, config, 3, pure=False)
    result = future.result()
    assert isinstance(result, PartResult)  # counts, no rows
    assert result.summary.total == 6 and result.summary.by_status["written"] == 6
    assert not hasattr(result, "batch")
    part = pq.read_table(manifest / "part-000003.parquet")  # written by the worker process
    assert part.column("source").to_pylist() == paths
    assert set(part.column("partition").to_pylist()) == {3}
    assert not [n for n in os.listdir(manifest) if n.endswith(".tmp")]


@pytest.mark.parametrize("where", ["sync", "cluster"])
def test_scan_workers_write_parts_that_are_streamed_into_one_file_in_input_order(small_archive, tmp_path,
                                                                                  local_client, where):
    paths = discover_paths(small_archive)
    ids = tmp_path / "ids.parquet"
    ex = Executor() if where == "sync" else Executor(local_client)
    keys, errors = run_scan(paths, ScanConfig(), ex, parquet_path=str(ids), size=5, keep_keys=False)
    assert keys.num_rows == 0 and errors.num_rows == 0
    table = pq.read_table(ids)
    assert table.column("source").to_pylist() == paths.to_pylist()  # each file once, in order
    assert pq.ParquetFile(ids).metadata.num_row_groups == 5  # one row group per partition
    assert not (tmp_path / "ids.parquet.parts").exists()  # the parts are gone
    assert oct(os.stat(ids).st_mode & 0o777) == "0o600"


def _keys_and_mapping(tmp_path, small_archive) -> tuple[pa.Table, pa.Table, str, str]:
    from deid_batch import get_identifiers

    keys = get_identifiers(small_archive).select(["source", "entity_id", "item_id"])
    entities = sorted(set(keys.column("entity_id").to_pylist()))
    mapping = pa.table({"PatientID": [*entities[:-1], "nobody"],
                        "id": [f"id-{i}" for i in range(len(entities))]})
    keys_path, mapping_path = str(tmp_path / "keys.parquet"), str(tmp_path / "mapping.parquet")
    pq.write_table(keys, keys_path, row_group_size=4)
    pq.write_table(mapping, mapping_path)
    return keys, mapping, keys_path, mapping_path


def test_the_join_per_partition_equals_the_whole_archive_join(small_archive, tmp_path):
    keys, mapping, keys_path, mapping_path = _keys_and_mapping(tmp_path, small_archive)
    whole = join_variables(keys, mapping, "PatientID", "SOPInstanceUID")
    expected = dict(whole.per_source())
    join = PartitionJoin(keys_path, mapping_path, "PatientID", "SOPInstanceUID")
    paths = discover(small_archive)
    got: dict[str, Any] = {}
    unmapped = 0
    for start in range(0, len(paths), 7):
        part = [*paths[start:start + 7], "/not/in/the/ids.dcm"]
        variables, n_unmapped, missing = partition_variables(part, join)
        assert missing == 1 and variables[-1] is None
        got.update(zip(part[:-1], variables[:-1]))
        unmapped += n_unmapped
    assert got == expected
    assert unmapped == whole.unmapped > 0
    assert unused_mapping_rows(keys_path, mapping, "PatientID", "SOPInstanceUID") == whole.unused_rows == 1


def test_apply_with_a_mapping_joins_on_the_workers_and_counts_like_one_join(small_archive, tmp_path, key_file,
                                                                           local_client):
    keys, mapping, keys_path, _ = _keys_and_mapping(tmp_path, small_archive)
    csv = tmp_path / "mapping.csv"
    csv.write_text("PatientID,id\n" + "".join(f"{e},{v}\n" for e, v in zip(mapping.column("PatientID").to_pylist(),
                                                                             mapping.column("id").to_pylist())))
    whole = join_variables(keys, mapping, "PatientID", "SOPInstanceUID")
    report = run_apply(str(small_archive), recipe=RECIPE, ids=keys_path, variables=str(csv),
                       output_folder=str(tmp_path / "out"), key_file=key_file, client=local_client, partition=5)
    assert report.summary.total == 24
    assert report.summary.unmapped == whole.unmapped
    assert report.summary.unused_rows == 1
    manifest = pq.read_table(report.manifest)
    mapped = dict(zip(manifest.column("source").to_pylist(), manifest.column("mapped").to_pylist()))
    assert mapped == {s: v is not None for s, v in whole.per_source()}
    assert (tmp_path / "out.manifest" / "_mapping.parquet").exists()
    keys_copy = pq.read_table(tmp_path / "out.manifest" / "_keys.parquet")  # what the workers read
    assert keys_copy.column_names == ["source", "entity_id", "item_id"]
    assert keys_copy.column("source").to_pylist() == keys.column("source").to_pylist()


def test_a_resumed_run_counts_the_join_of_the_partitions_done_before(small_archive, tmp_path, key_file):
    keys, mapping, keys_path, _ = _keys_and_mapping(tmp_path, small_archive)
    csv = tmp_path / "mapping.csv"
    csv.write_text("PatientID,id\n" + "".join(f"{e},{v}\n" for e, v in zip(mapping.column("PatientID").to_pylist(),
                                                                             mapping.column("id").to_pylist())))
    kwargs: dict[str, Any] = dict(recipe=RECIPE, ids=keys_path, variables=str(csv), key_file=key_file,
                                  output_folder=str(tmp_path / "out"), client="sync", partition=5)
    first = run_apply(str(small_archive), **kwargs)
    store = ManifestStore(first.manifest)
    for i in (1, 3):  # as if the run had been interrupted before these partitions finished
        os.unlink(store.part_path(i))
    again = run_apply(str(small_archive), resume=True, **kwargs)
    assert again.summary.total == 24
    assert again.summary.unmapped == first.summary.unmapped > 0
    assert again.summary.by_status == first.summary.by_status


def test_open_executor_sync_runs_worker_functions_in_this_process(small_archive, tmp_path):
    with open_executor("sync") as ex:
        results = list(run_partitions(ex, _first_and_count, discover_paths(small_archive), None, size=10))
    assert [n for _i, _r, n in results] == [10, 10, 4]


def test_shared_uids_counted_in_buckets_equal_one_pass(tmp_path):
    store = ManifestStore(str(tmp_path / "m"))
    store.dir.create()
    uids = ["1.2.3", "1.2.3", "1.2.4", "1.2.40", "1.2.40", "1.2.40", "9", None, "x.y", "x.y", "7."]
    for part in range(3):
        rows = [{"source": f"/in/{part}/{i}", "output": f"/out/{part}/{i}", "status": "written",
                 "partition": part, "sop_instance_uid": u, "warnings": []}
                for i, u in enumerate(uids) if i % 3 == part]
        store.write_part(part, pa.RecordBatch.from_pylist(rows, schema=MANIFEST))
    assert store.shared_uids() == (3, 7)
    assert store.shared_uids(rows_per_pass=1) == (3, 7)  # 10 passes, one bucket of last characters each


def _echo(items: list[str], config: Any, partition: int) -> int:
    return len(items)


def test_the_scheduler_of_a_local_cluster_keeps_no_finished_partitions_paths():
    # dask keeps the last 1,000 messages of every comm for its developers; the scheduler's link to
    # a worker would then hold the paths of 1,000 finished partitions (~100 KB each at 500 files)
    paths = [f"/archive/patient-{i:05d}.dcm" for i in range(400)]
    with open_executor(workers=2) as ex:
        done = sum(n for _i, n, _rows in run_partitions(ex, _echo, paths, None, size=20))
        scheduler = ex.client.cluster.scheduler
        kept = [msg for comm in scheduler.stream_comms.values() for msg in comm.recent_message_log]
        assert not kept
        assert not scheduler.transition_log
    assert done == 400
    import dask

    assert dask.config.get("distributed.admin.low-level-log-length") == 1000  # the user's config is back


_LOADS = {"count": 0}


def _counted_load(value: str) -> _CountedConfig:
    _LOADS["count"] += 1
    return _CountedConfig(value)


class _CountedConfig:
    """A config that counts how often the process it lands in unpickles it."""

    def __init__(self, value: str) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _counted_load, (self.value,)


def _loads_so_far(chunk: list[str], config: _CountedConfig, i: int) -> tuple[int, str, int]:
    return os.getpid(), config.value, _LOADS["count"]


def test_a_partitions_config_is_unpickled_once_per_worker_not_once_per_task(local_client):
    got = list(run_partitions(Executor(local_client), _loads_so_far, [f"/f{i}" for i in range(60)],
                              _CountedConfig("recipe"), size=2))
    assert len(got) == 30
    assert {value for _i, (_pid, value, _n), _rows in got} == {"recipe"}
    assert {n for _i, (_pid, _value, n), _rows in got} == {1}  # 30 tasks, one unpickling per worker
    assert _LOADS["count"] == 0  # the client pickled it, never unpickled it


def test_a_scan_partition_read_in_slices_writes_the_same_part_and_counts(small_archive, tmp_path, monkeypatch):
    from deid_batch.stages import parts
    from deid_batch.stages.scan import path_counts

    paths = discover(small_archive) + [str(tmp_path / "missing.dcm")]
    whole_folder, sliced_folder = tmp_path / "whole", tmp_path / "sliced"
    whole_folder.mkdir()
    sliced_folder.mkdir()
    whole = parts.scan_to_part(paths, parts.ScanParts(ScanConfig(), str(whole_folder)), 3)
    monkeypatch.setattr(parts, "SCAN_SLICE", 7)  # 25 paths: slices of 7, 7, 7, 4
    sliced = parts.scan_to_part(paths, parts.ScanParts(ScanConfig(), str(sliced_folder)), 3)
    assert sliced[0] == whole[0] == 24
    assert sliced[1].to_pylist() == whole[1].to_pylist() and sliced[1].num_rows == 1  # the missing file
    assert path_counts([sliced[1]]) == path_counts([whole[1]]) and sum(path_counts([sliced[1]])) == 25
    part = "part-000003.parquet"
    assert pq.read_table(sliced_folder / part).equals(pq.read_table(whole_folder / part))


def test_a_spill_file_left_by_a_killed_run_is_removed_by_the_next_one(small_archive, tmp_path, monkeypatch):
    import subprocess
    import sys
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(discover_mod, "CHUNK", 5)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    orphan = tmp_path / f"deid-batch-paths-{dead}-abc.arrow"
    alive = tmp_path / f"deid-batch-paths-{os.getppid()}-def.arrow"  # a run still going
    other = tmp_path / "deid-batch-paths-notapid.arrow"
    for f in (orphan, alive, other):
        f.write_bytes(b"paths")
    paths = discover_paths(small_archive)
    assert paths._spill is not None and os.path.dirname(paths._spill) == str(tmp_path)
    assert not orphan.exists()
    assert alive.exists() and other.exists()
    paths.close()

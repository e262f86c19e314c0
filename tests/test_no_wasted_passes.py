"""apply gathers identifiers only when a mapping needs them; partitions are never tiny."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

import deid_batch.api as api
from deid_batch import as_lookup, get_identifiers, replace_identifiers
from deid_batch.api import run_apply
from deid_batch.stages.pipeline import partition_size

RECIPE = {"format": "dicom", "header": [{"action": "REPLACE", "field": "PatientID", "value": "var:id"}]}


@pytest.fixture
def no_scan(monkeypatch):
    """Any scan pass during apply fails the test (the real scan is used everywhere else)."""
    def refuse(*args, **kwargs):
        raise AssertionError("apply ran a scan pass")
    monkeypatch.setattr(api, "run_scan", refuse)


def test_apply_without_a_mapping_runs_no_scan(small_archive, tmp_path, key_file, no_scan):
    report = run_apply(str(small_archive), recipe=RECIPE, output_folder=str(tmp_path / "out"),
                       key_file=key_file, client="sync")
    assert report.summary.by_status["written"] == 24
    assert report.identifiers is None
    assert not os.path.exists(os.path.join(report.manifest, "_identifiers.parquet"))


def test_apply_with_as_lookup_ids_reads_keys_from_their_sources(small_archive, tmp_path, key_file):
    ids = as_lookup(get_identifiers(small_archive))
    for items in ids.values():
        for fields in items.values():
            fields["id"] = "cookiemonster"
    expected_with_scan = replace_identifiers(str(small_archive), recipe=RECIPE,
                                             variables=_mapping_of(ids), key_file=key_file,
                                             output_folder=str(tmp_path / "scanned"), client="sync")
    scans: list[int] = []
    real = api.run_scan

    def counting(*args, **kwargs):
        scans.append(1)
        return real(*args, **kwargs)

    api.run_scan = counting  # type: ignore[assignment]
    try:
        report = run_apply(str(small_archive), recipe=RECIPE, ids=ids, key_file=key_file,
                           output_folder=str(tmp_path / "lookup"), client="sync")
    finally:
        api.run_scan = real  # type: ignore[assignment]
    assert scans == []
    assert report.identifiers is None
    assert report.summary.unmapped == 0
    outputs = sorted(report.outputs)
    assert len(outputs) == 24
    with_scan = {os.path.relpath(p, tmp_path / "scanned"): open(p, "rb").read() for p in expected_with_scan}
    without = {os.path.relpath(p, tmp_path / "lookup"): open(p, "rb").read() for p in outputs}
    assert without == with_scan


def test_a_lookup_that_misses_an_input_falls_back_to_a_scan(small_archive, tmp_path, key_file):
    ids = as_lookup(get_identifiers(small_archive))
    first = next(iter(ids))
    del ids[first]
    for items in ids.values():
        for fields in items.values():
            fields["id"] = "cookiemonster"
    report = run_apply(str(small_archive), recipe=RECIPE, ids=ids, key_file=key_file,
                       output_folder=str(tmp_path / "out"), client="sync")
    assert report.identifiers is not None  # the scan ran: its table is in the manifest folder
    assert report.summary.unmapped > 0


def _mapping_of(ids: dict) -> pa.Table:
    rows = [{"PatientID": e, "SOPInstanceUID": i, "id": f["id"]}
            for e, items in ids.items() for i, f in items.items()]
    return pa.Table.from_pylist(rows)


@pytest.mark.parametrize(("n", "size"), [(1, 100), (99, 100), (1_000, 100), (3_200, 100), (5_000, 157),
                                         (16_000, 500), (10_000_000, 500)])
def test_partitions_hold_at_least_100_and_at_most_500_files(n, size):
    assert partition_size(n) == size


def test_partition_size_depends_on_the_file_count_only_and_is_overridable():
    assert partition_size(1_000) == partition_size(1_000)
    assert partition_size(1_000, 7) == 7

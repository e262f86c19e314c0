"""End to end: scan, mapping join, apply, manifest - on every kind of scheduler."""

from __future__ import annotations

import hashlib
import os

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pydicom
import pytest

import deid_batch
from deid_batch.api import run_apply
from deid_batch.stages.discover import discover

DOCS_RECIPE = """FORMAT dicom
%header
ADD PatientIdentityRemoved YES
REPLACE PatientID var:id
REPLACE SOPInstanceUID var:source_id
"""


def _tree(folder):
    out = {}
    for root, _dirs, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _mapping(tmp_path, ids_table):
    lines = ["PatientID,SOPInstanceUID,id,source_id"]
    for i, row in enumerate(ids_table.select(["entity_id", "item_id"]).to_pylist()):
        lines.append(f"{row['entity_id']},{row['item_id']},SUBJ-{row['entity_id'][-3:]},2.25.{100 + i}")
    path = tmp_path / "mapping.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(small_archive, tmp_path, key_file, how, client=None, scheduler=None):
    recipe = tmp_path / "deid.recipe"
    recipe.write_text(DOCS_RECIPE)
    ids = deid_batch.get_identifiers(small_archive, client="sync")
    out = tmp_path / f"out-{how}"
    report = run_apply(small_archive, recipe=str(recipe), variables=_mapping(tmp_path, ids),
                       output_folder=str(out), key_file=key_file, client=client, scheduler=scheduler)
    return report, out


@pytest.mark.cluster
def test_same_outputs_on_sync_local_cluster_and_separate_dask_processes(
        small_archive, tmp_path, key_file, local_client, dask_processes):
    sync, out_sync = _run(small_archive, tmp_path, key_file, "sync", client="sync")
    local, out_local = _run(small_archive, tmp_path, key_file, "local", client=local_client)
    procs, out_procs = _run(small_archive, tmp_path, key_file, "procs", scheduler=dask_processes)
    assert sync.summary.by_status == {"written": 24}
    tree = _tree(out_sync)
    assert len(tree) == 24
    assert _tree(out_local) == tree
    assert _tree(out_procs) == tree
    for report in (sync, local, procs):
        assert report.exit_code == 0


def test_outputs_follow_the_recipe_and_mapping(small_archive, tmp_path, key_file):
    report, out = _run(small_archive, tmp_path, key_file, "sync", client="sync")
    manifest = pads.dataset(report.manifest, format="parquet").to_table()
    assert manifest.num_rows == 24
    assert sorted(manifest.column("source").to_pylist()) == discover(small_archive)
    for row in manifest.to_pylist():
        src = pydicom.dcmread(row["source"])
        ds = pydicom.dcmread(row["output"])
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.PatientID.startswith("SUBJ-")
        assert ds.SOPInstanceUID.startswith("2.25.")
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert not any(e.tag.is_private for e in ds.iterall())
        assert "PatientName" not in ds  # the remove-everything base takes what the recipe does not keep
        assert ds.PixelData == src.PixelData


def test_outputs_are_sharded_by_hash_without_input_names(small_archive, tmp_path, key_file):
    _report, out = _run(small_archive, tmp_path, key_file, "sync", client="sync")
    for rel in _tree(out):
        folder1, folder2, name = rel.split(os.sep)
        assert name.startswith(folder1 + folder2) and name.endswith(".dcm")
        assert "IM" not in rel and "^" not in rel


def test_default_recipe_removes_everything_but_pixels_and_remaps_uids(small_archive, tmp_path, key_file):
    outputs = deid_batch.replace_identifiers(small_archive, output_folder=str(tmp_path / "out"),
                                             key_file=key_file, client="sync")
    assert len(outputs) == 24
    studies = {}
    for src_path, out_path in zip(discover(small_archive), outputs):
        src = pydicom.dcmread(src_path)
        ds = pydicom.dcmread(out_path)
        assert "PatientName" not in ds and "PatientID" not in ds and "StudyDate" not in ds
        assert ds.SOPClassUID == src.SOPClassUID
        originals = {src.SOPInstanceUID, src.StudyInstanceUID, src.SeriesInstanceUID}
        uids = {ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID,
                ds.file_meta.MediaStorageSOPInstanceUID}
        assert not originals & uids
        raw = open(out_path, "rb").read()
        assert not any(u.encode() in raw for u in originals)
        studies.setdefault(src.StudyInstanceUID, set()).add(ds.StudyInstanceUID)
        assert ds.pixel_array.shape == src.pixel_array.shape
    assert all(len(v) == 1 for v in studies.values())


def test_existing_outputs_are_not_overwritten_unless_asked(small_archive, tmp_path, key_file, caplog):
    out = tmp_path / "out"
    first = deid_batch.replace_identifiers(small_archive, output_folder=str(out), key_file=key_file,
                                           client="sync")
    with open(first[0], "ab") as fh:
        fh.write(b"changed")
    second = deid_batch.replace_identifiers(small_archive, output_folder=str(out), key_file=key_file,
                                            client="sync")
    assert second == first
    assert "already exists, overwrite set to False. Not writing." in caplog.text
    assert open(first[0], "rb").read().endswith(b"changed")
    deid_batch.replace_identifiers(small_archive, output_folder=str(out), key_file=key_file,
                                   client="sync", overwrite=True)
    assert not open(first[0], "rb").read().endswith(b"changed")


def test_identifiers_table_has_one_row_per_file_with_nested_paths(small_archive):
    table = deid_batch.get_identifiers(small_archive, client="sync")
    assert table.num_rows == 24
    paths = {f["path"] for f in table.column("fields")[0].as_py()}
    assert "PatientName" in paths
    assert any(p.startswith("RequestAttributesSequence[0].") for p in paths)
    assert "PixelData" not in paths
    lookup = deid_batch.as_lookup(table)
    assert sum(len(items) for items in lookup.values()) == 24


def test_scan_writes_parquet_in_input_order(small_archive, tmp_path):
    from deid_batch.cli import main

    ids = tmp_path / "ids.parquet"
    assert main(["scan", str(small_archive), "--ids", str(ids), "--workers", "0", "--no-progress"]) == 0
    table = pq.read_table(ids)
    assert table.column("source").to_pylist() == discover(small_archive)


def test_the_local_clusters_deid_batch_starts_run_no_worker_profiler(local_client):
    """The statistical profiler samples a task's stack every 10 ms while holding the GIL the task
    needs: off on the clusters deid-batch starts; a cluster the user started keeps its settings."""
    from deid_batch.stages.pipeline import open_executor

    def profiling(dask_worker) -> bool:  # type: ignore[no-untyped-def]
        return "profile" in dask_worker.periodic_callbacks

    with open_executor(workers=2) as ex:
        ours = ex.client.run(profiling)
    assert len(ours) == 2 and not any(ours.values())
    with open_executor(local_client) as ex:
        theirs = ex.client.run(profiling)
    assert theirs and all(theirs.values())

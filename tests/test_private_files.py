"""Linkage files are private (issue 9, item 6): the identifiers table, the manifest folder with
the run key and gathered identifiers, and the mapping the demo writes are 0600 / 0700."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from deid_batch.cli import main
from deid_batch.demo import run_demo


@pytest.fixture(autouse=True)
def usual_umask():
    """The common 022 umask: files would be world-readable unless created private on purpose."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_scan_writes_the_identifiers_and_errors_tables_owner_only(small_archive, tmp_path):
    ids = tmp_path / "ids.parquet"
    assert main(["scan", str(small_archive), "--ids", str(ids), "--workers", "0", "--no-progress"]) == 0
    assert _mode(ids) == 0o600
    assert _mode(tmp_path / "ids.errors.parquet") == 0o600


def test_the_manifest_folder_and_everything_in_it_are_owner_only(small_archive, tmp_path):
    mapping = tmp_path / "mapping.csv"
    mapping.write_text("PatientID,id\nnobody,1\n")
    out = tmp_path / "out"
    assert main(["apply", str(small_archive), "--out", str(out), "--vars", str(mapping),
                 "--workers", "0", "--no-progress"]) == 0
    manifest = tmp_path / "out.manifest"
    assert _mode(manifest) == 0o700
    names = {p.name for p in manifest.iterdir()}
    assert {"_key", "_run.json", "_identifiers.parquet", "part-000000.parquet"} <= names
    for path in manifest.iterdir():
        assert _mode(path) == 0o600, path.name


def test_an_existing_identifiers_table_is_made_private_when_rewritten(small_archive, tmp_path):
    ids = tmp_path / "ids.parquet"
    ids.write_text("old")
    ids.chmod(0o644)
    assert main(["scan", str(small_archive), "--ids", str(ids), "--workers", "0", "--no-progress"]) == 0
    assert _mode(ids) == 0o600


def test_the_demo_writes_its_mapping_and_identifiers_owner_only(tmp_path, capsys):
    folder = tmp_path / "demo"
    assert run_demo(str(folder), n_files=6, workers=0, progress=False) == 0
    assert _mode(folder / "mapping.csv") == 0o600
    assert _mode(folder / "ids.parquet") == 0o600
    assert _mode(folder / "deid.manifest") == 0o700

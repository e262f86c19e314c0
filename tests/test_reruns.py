"""Issue 8.3: re-runs behave like deid's overwrite refusal; another key never writes a second copy."""

from __future__ import annotations

import os

import pyarrow.dataset as pads
import pytest

from deid_batch.api import run_apply
from deid_batch.cli import main
from deid_batch.errors import ConfigError

DEID_MESSAGE = "already exists, overwrite set to False. Not writing."


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _manifest(folder):
    return pads.dataset(str(folder), format="parquet").to_table().to_pylist()


def test_a_rerun_without_overwrite_reports_every_output_as_exists(small_archive, tmp_path, key_file):
    out = tmp_path / "out"
    first = run_apply(str(small_archive), output_folder=str(out), client="sync", key_file=key_file)
    assert first.summary.by_status == {"written": 24}
    before = {p: os.stat(out / p).st_mtime_ns for p in _files(out)}
    second = run_apply(str(small_archive), output_folder=str(out), client="sync", key_file=key_file)
    assert second.summary.by_status == {"exists": 24}
    rows = _manifest(second.manifest)
    assert all(r["status"] == "exists" and DEID_MESSAGE in r["reason"] for r in rows)
    assert {p: os.stat(out / p).st_mtime_ns for p in _files(out)} == before  # nothing rewritten


def test_a_rerun_with_overwrite_writes_again(small_archive, tmp_path, key_file):
    out = tmp_path / "out"
    run_apply(str(small_archive), output_folder=str(out), client="sync", key_file=key_file)
    again = run_apply(str(small_archive), output_folder=str(out), client="sync", key_file=key_file, overwrite=True)
    assert again.summary.by_status == {"written": 24}


def test_the_cli_rerun_prints_deids_message_and_counts_exists(small_archive, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["apply", str(small_archive), "--out", str(out), "--workers", "0", "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "exists   24" in captured.out
    assert DEID_MESSAGE in captured.err


def test_another_manifest_folder_with_a_new_key_is_refused_before_anything_is_written(
        small_archive, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["apply", str(small_archive), "--out", str(out), "--workers", "0", "--no-progress"]) == 0
    before = _files(out)
    other = tmp_path / "other.manifest"
    code = main(["apply", str(small_archive), "--out", str(out), "--manifest", str(other),
                 "--workers", "0", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--manifest" in err and "--key-file" in err and "new, empty --out" in err
    assert _files(out) == before  # no second copy, no non-DICOM file put into OUTDIR
    assert not other.exists()  # a refused run leaves nothing behind (no _key)


def test_the_same_key_from_another_manifest_folder_is_accepted(small_archive, tmp_path, key_file):
    out = tmp_path / "out"
    run_apply(str(small_archive), output_folder=str(out), client="sync", key_file=key_file)
    again = run_apply(str(small_archive), output_folder=str(out), client="sync", key_file=key_file,
                      manifest=str(tmp_path / "m2"))
    assert again.summary.by_status == {"exists": 24}
    assert len(_files(out)) == 24


def test_an_outdir_holding_unrelated_files_is_refused(small_archive, tmp_path, key_file):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="already holds files"):
        run_apply(str(small_archive), output_folder=str(out), client="sync", key_file=key_file)
    assert _files(out) == ["notes.txt"]


def test_outputs_of_this_run_found_again_count_once_as_written(small_archive, tmp_path, key_file):
    """A retried or resumed partition of the same run finds its own identical outputs: written."""
    from deid_batch.dicom.writing import Outcome, write_atomic

    path = str(tmp_path / "a" / "b.dcm")
    assert write_atomic(path, b"data", overwrite=False, stamp_ns=1_700_000_000_123_456_000) is Outcome.WRITTEN
    assert write_atomic(path, b"data", overwrite=False, stamp_ns=1_700_000_000_123_456_000) is Outcome.IDENTICAL
    assert write_atomic(path, b"data", overwrite=False, stamp_ns=1_800_000_000_000_000_000) is Outcome.EXISTS
    assert write_atomic(path, b"other", overwrite=False, stamp_ns=1_700_000_000_123_456_000) is Outcome.EXISTS


def test_an_output_written_in_pieces_is_the_joined_bytes_and_found_again_the_same(tmp_path):
    """The direct path hands the writer pieces (pixel data as a view of the input): the file is
    their bytes in order, a retry with the same pieces is the same output, other pieces are not."""
    from deid_batch.dicom.writing import Outcome, write_atomic

    pixels = bytes(range(256)) * 1024
    parts = [b"head", memoryview(pixels)[8:], b"tail"]
    stamp = 1_700_000_000_123_456_000
    path = tmp_path / "s" / "t.dcm"
    assert write_atomic(str(path), parts, overwrite=False, stamp_ns=stamp) is Outcome.WRITTEN
    assert path.read_bytes() == b"head" + pixels[8:] + b"tail"
    assert path.stat().st_mtime_ns == stamp
    assert write_atomic(str(path), parts, overwrite=False, stamp_ns=stamp) is Outcome.IDENTICAL
    assert write_atomic(str(path), [b"head", pixels[8:], b"tail"], overwrite=False,
                        stamp_ns=stamp) is Outcome.IDENTICAL  # the same bytes, cut elsewhere
    assert write_atomic(str(path), [b"head", memoryview(pixels)[9:], b"tail"], overwrite=False,
                        stamp_ns=stamp) is Outcome.EXISTS
    assert write_atomic(str(path), [b"HEAD"], overwrite=True, stamp_ns=stamp) is Outcome.WRITTEN
    assert path.read_bytes() == b"HEAD"
    assert [p.name for p in path.parent.iterdir()] == ["t.dcm"]  # no temporary file left


def test_resume_keeps_the_interrupted_runs_partition_size(small_archive, tmp_path, key_file):
    """A run split by another partition size (given, or an earlier version's rule) resumes as it
    was split: --resume without --partition-size takes the size from the manifest folder."""
    from deid_batch.stages.manifest import ManifestStore
    from deid_batch.stages.pipeline import partition_size

    out = tmp_path / "out"
    first = run_apply(str(small_archive), output_folder=str(out), client="sync", key_file=key_file, partition=5)
    assert partition_size(24) != 5
    store = ManifestStore(first.manifest)
    for i in (1, 3):  # as if the run had been interrupted before these partitions finished
        os.unlink(store.part_path(i))
    again = run_apply(str(small_archive), output_folder=str(out), client="sync", key_file=key_file, resume=True)
    assert again.summary.total == 24 and again.summary.by_status == {"written": 24}
    rows = _manifest(again.manifest)
    assert sorted(r["source"] for r in rows) == sorted(r["source"] for r in _manifest(first.manifest))
    assert len({r["source"] for r in rows}) == 24  # every input once
    with pytest.raises(ConfigError, match="partition_size"):  # a size given that differs is refused
        run_apply(str(small_archive), output_folder=str(out), client="sync", key_file=key_file, resume=True,
                  partition=7)

"""The deid-batch command line: exit codes, summary, help."""

from __future__ import annotations

import subprocess
import sys

import pyarrow.dataset as pads
import pytest

from deid_batch.cli import main


def test_help_lists_the_commands_and_workflow(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for word in ("scan", "apply", "strip-private", "inspect", "verify", "--workers", "exit codes"):
        assert word in text


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "deid_batch", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "deid-batch" in proc.stdout


def test_apply_prints_a_summary_and_exits_0(small_archive, tmp_path, capsys, key_file):
    out = tmp_path / "out"
    code = main(["apply", str(small_archive), "--out", str(out), "--workers", "0", "--no-progress",
                 "--key-file", key_file])
    text = capsys.readouterr().out
    assert code == 0
    assert "written  24" in text
    manifest = pads.dataset(str(out) + ".manifest", format="parquet").to_table()
    assert manifest.num_rows == 24


def test_bad_recipe_is_a_usage_error_with_exit_2(small_archive, tmp_path, capsys):
    recipe = tmp_path / "bad.recipe"
    recipe.write_text("FORMAT dicom\n%header\nreplace PatientName x\n")
    code = main(["apply", str(small_archive), "--out", str(tmp_path / "o"), "--recipe", str(recipe),
                 "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{recipe}:3" in err


def test_output_inside_input_is_refused_with_exit_2(small_archive, capsys):
    code = main(["apply", str(small_archive), "--out", str(small_archive / "deid"), "--workers", "0"])
    assert code == 2
    assert "inside" in capsys.readouterr().err


def test_mapping_with_duplicate_keys_is_refused_before_writing(small_archive, tmp_path, capsys):
    mapping = tmp_path / "m.csv"
    mapping.write_text("PatientID,id\nA,1\nA,2\n")
    out = tmp_path / "out"
    code = main(["apply", str(small_archive), "--out", str(out), "--vars", str(mapping),
                 "--workers", "0", "--no-progress"])
    assert code == 2
    assert "more than once" in capsys.readouterr().err
    assert not out.exists() or not any(out.rglob("*.dcm"))


def test_unreachable_scheduler_is_a_usage_error(small_archive, tmp_path, capsys):
    config = tmp_path / "dask.yaml"
    config.write_text("distributed:\n  comm:\n    timeouts:\n      connect: 2s\n")
    code = main(["scan", str(small_archive), "--ids", str(tmp_path / "ids.parquet"),
                 "--scheduler", "tcp://127.0.0.1:1", "--dask-config", str(config)])
    assert code == 2
    assert "cannot connect" in capsys.readouterr().err


def test_verify_with_the_recipe_is_strict_and_exits_1_on_kept_identifiers(small_archive, tmp_path, capsys):
    ids = tmp_path / "ids.parquet"
    assert main(["scan", str(small_archive), "--ids", str(ids), "--workers", "0", "--no-progress"]) == 0
    recipe = tmp_path / "keep-names.recipe"
    recipe.write_text("FORMAT dicom\n%header\nADD PatientIdentityRemoved YES\n")
    out = tmp_path / "out"
    assert main(["apply", str(small_archive), "--out", str(out), "--recipe", str(recipe), "--base", "none",
                 "--workers", "0", "--no-progress"]) == 0
    default = str(__import__("pathlib").Path(__file__).parent.parent / "configs" / "deid.remove-everything")
    capsys.readouterr()
    assert main(["verify", str(out), "--ids", str(ids), "--recipe", default]) == 1
    text = capsys.readouterr().out
    assert "LEAK" in text and "PatientName (PN)" in text
    # by default the run's own recipe (the manifest's _recipe.json) is used: the same leak
    assert main(["verify", str(out), "--ids", str(ids), "--workers", "0", "--no-progress"]) == 1
    assert "PatientName (PN)" in capsys.readouterr().out
    clean = tmp_path / "clean"
    assert main(["apply", str(small_archive), "--out", str(clean), "--workers", "0", "--no-progress"]) == 0
    assert main(["verify", str(clean), "--ids", str(ids), "--recipe", default]) == 0


def test_verify_takes_the_common_flags_and_runs_on_workers(small_archive, tmp_path, capsys):
    ids = tmp_path / "ids.parquet"
    out = tmp_path / "out"
    assert main(["scan", str(small_archive), "--ids", str(ids), "--workers", "0", "--no-progress"]) == 0
    assert main(["apply", str(small_archive), "--out", str(out), "--workers", "0", "--no-progress"]) == 0
    dask_config = tmp_path / "dask.yaml"
    dask_config.write_text("distributed:\n  worker:\n    daemon: true\n")
    capsys.readouterr()
    assert main(["verify", str(out), "--ids", str(ids), "--workers", "2", "--dask-config", str(dask_config),
                 "-v", "--partition-size", "5", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "verify: 0 hit(s) in 0 of 24 file(s)" in captured.out
    assert "local cluster of 2 worker processes" in captured.err
    assert main(["verify", str(out), "--ids", str(ids), "--workers", "0", "-q"]) == 0


@pytest.mark.parametrize("case", ["no-outdir", "no-manifest", "no-recipe-file", "no-ids"])
def test_verify_without_what_it_needs_exits_2_with_one_line_naming_the_fix(small_archive, tmp_path, capsys, case):
    ids = tmp_path / "ids.parquet"
    out = tmp_path / "out"
    assert main(["scan", str(small_archive), "--ids", str(ids), "--workers", "0", "--no-progress"]) == 0
    assert main(["apply", str(small_archive), "--out", str(out), "--workers", "0", "--no-progress"]) == 0
    argv = ["verify", str(out), "--ids", str(ids), "--workers", "0", "--no-progress"]
    expected = {"no-outdir": "output folder", "no-manifest": "--manifest DIR", "no-recipe-file": "--recipe R",
                "no-ids": "--ids"}[case]
    if case == "no-outdir":
        argv[1] = str(tmp_path / "missing")
    elif case == "no-manifest":
        (tmp_path / "out.manifest").rename(tmp_path / "elsewhere")
    elif case == "no-recipe-file":
        (tmp_path / "out.manifest" / "_recipe.json").unlink()
    else:
        argv[3] = str(tmp_path / "missing.parquet")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deid-batch verify: error:") and expected in err[0]

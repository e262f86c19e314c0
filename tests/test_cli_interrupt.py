"""Ctrl-C and SIGTERM on a real run (issue 9, item 2): one line with the command that continues,
exit 130 / 143, no dask tracebacks, and the suggested command then finishes the job."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from deid_batch.synth import generate_archive

N_FILES = 2000


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupt") / "pacs"
    generate_archive(root, N_FILES, seed=11)
    return root


def _start(argv: list[str], cwd: Path) -> subprocess.Popen[str]:
    # A new session stands for the terminal's foreground process group: Ctrl-C reaches every
    # process in it, the worker processes included.
    return subprocess.Popen([sys.executable, "-m", "deid_batch", *argv], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(predicate, proc: subprocess.Popen[str], timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.time() < deadline, "the run did not start"
        time.sleep(0.05)


def _send(proc: subprocess.Popen[str], sig: signal.Signals) -> tuple[str, str]:
    if sig == signal.SIGINT:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
    else:
        proc.send_signal(sig)  # `kill PID`
    return proc.communicate(timeout=120)


def _parts(manifest: Path) -> list[Path]:
    return list(manifest.glob("part-*.parquet")) if manifest.is_dir() else []


def _assert_clean(err: str) -> str:
    assert "Traceback" not in err and "CancelledError" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    noise = [line for line in lines if not line.startswith(("running on:", "dask dashboard:"))]
    assert len(noise) == 1, err
    return noise[0]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_apply_says_how_to_resume_and_the_resume_finishes(archive, tmp_path, sig, key_file):
    out = tmp_path / "out"
    manifest = tmp_path / "out.manifest"
    argv = ["apply", str(archive), "--out", "out", "--workers", "2", "--partition-size", "10",
            "--no-progress", "--key-file", key_file]
    proc = _start(argv, tmp_path)
    _wait_for(lambda: len(_parts(manifest)) >= 2, proc)
    _out, err = _send(proc, sig)
    assert proc.returncode == 128 + sig.value
    line = _assert_clean(err)
    assert line.startswith(f"deid-batch apply: interrupted ({sig.name}); ")
    command = line.split("continue with: ", 1)[1]
    assert command == shlex.join(["deid-batch", *argv, "--resume"])
    done_before = len(_parts(manifest))
    assert done_before < N_FILES // 10, "interrupted too late to test anything"
    assert not list(out.rglob(".deid-batch-tmp*"))

    resumed = subprocess.run([sys.executable, "-m", "deid_batch", *shlex.split(command)[1:]],
                             cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    table = pads.dataset(str(manifest), format="parquet").to_table()
    assert table.num_rows == N_FILES
    assert len(set(table.column("source").to_pylist())) == N_FILES
    assert set(table.column("status").to_pylist()) == {"written"}
    assert len(list(out.rglob("*.dcm"))) == N_FILES


def test_an_interrupted_scan_says_to_run_it_again_and_leaves_no_partial_table(archive, tmp_path):
    ids = tmp_path / "ids.parquet"
    argv = ["scan", str(archive), "--ids", "ids.parquet", "--workers", "2", "--no-progress"]
    proc = _start(argv, tmp_path)
    _wait_for(lambda: (tmp_path / "ids.parquet.tmp").exists() and
              (tmp_path / "ids.parquet.tmp").stat().st_size > 0, proc)
    _out, err = _send(proc, signal.SIGTERM)
    assert proc.returncode == 143
    line = _assert_clean(err)
    assert "--resume" not in line
    assert line.endswith("run it again: " + shlex.join(["deid-batch", *argv]))
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no ids.parquet(.tmp), no errors table
    assert not ids.exists()

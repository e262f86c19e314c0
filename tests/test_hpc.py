"""Batch systems through dask-jobqueue: ``--cluster slurm`` / ``--cluster pbs``.

* On a real single-node SLURM (slurmctld + slurmd + munged on localhost, started by the fixture):
  ``apply --cluster slurm --jobs 1`` and ``scan --cluster slurm --adapt 0:1`` give what a local
  run gives, in a SLURM job, whose jobs are gone afterwards; a submission sbatch refuses is a
  clear usage error.
* PBS (no PBS server here): the job script carries the shipped settings, and run by hand with
  bash it starts workers that connect to the scheduler and do the run.
* Clear errors: dask-jobqueue missing, sbatch not on PATH, settings incomplete, bad options.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from deid_batch.cli import main
from tests.hostile import manifest_rows, tree_digest
from tests.slurm_node import SlurmUnavailable, single_node_slurm

dask_jobqueue = pytest.importorskip("dask_jobqueue")  # imported before any dask.config.set of its keys

import dask.config  # noqa: E402

from deid_batch.errors import ConfigError  # noqa: E402
from deid_batch.stages.pipeline import check_jobqueue, jobqueue_cluster  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
KEY = "0123456789abcdef0123456789abcdef\n"


def _cli(*argv: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deid_batch", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _outputs(folder: Path) -> dict[str, str]:
    return {k: v.split()[0] for k, v in tree_digest(folder).items() if not v.startswith("dir ")}


def _local_apply(archive: Path, folder: Path, key: Path) -> tuple[list[Any], dict[str, str]]:
    out = folder / "out"
    r = _cli("apply", str(archive), "--out", str(out), "--key-file", str(key), "--workers", "0", "--no-progress")
    assert r.returncode == 0, r.stderr
    return manifest_rows(folder / "out.manifest", str(out)), _outputs(out)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A single-node SLURM on localhost; the environment (SLURM_CONF) that reaches it."""
    folder = tmp_path_factory.mktemp("slurm")
    try:
        with single_node_slurm(folder) as env:
            yield env
    except SlurmUnavailable as exc:
        if os.environ.get("DEID_BATCH_REQUIRE_SLURM") == "1":  # CI installed SLURM: it must run
            pytest.fail(f"SLURM could not start: {exc}")
        pytest.skip(f"SLURM could not start here: {exc}")


def _slurm_config(folder: Path, **overrides: Any) -> Path:
    """The shipped configs/jobqueue.yaml, with what this one 2-CPU test node needs."""
    data = yaml.safe_load((CONFIGS / "jobqueue.yaml").read_text())
    data["jobqueue"]["slurm"].update({
        "queue": "debug", "cores": 2, "processes": 2, "memory": "1GB", "walltime": "00:10:00",
        "job-script-prologue": [], "local-directory": str(folder / "scratch"),
        "log-directory": str(folder / "joblogs"), "death-timeout": 30, **overrides})
    path = folder / "jobqueue.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slurm
def test_apply_on_slurm_equals_a_local_run(slurm: dict[str, str], small_archive: Path, tmp_path: Path) -> None:
    key = tmp_path / "run.key"
    key.write_text(KEY)
    local_rows, local_files = _local_apply(small_archive, tmp_path / "local", key)
    conf = _slurm_config(tmp_path)
    out = tmp_path / "hpc" / "out"
    r = _cli("apply", str(small_archive), "--out", str(out), "--key-file", str(key), "--cluster", "slurm",
             "--jobs", "1", "--dask-config", str(conf), "--no-progress", env=slurm)
    assert r.returncode == 0, r.stderr
    assert "SLURM cluster via dask-jobqueue (1 job of 2 worker processes" in r.stderr
    assert manifest_rows(tmp_path / "hpc" / "out.manifest", str(out)) == local_rows
    assert _outputs(out) == local_files and len(local_files) == 24
    # the workers ran inside a SLURM job (its output files are there), and no job is left behind
    job_logs = sorted(p.name for p in (tmp_path / "joblogs").iterdir())
    assert any(name.endswith(".err") for name in job_logs), job_logs
    assert "Registered to" in "".join(p.read_text() for p in (tmp_path / "joblogs").glob("*.err"))
    assert _queue(slurm) == ""


@pytest.mark.slurm
def test_scan_on_slurm_with_adaptive_jobs_equals_a_local_scan(slurm: dict[str, str], small_archive: Path,
                                                              tmp_path: Path) -> None:
    local, hpc = tmp_path / "local.parquet", tmp_path / "hpc.parquet"
    r = _cli("scan", str(small_archive), "--ids", str(local), "--workers", "0", "--no-progress")
    assert r.returncode == 0, r.stderr
    conf = _slurm_config(tmp_path)
    r = _cli("scan", str(small_archive), "--ids", str(hpc), "--cluster", "slurm", "--adapt", "0:1",
             "--dask-config", str(conf), "--no-progress", env=slurm)
    assert r.returncode == 0, r.stderr
    assert "adaptive, 0 to 1 jobs" in r.stderr
    assert pq.read_table(hpc).sort_by("source").equals(pq.read_table(local).sort_by("source"))
    assert list((tmp_path / "joblogs").glob("*.err")), "adaptive scaling submitted no job"
    assert _queue(slurm) == ""


@pytest.mark.slurm
def test_a_job_sbatch_refuses_is_a_usage_error_naming_sbatch_and_leaves_nothing(
        slurm: dict[str, str], small_archive: Path, tmp_path: Path) -> None:
    conf = _slurm_config(tmp_path, queue="no-such-partition")
    out = tmp_path / "out"
    r = _cli("apply", str(small_archive), "--out", str(out), "--cluster", "slurm", "--dask-config", str(conf),
             "--no-progress", env=slurm, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "`sbatch` refused the job" in r.stderr and "partition" in r.stderr
    assert "Traceback" not in r.stderr
    assert _queue(slurm) == ""


def _queue(env: dict[str, str]) -> str:
    """Jobs still in the queue (a cancelled job can take a moment to leave it)."""
    deadline = time.monotonic() + 20
    while True:
        out = subprocess.run(["squeue", "-h", "-o", "%i %T"], env=env, capture_output=True, text=True).stdout.strip()
        if not out or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


# --- job scripts (PBS has no server here; SLURM's script is checked the same way) ---

def _shipped(system: str, **overrides: Any) -> dict[str, Any]:
    data = yaml.safe_load((CONFIGS / "jobqueue.yaml").read_text())["jobqueue"][system]
    data.update(overrides)
    return {f"jobqueue.{system}.{k}": v for k, v in data.items()}


def test_pbs_job_script_carries_the_settings_an_hpc_user_edits() -> None:
    with dask.config.set(_shipped("pbs", account="proj-42", interface="lo")):
        cluster = jobqueue_cluster("pbs")
        try:
            script = cluster.job_script()
        finally:
            cluster.close()
    assert script.startswith("#!/usr/bin/env bash")
    for line in ("#PBS -N deid-batch", "#PBS -q workq", "#PBS -A proj-42", "#PBS -l select=1:ncpus=8:mem=16GB",
                 "#PBS -l walltime=04:00:00", "module load python/3.11",
                 "source $HOME/venvs/deid-batch/bin/activate"):
        assert line in script, line
    # one single-threaded worker process per core, on node-local scratch, over the chosen interface
    for arg in ("--nworkers 8", "--nthreads 1", "--local-directory $TMPDIR", "--interface lo",
                "--death-timeout 120", "--memory-limit 1.86GiB"):  # 16GB / 8
        assert arg in script, arg
    assert script.index("module load") < script.index("distributed.cli.dask_worker")
    # the user's prologue lines are kept, then the line that turns the worker profiler off
    assert script.index("module load") < script.index("export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False") \
        < script.index("distributed.cli.dask_worker")


def test_slurm_job_script_carries_the_shipped_settings_and_one_process_per_core_by_default() -> None:
    settings = _shipped("slurm", account="proj-42", processes=None, cores=4, memory="8GB")
    with dask.config.set(settings):
        cluster = jobqueue_cluster("slurm")
        try:
            script = cluster.job_script()
        finally:
            cluster.close()
    for line in ("#SBATCH -J deid-batch", "#SBATCH -p normal", "#SBATCH -A proj-42", "#SBATCH --cpus-per-task=4",
                 "#SBATCH -t 04:00:00", "module load python/3.11"):
        assert line in script, line
    assert "--nworkers 4" in script and "--nthreads 1" in script  # processes unset: one per core


def test_pbs_job_script_run_by_hand_starts_workers_that_do_the_run(small_archive: Path, tmp_path: Path) -> None:
    from distributed import Client

    from deid_batch.api import run_apply

    key = tmp_path / "run.key"
    key.write_text(KEY)
    local_rows, local_files = _local_apply(small_archive, tmp_path / "local", key)
    settings = _shipped("pbs", cores=2, processes=2, memory="1GB", **{"job-script-prologue": [],
                        "local-directory": str(tmp_path / "scratch"), "death-timeout": 30})
    with dask.config.set(settings):
        cluster = jobqueue_cluster("pbs")
    script = tmp_path / "job.sh"
    script.write_text(cluster.job_script())  # what qsub would run; the #PBS lines are comments to bash
    job = subprocess.Popen(["bash", str(script)], start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            out = tmp_path / "hpc" / "out"
            report = run_apply([str(small_archive)], output_folder=str(out), key_file=str(key), client=client,
                               collect_outputs=False)
            assert report.exit_code == 0
            assert len(client.scheduler_info()["workers"]) == 2
            # the job script's workers run without dask's statistical profiler, as local ones
            profiling = client.run(lambda dask_worker: "profile" in dask_worker.periodic_callbacks)
            assert len(profiling) == 2 and not any(profiling.values())
    finally:
        cluster.close()
        os.killpg(job.pid, signal.SIGTERM)
        job.wait(timeout=60)
    assert manifest_rows(tmp_path / "hpc" / "out.manifest", str(out)) == local_rows
    assert _outputs(out) == local_files


# --- clear errors ---

def test_without_dask_jobqueue_the_error_says_how_to_install_it(small_archive: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # `import dask_jobqueue` raises ImportError
    code = main(["scan", str(small_archive), "--ids", str(tmp_path / "ids.parquet"), "--cluster", "slurm"])
    assert code == 2
    err = capsys.readouterr().err
    assert "needs dask-jobqueue" in err and "pip install 'deid-batch[hpc]'" in err
    assert not (tmp_path / "ids.parquet").exists()


@pytest.mark.parametrize("system, command", [("slurm", "sbatch"), ("pbs", "qsub")])
def test_without_the_submit_command_the_error_says_so_and_nothing_is_written(
        system: str, command: str, small_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    out = tmp_path / "out"
    code = main(["apply", str(small_archive), "--out", str(out), "--cluster", system, "--jobs", "2",
                 "--dask-config", str(CONFIGS / "jobqueue.yaml"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"`{command}` was not found on PATH" in err and "login node" in err
    assert not out.exists() and not (tmp_path / "out.manifest").exists()


def test_settings_without_cores_or_memory_are_refused_naming_the_keys(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "qsub").write_text("#!/bin/sh\nexit 1\n")  # only needs to be found on PATH; never run
    (fake_bin / "qsub").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_bin))
    with dask.config.set({"jobqueue.pbs.cores": None, "jobqueue.pbs.memory": None}):
        with pytest.raises(ConfigError, match=r"jobqueue\.pbs\.cores and jobqueue\.pbs\.memory not set"):
            check_jobqueue("pbs")


@pytest.mark.parametrize("argv, message", [
    (["--jobs", "2"], "--jobs and --adapt need --cluster slurm or --cluster pbs"),
    (["--cluster", "slurm", "--workers", "2"], "starts its own workers: leave out --workers and --scheduler"),
    (["--cluster", "slurm", "--jobs", "2", "--adapt", "0:4"], "give --jobs N or --adapt MIN:MAX, not both"),
    (["--cluster", "slurm", "--adapt", "3:1"], "--adapt 3:1: give MIN:MAX jobs"),
    (["--cluster", "pbs", "--jobs", "0"], "--jobs 0: give at least 1 job"),
])
def test_inconsistent_cluster_options_are_usage_errors(argv: list[str], message: str, small_archive: Path,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["apply", str(small_archive), "--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_adapt_that_is_not_min_max_is_rejected_by_the_parser(small_archive: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["scan", str(small_archive), "--ids", str(tmp_path / "i.parquet"), "--cluster", "slurm",
              "--adapt", "four"])
    assert exc.value.code == 2
    assert "'four' is not MIN:MAX" in capsys.readouterr().err

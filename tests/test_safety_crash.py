"""Crashes (issue 4, part 2): a killed worker, a killed client, and --resume.

* kill -9 one worker process of a LocalCluster during ``apply``: the run completes and every
  file is accounted for exactly once;
* SIGKILL the CLI mid-run, then ``--resume``: the final output tree and manifest equal an
  uninterrupted run's, no partial (temporary) or duplicate file is left;
* ``--resume`` with a different recipe or options is refused, naming what differs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from deid_batch.dicom.writing import TMP_MARKER
from tests.hostile import make_dicom, manifest_rows, tree_digest

KEY_HEX = ("5a" * 32).encode()


def slow(dicom: Any = None, value: Any = None, field: Any = None, item: Any = None) -> str:
    """A recipe function that makes each file take a little while (so a kill lands mid-run)."""
    time.sleep(0.03)
    return "Anonymous"


SLOW_RECIPE = "FORMAT dicom\n\n%header\n\nREMOVE ALL\nKEEP SOPClassUID\nKEEP Rows\nKEEP Columns\n" \
    "KEEP SamplesPerPixel\nKEEP PhotometricInterpretation\nKEEP BitsAllocated\nKEEP BitsStored\n" \
    "KEEP HighBit\nKEEP PixelRepresentation\nREPLACE PatientName func:slow\n"


def make_inputs(folder: Path, n: int) -> list[str]:
    for i in range(n):
        make_dicom(folder / f"s{i % 7}" / f"IM{i:04d}.dcm", i)
    return sorted(str(p) for p in folder.rglob("*.dcm"))


def outputs(folder: Path) -> dict[str, str]:
    return {k: v.split()[0] for k, v in tree_digest(folder).items() if not v.startswith("dir ")}


@pytest.mark.cluster
@pytest.mark.slow
def test_killing_a_worker_mid_run_loses_no_file(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    from deid_batch.api import run_apply

    sources = make_inputs(tmp_path / "in", 120)
    key = tmp_path / "key"
    key.write_bytes(KEY_HEX)
    recipe = tmp_path / "deid.slow"
    recipe.write_text(SLOW_RECIPE.replace("REPLACE PatientName func:slow", "ADD PatientName x"))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        pids = client.run(os.getpid)
        result: dict[str, Any] = {}

        def job() -> None:
            try:
                result["report"] = run_apply(
                    tmp_path / "in", recipe=str(recipe), output_folder=str(tmp_path / "out"),
                    key_file=str(key), client=client, partition=3,
                    functions={"slow": slow},
                )
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                result["error"] = exc

        # make every file slow through a recipe function shipped to the workers
        recipe.write_text(SLOW_RECIPE)
        thread = threading.Thread(target=job)
        thread.start()
        manifest = tmp_path / "out.manifest"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if manifest.is_dir() and any(n.startswith("part-") for n in os.listdir(manifest)):
                break
            time.sleep(0.05)
        victim = sorted(pids.values())[0]
        assert thread.is_alive(), "the run finished before a worker could be killed"
        os.kill(victim, signal.SIGKILL)
        thread.join(timeout=240)
        assert not thread.is_alive(), "apply did not finish after a worker was killed"
    assert "error" not in result, repr(result.get("error"))
    rows = manifest_rows(manifest, str(tmp_path / "out"))
    assert [r[0] for r in rows] == sources  # every file exactly once
    statuses = {r[2] for r in rows}
    assert statuses <= {"written", "failed"}
    lost = [r for r in rows if r[2] == "failed"]
    assert all(r[3] == "worker-lost" for r in lost)
    assert not lost, f"{len(lost)} files marked worker-lost after a single worker kill"
    written = [r[1] for r in rows if r[2] == "written"]
    assert len(set(written)) == len(written) == len(outputs(tmp_path / "out"))
    assert not [p for p in (tmp_path / "out").rglob("*") if TMP_MARKER in p.name]
    # the same job on the synchronous scheduler writes the same bytes: nothing was half-done
    run_apply(tmp_path / "in", recipe=str(recipe), output_folder=str(tmp_path / "sync"),
              key_file=str(key), partition=3, functions={"slow": slow})
    assert outputs(tmp_path / "out") == outputs(tmp_path / "sync")


def cli(*args: str, **kw: Any) -> list[str]:
    return [sys.executable, "-m", "deid_batch", *args]


def start_apply(tmp_path: Path, out: str, recipe: Path, extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.Popen(
        cli("apply", str(tmp_path / "in"), "--out", str(tmp_path / out),
            *(() if "--workers" in extra else ("--workers", "0")), "--recipe", str(recipe),
            "--key-file", str(tmp_path / "key"), "--partition-size", "4", "--no-progress", *extra),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True,
    )


def descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (Linux /proc; empty elsewhere - the orphan check is then void)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found.extend(kids)
        todo.extend(kids)
    return found


def alive(pid: int) -> bool:
    """Is ``pid`` a live (not zombie) process?"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def slow_recipe_file(tmp_path: Path, delay_line: bool = True) -> Path:
    """A recipe whose files take a while: many elements to process via a big ADD list."""
    recipe = tmp_path / "deid.recipe"
    lines = SLOW_RECIPE.replace("REPLACE PatientName func:slow\n", "")
    recipe.write_text(lines)
    return recipe


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["0", "2"])
def test_sigkill_the_cli_then_resume_equals_an_uninterrupted_run(tmp_path: Path, workers: str) -> None:
    sources = make_inputs(tmp_path / "in", 160)
    (tmp_path / "key").write_bytes(KEY_HEX)
    recipe = slow_recipe_file(tmp_path)
    before = tree_digest(tmp_path / "in")
    extra = ("--workers", workers)

    full = start_apply(tmp_path, "ref", recipe, extra)
    assert full.wait(timeout=300) == 0, full.stderr.read().decode()[-2000:]

    victim = start_apply(tmp_path, "out", recipe, extra)
    manifest = tmp_path / "out.manifest"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim.poll() is None:
        parts = [n for n in os.listdir(manifest)] if manifest.is_dir() else []
        if len([n for n in parts if n.startswith("part-")]) >= 3:
            break
        time.sleep(0.01)
    assert victim.poll() is None, "the run finished before it could be killed: make it longer"
    children = descendants(victim.pid)
    if workers != "0" and os.path.isdir("/proc"):
        assert children, "the cluster's worker processes were not found"
    os.kill(victim.pid, signal.SIGKILL)  # the client only, as the OOM killer would
    victim.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and [p for p in children if alive(p)]:
        time.sleep(0.2)
    orphans = [p for p in children if alive(p)]
    for p in orphans:  # clean up before failing
        os.kill(p, signal.SIGKILL)
    assert not orphans, f"{len(orphans)} worker processes outlived the killed client"
    done_before = len([n for n in os.listdir(manifest) if n.startswith("part-")])
    assert 0 < done_before < 40
    stale = tmp_path / "out" / "00" / "00" / f"{TMP_MARKER}crashed"  # what a kill mid-write leaves
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half a file")

    resumed = start_apply(tmp_path, "out", recipe, ("--resume", *extra))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()[-2000:]
    assert outputs(tmp_path / "out") == outputs(tmp_path / "ref")
    assert manifest_rows(manifest, str(tmp_path / "out")) == \
        manifest_rows(tmp_path / "ref.manifest", str(tmp_path / "ref"))
    assert [r[0] for r in manifest_rows(manifest)] == sources
    assert not [p for p in (tmp_path / "out").rglob("*") if TMP_MARKER in p.name]
    assert tree_digest(tmp_path / "in") == before


@pytest.mark.parametrize("change", ["recipe", "overwrite", "keep-private", "key"])
def test_resume_with_different_settings_is_refused_naming_the_difference(tmp_path: Path, change: str) -> None:
    make_inputs(tmp_path / "in", 6)
    (tmp_path / "key").write_bytes(KEY_HEX)
    recipe = slow_recipe_file(tmp_path)
    first = start_apply(tmp_path, "out", recipe)
    assert first.wait(timeout=120) == 0
    extra: tuple[str, ...] = ("--resume",)
    if change == "recipe":
        other = tmp_path / "deid.other"
        other.write_text(recipe.read_text() + "KEEP StudyDate\n")
        recipe = other
    elif change == "overwrite":
        extra += ("--overwrite",)
    elif change == "keep-private":
        extra += ("--keep-private",)
    elif change == "key":
        (tmp_path / "key").write_bytes(("77" * 32).encode())
    before = tree_digest(tmp_path / "out")
    second = start_apply(tmp_path, "out", recipe, extra)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2, err.decode()[-2000:]
    word = {"recipe": "recipe", "overwrite": "overwrite", "keep-private": "remove_private", "key": "key"}
    assert word[change] in err.decode()
    assert tree_digest(tmp_path / "out") == before


POISON_NAME = "IM0013.dcm"


def poison(dicom: Any = None, value: Any = None, field: Any = None, item: Any = None) -> str:
    """Kill the worker process on one file, every time (as a crashing C decoder would)."""
    poisoned = str(getattr(dicom, "filename", "")).endswith(POISON_NAME)
    if poisoned and os.environ.get("DEID_BATCH_TEST_POISON") == "1":
        os.kill(os.getpid(), signal.SIGKILL)
    return "Anonymous"


@pytest.mark.cluster
@pytest.mark.slow
def test_a_file_that_kills_every_worker_is_accounted_and_the_run_completes(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    from deid_batch.api import run_apply

    sources = make_inputs(tmp_path / "in", 24)
    recipe = tmp_path / "deid.poison"
    recipe.write_text(SLOW_RECIPE.replace("func:slow", "func:poison"))
    os.environ["DEID_BATCH_TEST_POISON"] = "1"  # inherited by the worker processes started below
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            report = run_apply(tmp_path / "in", recipe=str(recipe), output_folder=str(tmp_path / "out"),
                               client=client, partition=4, functions={"poison": poison})
    finally:
        del os.environ["DEID_BATCH_TEST_POISON"]
    rows = manifest_rows(report.manifest, str(tmp_path / "out"))
    assert [r[0] for r in rows] == sources
    by_source = {r[0]: r for r in rows}
    poisoned = next(s for s in sources if s.endswith("IM0013.dcm"))
    assert by_source[poisoned][2:4] == ("failed", "worker-lost")
    lost = [r for r in rows if r[2] == "failed"]
    assert all(r[3] == "worker-lost" for r in lost)
    # A lost partition is re-run one file per task, so only the guilty file is lost (a partition
    # queued on the dying worker shares its death count, and would otherwise be lost whole).
    assert [r[0] for r in lost] == [poisoned]
    assert report.exit_code == 1
    assert not [p for p in (tmp_path / "out").rglob("*") if TMP_MARKER in p.name]

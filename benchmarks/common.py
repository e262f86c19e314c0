"""Shared helpers of the benchmark scripts: archives, file lists, RSS sampling, formatting."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PYTHON = sys.executable


def archive(work: Path, n_files: int, pixels: str, seed: int = 0, regen: bool = False) -> Path:
    """Generate (or reuse) ``work/archive-<pixels>-<n>-seed<seed>``; return its root."""
    from deid_batch.synth import generate_archive

    root = work / f"archive-{pixels}-{n_files}-seed{seed}"
    done = work / f"{root.name}.done"  # marker outside the archive, so it is never scanned
    if done.exists() and not regen:
        return root
    if root.exists():
        shutil.rmtree(root)
    done.unlink(missing_ok=True)
    t0 = time.perf_counter()
    generate_archive(root, n_files, seed=seed, pixels=pixels)
    done.write_text(json.dumps({"seconds": time.perf_counter() - t0, "files": n_files}))
    print(
        f"  generated {n_files} {pixels}-pixel files in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    return root


#: where ``clean(..., retire=True)`` moves outputs until ``purge_retired`` deletes them
RETIRED = ".retired"


def clean(out: Path, retire: bool = False) -> None:
    """Remove an output folder and the ``OUT.manifest`` folder deid-batch keeps beside it.

    ``retire``: move them aside (``OUT/../.retired/``), deleted by :func:`purge_retired` once
    the timings are done. On ext4, creating files in the ~30 s after thousands were deleted costs
    up to 10x the CPU (the inode allocator skips recently deleted inodes, reading their inode
    table blocks: ``recently_deleted`` / ``find_inode_bit`` in a kernel profile), so a stage timed
    right after the previous one's outputs were deleted pays for that deletion.
    """
    for path in (out, out.with_name(out.name + ".manifest")):
        if retire and path.exists():
            aside = out.parent / RETIRED
            aside.mkdir(exist_ok=True)
            path.rename(aside / f"{path.name}-{time.time_ns()}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def purge_retired(work: Path) -> None:
    """Delete what :func:`clean` retired under ``work``."""
    shutil.rmtree(work / RETIRED, ignore_errors=True)


def list_files(root: Path) -> list[str]:
    out: list[str] = []
    for dirpath, _dirs, names in os.walk(root):
        out.extend(os.path.join(dirpath, n) for n in names)
    out.sort()
    return out


def total_bytes(files: list[str]) -> int:
    return sum(os.stat(f).st_size for f in files)


def warm_cache(files: list[str]) -> None:
    """Read every file once so that every timed stage sees the same (warm) page cache."""
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 20):
                pass


@dataclass
class RssPeaks:
    root: int = 0  # the process we started (client + scheduler for dask stages)
    child_max: int = 0  # the largest descendant (a dask worker process)
    total: int = 0  # root + all descendants at the same instant
    samples: int = 0
    cpu_seconds: float = 0.0  # user + system CPU of the process and its waited-for descendants
    load_before: float = 0.0  # 1-minute load average when the command started
    root_cpu: float = 0.0  # CPU seconds of the started process (last sample before it exited)
    child_cpu: dict[int, float] = field(default_factory=dict)  # same, per descendant
    series: list[tuple[float, int, int]] = field(default_factory=list)  # (s, root, child max)
    child_pids: set[int] = field(default_factory=set)


class RssSampler:
    """Sample the RSS of a process tree every ``interval`` seconds in a background thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peaks = RssPeaks()
        self._t0 = time.perf_counter()
        self._next_series = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = self.proc.memory_info().rss
                times = self.proc.cpu_times()
                self.peaks.root_cpu = times.user + times.system
                children = self.proc.children(recursive=True)
            except psutil.Error:
                return
            total = root
            child_max = 0
            for child in children:
                try:
                    rss = child.memory_info().rss
                    times = child.cpu_times()
                    self.peaks.child_cpu[child.pid] = times.user + times.system
                except psutil.Error:
                    continue
                total += rss
                child_max = max(child_max, rss)
                self.peaks.child_pids.add(child.pid)
                self.peaks.child_max = max(self.peaks.child_max, rss)
            self.peaks.root = max(self.peaks.root, root)
            self.peaks.total = max(self.peaks.total, total)
            self.peaks.samples += 1
            now = time.perf_counter() - self._t0
            if now >= self._next_series:  # one point a second: RSS over the run
                self.peaks.series.append((round(now, 2), root, child_max))
                self._next_series = now + 1.0
            self._stop.wait(self.interval)


def run_sampled(
    cmd: list[str], *, env: dict[str, str] | None = None, timeout: float | None = None
) -> tuple[subprocess.CompletedProcess[str], float, RssPeaks]:
    """Run ``cmd``; return (completed process, wall seconds, RSS peaks of its process tree)."""
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    with RssSampler(proc.pid) as sampler:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    wall = time.perf_counter() - t0
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler.peaks.cpu_seconds = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    sampler.peaks.load_before = load
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), wall, sampler.peaks


def last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)  # type: ignore[no-any-return]
            except json.JSONDecodeError:
                return None
    return None


def mib(n: float | None) -> str:
    return "-" if not n else f"{n / 2**20:,.0f}"


def fmt(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def warm_worker() -> bool:
    """Import the pipeline on a dask worker before the clock starts (False if it is not there)."""
    try:
        __import__("deid_batch.stages.apply")
        __import__("deid_batch.stages.scan")
    except ImportError:
        return False
    return True

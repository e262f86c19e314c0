"""Partition-size curve and dask per-task overhead (issue 3, part 3).

    python benchmarks/partitions.py [--files 2000] [--workers 2] [--sizes 1,2,5,...]

On a LocalCluster of ``--workers`` single-threaded processes:

1. per-task overhead of an empty task, three ways: ``client.map`` of a no-op, one dask-bag partition
   per item, and deid_batch's own ``pipeline.run_partitions`` with a no-op worker function and one
   item per partition (what a one-file partition costs before any DICOM work);
2. the partition-size curve: ``deid_batch.replace_identifiers`` (deid default recipe) on the same
   small-pixel files with ``partition=`` 1 ... 1000 files per task, and the same for the scan stage;
3. a fit of ``worker-seconds per file = work + overhead / files_per_task`` to the apply curve.

Writes ``benchmarks/results/partitions.json`` and ``partitions.png`` (``--publish``: also
``benchmarks/partitions.json`` / ``.png``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from common import HERE, RESULTS, archive, list_files, warm_cache, warm_worker


def noop(*args: Any) -> int:
    return 0


def noop_partition(items: Any, config: Any, index: int) -> int:
    return len(list(items))


def task_overhead(client: Any, workers: int, n: int) -> dict[str, float]:
    """Wall seconds per empty task, and worker-seconds per task (wall x workers / tasks)."""
    import dask.bag as db

    out: dict[str, float] = {}
    client.gather(client.map(noop, range(50), pure=False))  # warm up
    t0 = time.perf_counter()
    futures = client.map(noop, range(n), pure=False)
    client.gather(futures)
    out["client_map_wall_ms"] = (time.perf_counter() - t0) / n * 1e3
    del futures
    t0 = time.perf_counter()
    db.from_sequence(range(n), partition_size=1).map_partitions(noop).compute()
    out["bag_wall_ms"] = (time.perf_counter() - t0) / n * 1e3
    try:
        from deid_batch.stages.pipeline import Executor, run_partitions
    except ImportError:
        return out
    t0 = time.perf_counter()
    for _ in run_partitions(Executor(client), noop_partition, list(range(n)), None, size=1):
        pass
    out["pipeline_wall_ms"] = (time.perf_counter() - t0) / n * 1e3
    for key in list(out):
        out[key.replace("wall", "worker")] = out[key] * workers
    return out


def curve(client: Any, files: list[str], sizes: list[int], work: Path) -> dict[str, list[dict[str, Any]]]:
    import deid_batch

    result: dict[str, list[dict[str, Any]]] = {"apply": [], "scan": []}
    replace = getattr(deid_batch, "replace_identifiers", None)
    try:
        from deid_batch.api import run_scan
        from deid_batch.stages.pipeline import Executor
        from deid_batch.stages.scan import ScanConfig
    except ImportError:
        run_scan = None  # type: ignore[assignment]
    out = work / "partitions-out"
    for size in sizes:
        if replace is not None:
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            replace(
                files,
                recipe="dicom",
                output_folder=str(out),
                overwrite=True,
                client=client,
                partition=size,
            )
            seconds = time.perf_counter() - t0
            result["apply"].append({"files_per_task": size, "seconds": seconds, "files_per_s": len(files) / seconds})
        if run_scan is not None:
            t0 = time.perf_counter()
            run_scan(list(files), ScanConfig(), Executor(client), size=size)
            seconds = time.perf_counter() - t0
            result["scan"].append({"files_per_task": size, "seconds": seconds, "files_per_s": len(files) / seconds})
        line = "  ".join(f"{k} {v[-1]['files_per_s']:7.0f} files/s" for k, v in result.items() if v)
        print(f"  {size:5d} files/task: {line}", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    return result


def fit(points: list[dict[str, Any]], n_files: int, workers: int) -> dict[str, float] | None:
    """Least squares of worker-seconds per file = a + b / files_per_task (a: work, b: overhead)."""
    import numpy as np

    pts = [p for p in points if p["files_per_task"] * workers <= n_files / 2]  # no tail effect
    if len(pts) < 3:
        return None
    x = np.array([1 / p["files_per_task"] for p in pts])
    y = np.array([p["seconds"] * workers / n_files for p in pts])
    b, a = np.polyfit(x, y, 1)
    return {"work_ms_per_file": a * 1e3, "overhead_ms_per_task": b * 1e3}


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for stage, pts in report["curve"].items():
        if pts:
            ax.plot(
                [p["files_per_task"] for p in pts],
                [p["files_per_s"] for p in pts],
                "o-",
                label=f"{stage} ({report['workers']} workers)",
            )
    rule = report.get("rule_files_per_task")
    if rule:
        ax.axvline(rule, color="grey", ls="--", label=f"rule for {report['files']:,} files: {rule}")
    ax.set_xscale("log")
    ax.set_xlabel("files per task (partition size)")
    ax.set_ylabel("files/s")
    ov = report["overhead"]
    ax.set_title(
        f"partition-size curve; empty-task overhead {ov.get('pipeline_worker_ms', 0):.1f} worker-ms/task (pipeline)"
    )
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--sizes", default="1,2,5,10,25,50,100,250,500,1000")
    p.add_argument("--tasks", type=int, default=2000, help="empty tasks for the overhead")
    p.add_argument("--work", type=Path, default=RESULTS / "work")
    p.add_argument("--publish", action="store_true")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    src = archive(args.work, args.files, "small")
    files = list_files(src)
    warm_cache(files)
    sizes = [int(s) for s in args.sizes.split(",")]

    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        client.run(warm_worker)
        print("per-task overhead (empty tasks):", flush=True)
        overhead = task_overhead(client, args.workers, args.tasks)
        for k, v in overhead.items():
            print(f"  {k:<22} {v:6.2f} ms", flush=True)
        print(f"partition-size curve on {len(files):,} small-pixel files:", flush=True)
        points = curve(client, files, sizes, args.work)
    rule = None
    try:
        from deid_batch.stages.pipeline import partition_size

        rule = partition_size(len(files))
    except ImportError:
        pass
    report = {
        "files": len(files),
        "workers": args.workers,
        "overhead": overhead,
        "curve": points,
        "fit_apply": fit(points["apply"], len(files), args.workers),
        "fit_scan": fit(points["scan"], len(files), args.workers),
        "rule_files_per_task": rule,
        "rule_at": {str(n): partition_size(n) for n in (1_000, 10_000, 100_000, 10_000_000)} if rule else None,
    }
    print(json.dumps({k: report[k] for k in ("fit_apply", "fit_scan", "rule_at")}, indent=1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    outputs = [RESULTS / "partitions.json", RESULTS / "partitions.png"]
    outputs[0].write_text(json.dumps(report, indent=2))
    chart(report, outputs[1])
    if args.publish:
        for f in outputs:
            shutil.copy(f, HERE / f.name)
    print("wrote " + ", ".join(map(str, outputs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Memory at scale (issues 3, 12): worker peak RSS from 1,000 to 1,000,000 files; client bytes per file.

    python benchmarks/memory.py [--sizes 1000,10000,100000,1000000] [--workers 2] [--publish]

Method: one real 1,000-file small-pixel archive (``deid_batch.synth``, seed 0) is *hard-linked*
into link farms of 1,000, 10,000, 100,000 and 1,000,000 paths (``farm-N/c0000/<archive tree>``,
``farm-N/c0001/...``). Every path is a distinct regular file to deid-batch (its own output, its
own manifest row) while the disk holds the 1,000 inputs once; outputs (about 4 KB each) are
deleted after each run. For each size, ``deid-batch scan`` (to Parquet) and ``deid-batch apply``
(deid default recipe) run end-to-end through the CLI with ``--workers`` processes, and the RSS of
the process tree is sampled every 50 ms: the CLI process (client and scheduler) and its largest
descendant (a dask worker). If the CLI is not installed, the Python API is used.

Reports worker peak RSS growth from the smallest to the largest run (target: within 10%), the
client's bytes per file (least-squares slope of client peak RSS over files; target: at most 200
bytes per file) and its projection to 10 million files (target: < 2 GB). A link farm costs one
directory entry and inode reference per path (~100 MB of disk per million paths); a million-file
apply runs about 40 minutes on 2 workers. deid 0.4.13 itself is measured on 250 and 1,000 files for
comparison (its per-file cache). Writes ``benchmarks/results/memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    HERE,
    PYTHON,
    RESULTS,
    archive,
    clean,
    last_json,
    list_files,
    run_sampled,
    warm_cache,
)

TEN_MILLION = 10_000_000
#: targets of issue 12: client growth per file and the projection at 10 million files
TARGET_BYTES_PER_FILE = 200
TARGET_10M_BYTES = 2e9


def link_farm(work: Path, base: Path, base_files: list[str], n: int) -> Path:
    """``work/farm-n``: n hard links to the base archive's files, in copies of its tree."""
    farm = work / f"farm-{n}"
    done = work / f"farm-{n}.done"
    if done.exists():
        return farm
    shutil.rmtree(farm, ignore_errors=True)
    made: set[str] = set()
    for i in range(n):
        copy, idx = divmod(i, len(base_files))
        src = base_files[idx]
        dest = os.path.join(farm, f"c{copy:04d}", os.path.relpath(src, base))
        parent = os.path.dirname(dest)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        os.link(src, dest)
    done.write_text(str(n))
    return farm


def _cli() -> str | None:
    exe = shutil.which("deid-batch") or str(Path(PYTHON).parent / "deid-batch")
    if not Path(exe).exists():
        return None
    probe = subprocess.run([exe, "--help"], capture_output=True, text=True)
    return exe if probe.returncode == 0 and "apply" in probe.stdout else None


def run_one(verb: str, farm: Path, out: Path, workers: int, exe: str | None, partition: int | None) -> dict[str, Any]:
    clean(out)
    if exe is not None:
        if verb == "scan":
            out.mkdir(parents=True)
            cmd = [exe, "scan", str(farm), "--ids", str(out / "ids.parquet")]
        else:
            cmd = [exe, "apply", str(farm), "--out", str(out), "--recipe", "dicom"]
        cmd += ["--workers", str(workers), "--no-progress", "-q"]
        if partition and verb == "apply":
            cmd += ["--partition-size", str(partition)]
        method = "cli"
    else:
        listing = out.parent / "memory-files.txt"
        listing.write_text("\n".join(list_files(farm)) + "\n")
        out.mkdir(parents=True)
        cmd = [
            PYTHON,
            str(HERE / "stages.py"),
            f"batch-{verb}",
            "--list",
            str(listing),
            "--src",
            str(farm),
            "--out",
            str(out),
            "--workers",
            str(workers),
        ]
        method = "api"
    proc, wall, peaks = run_sampled(cmd)
    clean(out)
    entry: dict[str, Any] = {
        "verb": verb,
        "method": method,
        "wall_seconds": wall,
        "exit": proc.returncode,
        "rss_client": peaks.root,
        "rss_worker": peaks.child_max,
        "rss_total": peaks.total,
        "series": peaks.series,
    }
    # worker RSS over the run (at 25/50/75/100% of its samples): flat within a run means the
    # growth between runs comes from the partition size (a bigger batch held), not a leak
    series = [x[2] for x in peaks.series]
    if len(series) >= 8:
        entry["worker_rss_quartiles"] = [series[len(series) * q // 4 - 1] for q in (1, 2, 3, 4)]
    if proc.returncode != 0:
        entry["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    if method == "api":
        result = last_json(proc.stdout) or {}
        entry["available"] = result.get("available")
    return entry


def deid_growth(work: Path, src: Path, files: list[str]) -> dict[str, Any]:
    """deid 0.4.13's peak RSS after 250 ... 2,000 files (distinct paths), and its slope."""
    sizes = [n for n in (250, 500, 1000, 2000) if n <= len(files)]
    peaks_by_n: dict[str, int] = {}
    for n in sizes:
        listing = work / "memory-deid.txt"
        listing.write_text("\n".join(files[:n]) + "\n")
        dest = work / "memory-deid-out"
        clean(dest)
        dest.mkdir(parents=True)
        cmd = [PYTHON, str(HERE / "stages.py"), "deid", "--list", str(listing)]
        proc, _wall, peaks = run_sampled([*cmd, "--src", str(src), "--out", str(dest)])
        result = last_json(proc.stdout) or {}
        clean(dest)
        peaks_by_n[str(n)] = max(peaks.root, int(result.get("maxrss", 0)))
    b, a = slope(sizes, [peaks_by_n[str(n)] for n in sizes])
    return {"peak_rss": peaks_by_n, "bytes_per_file": b, "projection_10M_bytes": a + b * TEN_MILLION}


def slope(xs: list[int], ys: list[int]) -> tuple[float, float]:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return b, my - b * mx


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000,100000,1000000")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--verbs", default="apply,scan")
    p.add_argument("--skip-deid", action="store_true")
    p.add_argument(
        "--partition-size",
        type=int,
        default=None,
        help="fixed files per task for apply (default: the pipeline's rule)",
    )
    p.add_argument("--work", type=Path, default=RESULTS / "work")
    p.add_argument("--publish", action="store_true")
    args = p.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    args.work.mkdir(parents=True, exist_ok=True)
    base = archive(args.work, 1000, "small")
    base_files = list_files(base)
    warm_cache(base_files)
    exe = _cli()
    print(
        f"method: {'deid-batch CLI' if exe else 'Python API'}, {args.workers} workers, "
        f"hard-link farms over {len(base_files)} real files",
        flush=True,
    )
    runs: list[dict[str, Any]] = []
    for n in sizes:
        t0 = time.perf_counter()
        farm = link_farm(args.work, base, base_files, n)
        print(f"  farm of {n:,} links ready ({time.perf_counter() - t0:.1f} s)", flush=True)
        for verb in args.verbs.split(","):
            entry = run_one(verb, farm, args.work / "memory-out", args.workers, exe, args.partition_size)
            entry["files"] = n
            entry["files_per_s"] = n / entry["wall_seconds"]
            runs.append(entry)
            print(
                f"  {verb:<5} {n:>7,} files: {entry['wall_seconds']:6.1f} s "
                f"({entry['files_per_s']:,.0f} files/s end-to-end), client peak "
                f"{entry['rss_client'] / 2**20:,.0f} MiB, worker peak "
                f"{entry['rss_worker'] / 2**20:,.0f} MiB (worker at 25/50/75/100% of the run: "
                f"{'/'.join(f'{x / 2**20:.0f}' for x in entry.get('worker_rss_quartiles', []))}"
                " MiB)" + (f"  ERROR {entry['error']}" if entry.get("error") else ""),
                flush=True,
            )
    summary: dict[str, Any] = {}
    for verb in args.verbs.split(","):
        rs = [r for r in runs if r["verb"] == verb and r["exit"] == 0]
        if len(rs) < 2:
            continue
        first, last = rs[0], rs[-1]
        growth = last["rss_worker"] / first["rss_worker"] - 1
        b, a = slope([r["files"] for r in rs], [r["rss_client"] for r in rs])
        projection = a + b * TEN_MILLION
        summary[verb] = {
            "worker_peak_first": first["rss_worker"],
            "worker_peak_last": last["rss_worker"],
            "worker_growth": growth,
            "worker_flat_met": abs(growth) <= 0.10,
            "client_bytes_per_file": b,
            "client_intercept": a,
            "client_projection_10M_bytes": projection,
            "client_bytes_per_file_met": b <= TARGET_BYTES_PER_FILE,
            "client_fits_2GB_met": projection < TARGET_10M_BYTES,
        }
        print(
            f"{verb}: worker peak {first['rss_worker'] / 2**20:.0f} -> "
            f"{last['rss_worker'] / 2**20:.0f} MiB ({growth:+.1%}, target within 10%: "
            f"{'MET' if abs(growth) <= 0.10 else 'MISSED'}); client {b:,.0f} bytes/file (target <= "
            f"{TARGET_BYTES_PER_FILE}: {'MET' if b <= TARGET_BYTES_PER_FILE else 'MISSED'}) -> "
            f"{projection / 1e9:.2f} GB at 10M files (target < 2 GB: "
            f"{'MET' if projection < TARGET_10M_BYTES else 'MISSED'})"
        )
    deid = None
    if not args.skip_deid:
        farm = link_farm(args.work, base, base_files, 10_000)
        deid = deid_growth(args.work, farm, list_files(farm)[:2000])
        print(
            f"deid 0.4.13: {deid['bytes_per_file'] / 1024:,.0f} KiB/file -> "
            f"{deid['projection_10M_bytes'] / 1e9:,.0f} GB at 10M files"
        )
    report = {
        "method": "cli" if exe else "api",
        "workers": args.workers,
        "base_files": len(base_files),
        "runs": runs,
        "summary": summary,
        "deid": deid,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps(report, indent=2))
    if args.publish:
        shutil.copy(RESULTS / "memory.json", HERE / "memory.json")
    print(f"wrote {RESULTS / 'memory.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Client-side memory of the pipeline machinery at scale, without the per-file worker work.

    python benchmarks/client_probe.py FARM [--workers 2]

Runs, in this process, what the client of ``deid-batch apply`` does per file: discovery into a
:class:`~deid_batch.stages.discover.PathList` (spill file), the sliding-window submission of every
partition to a real LocalCluster (each task gets its slice of paths and returns a manifest-part
count, as ``apply_and_record`` does) and the summary merge; prints the peak RSS of this process
(``ru_maxrss``) and the paths count as JSON. The worker function does no DICOM work, so a
million-path farm runs in minutes: the full end-to-end figures are benchmarks/memory.py's.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections import Counter
from typing import Any

from deid_batch.stages.discover import discover_paths
from deid_batch.stages.manifest import Summary
from deid_batch.stages.pipeline import open_executor, partition_size, run_partitions


def count_partition(paths: list[str], config: Any, partition: int) -> Summary:
    """(worker) the counts a partition sends back: one 'written' per path."""
    return Summary(total=len(paths), by_status=Counter({"written": len(paths)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("farm")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    with open_executor(workers=args.workers) as ex:
        started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        paths = discover_paths(args.farm)
        discovered = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        summary = Summary()
        for _i, part, _n in run_partitions(ex, count_partition, paths, None, size=partition_size(len(paths))):
            summary.merge(part)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"files": len(paths), "total": summary.total, "rss_start": base, "rss_cluster": started,
                      "rss_discovered": discovered, "rss_peak": peak, "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()

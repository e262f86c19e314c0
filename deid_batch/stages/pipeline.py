"""Pipeline wiring: the one module that imports dask.

discover -> scan (workers) -> identifiers table -> mapping join -> apply (workers) -> manifest.
This module only partitions work with a dask bag, ships partitions to workers through the chosen
scheduler and yields partition results back as they finish; the stage modules hold the work.

Partitioning rule: a partition carries ``ceil(n / 64)`` files, at least 50 and at most 500 (see
:func:`partition_size`; a run of fewer than 50 files is one partition). The measured per-task cost
is 17-30 worker-ms against 0.3-3 ms of work per file: 500 files keep the scheduling share at a few
percent on big runs, 64 partitions keep every worker busy with a short tail on mid-size runs, and
the 50-file floor keeps small runs off the steep part of the partition-size curve (-9% at 50 files
per task, -14% at 25, benchmarks/SCALING.md). The size depends on the number of files only, never
on the number of workers, so a resumed run sees the same partitions. At most
four partitions per worker are in flight at a time (a sliding window), so neither the scheduler
nor the client ever holds more than a few thousand files' worth of tasks.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import dask
import dask.bag as db

from deid_batch.errors import ConfigError

__all__ = ["Executor", "open_executor", "partition_size", "run_partitions"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_PARTITION = 500
MIN_PARTITION = 50
MIN_PARTITIONS = 64
IN_FLIGHT_PER_WORKER = 4


def partition_size(n_files: int, requested: int | None = None) -> int:
    """Files per partition for ``n_files`` inputs (``requested`` overrides the rule).

    ``ceil(n_files / 64)`` clamped to [50, 500]: a function of ``n_files`` only, so ``--resume``
    sees the same partitions whatever the cluster.
    """
    if requested:
        return max(1, int(requested))
    return max(MIN_PARTITION, min(MAX_PARTITION, math.ceil(n_files / MIN_PARTITIONS)))


@dataclass
class Executor:
    """Where partitions run: a dask.distributed client, or dask's synchronous scheduler."""

    client: Any = None  # distributed.Client or None for the synchronous scheduler
    description: str = "synchronous scheduler (in this process)"
    dashboard: str | None = None

    @property
    def nworkers(self) -> int:
        if self.client is None:
            return 1
        return max(1, len(self.client.scheduler_info().get("workers", {})))


@contextlib.contextmanager
def open_executor(client: Any = None, *, workers: int | None = None,
                  scheduler: str | None = None) -> Iterator[Executor]:
    """Use ``client``; or connect to ``scheduler``; or start a LocalCluster of ``workers`` processes.

    ``client="sync"`` or ``workers=0`` (and no client, no scheduler) run in this process on dask's
    synchronous scheduler.
    """
    if client is not None and client != "sync":
        yield Executor(client, f"dask client {client.scheduler.address}", client.dashboard_link)
        return
    if client == "sync" or (scheduler is None and not workers):
        yield Executor()
        return
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            c = Client(scheduler, timeout=dask.config.get("distributed.comm.timeouts.connect", "30s"))
        except (OSError, TimeoutError) as exc:
            raise ConfigError(
                f"cannot connect to the dask scheduler at {scheduler} ({type(exc).__name__}); "
                "check the address (e.g. tcp://host:8786) and that `dask scheduler` is running"
            ) from None
        try:
            yield Executor(c, f"dask scheduler {scheduler}", c.dashboard_link)
        finally:
            c.close()
        return
    cluster = LocalCluster(n_workers=int(workers or 1), threads_per_worker=1, processes=True,
                           dashboard_address=":0")
    c = Client(cluster)
    try:
        yield Executor(c, f"local cluster of {workers} worker processes", c.dashboard_link)
    finally:
        c.close()
        cluster.close()


def _one_by_one(executor: Executor, func: Callable[..., T], chunk: Sequence[Any], config: Any, i: int,
                on_lost: Callable[[int, Sequence[Any], BaseException], T],
                combine: Callable[[list[T]], T]) -> T:
    """Re-run a lost partition one item per task, so only the item that kills workers is lost.

    Tasks go one at a time: a task that is merely queued on a dying worker shares the blame.
    """
    results: list[T] = []
    for item in chunk:
        future = executor.client.submit(func, [item], config, i, pure=False)
        try:
            results.append(future.result())
        except Exception as exc:  # noqa: BLE001 - this item keeps killing its worker
            results.append(on_lost(i, [item], exc))
        future.release()
    return combine(results)


def run_partitions(executor: Executor, func: Callable[..., T], items: Sequence[Any], config: Any,
                   *, size: int, skip: frozenset[int] = frozenset(),
                   on_lost: Callable[[int, Sequence[Any], BaseException], T] | None = None,
                   combine: Callable[[list[T]], T] | None = None,
                   ) -> Iterator[tuple[int, T, int]]:
    """Run ``func(partition_items, config, index)`` over a dask bag of ``items``.

    Yields ``(partition index, result, number of items)`` as partitions finish (in order on the
    synchronous scheduler). Partitions in ``skip`` are not run. A partition whose task fails
    (its worker was killed more often than the scheduler retries, e.g. by one file that crashes
    the process) is re-run one item per task when ``combine`` is given, so only the guilty items
    are passed to ``on_lost``; without ``combine`` the whole partition is.
    """
    if not items:
        return
    bag = db.from_sequence(items, partition_size=size)
    parts = bag.to_delayed()
    chunks = [items[i * size:(i + 1) * size] for i in range(len(parts))]
    todo = [i for i in range(len(parts)) if i not in skip]
    # The config (compiled recipe) is one graph node shared by every task: dask neither walks it
    # per partition nor ships a copy with each task.
    shared = dask.delayed(config, traverse=False)
    tasks = {i: dask.delayed(func, pure=False)(parts[i], shared, i) for i in todo}
    if executor.client is None:
        for i in todo:
            (result,) = dask.compute(tasks[i], scheduler="sync")
            yield i, result, len(chunks[i])
        return
    from distributed import as_completed

    # A sliding window of partitions in flight: the scheduler never holds the whole archive's
    # graph (10 million paths would be gigabytes there), yet every worker always has work queued.
    window = max(IN_FLIGHT_PER_WORKER * executor.nworkers, 4)
    waiting = iter(todo)
    index: dict[str, int] = {}
    running = as_completed()

    def submit_next() -> None:
        i = next(waiting, None)
        if i is not None:
            future = executor.client.compute(tasks[i])
            index[future.key] = i
            running.add(future)

    for _ in range(window):
        submit_next()
    for future in running:
        i = index.pop(future.key)
        submit_next()
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 - a lost partition must still be accounted for
            if on_lost is None:
                raise
            if combine is not None and len(chunks[i]) > 1:
                logger.warning("partition %d lost its worker repeatedly (%s); re-running its files "
                               "one by one", i, type(exc).__name__)
                result = _one_by_one(executor, func, chunks[i], config, i, on_lost, combine)
            else:
                logger.error("partition %d failed on the cluster (%s); its files are marked failed",
                             i, type(exc).__name__)
                result = on_lost(i, chunks[i], exc)
        future.release()
        yield i, result, len(chunks[i])

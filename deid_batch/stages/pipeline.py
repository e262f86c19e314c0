"""Pipeline wiring: the one module that imports dask.

discover -> scan (workers) -> identifiers table -> mapping join -> apply (workers) -> manifest.
This module only cuts the work into partitions (each built when it is submitted), ships them to
workers through the chosen scheduler and yields partition results back as they finish; the stage
modules hold the work.

Partitioning rule: a partition carries ``ceil(n / 32)`` files, at least 100 and at most 500 (see
:func:`partition_size`; a run of fewer than 100 files is one partition). The measured per-task
cost is about 25 worker-ms and 10 client-ms against 0.3-3 ms of work per file: 500 files keep the
scheduling share at a few percent on big runs, 32 partitions keep every worker of a small cluster
busy with a short tail on mid-size runs, and the 100-file floor keeps small runs off the steep
part of the partition-size curve (benchmarks/SCALING.md). The size depends on the number of files
only, never on the number of workers; ``--resume`` takes the interrupted run's size. At most
four partitions per worker are in flight at a time (a sliding window), so neither the scheduler
nor the client ever holds more than a few thousand files' worth of tasks.

Where partitions run (:func:`open_executor`): this process (dask's synchronous scheduler), a
LocalCluster of worker processes, an existing scheduler, or a batch system through dask-jobqueue
(:class:`JobQueue`: SLURM or PBS jobs, each running worker processes that connect back to a
scheduler in this process; settings from dask's ``jobqueue.slurm`` / ``jobqueue.pbs`` config).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import shutil
import signal
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, TypeVar

import dask
import pyarrow as pa
from distributed.diagnostics.plugin import WorkerPlugin

from deid_batch.errors import ConfigError

__all__ = ["JOBQUEUE_SYSTEMS", "MAX_WORKERS_PER_CORE", "Executor", "JobQueue", "check_jobqueue", "jobqueue_cluster",
           "jobqueue_cluster_class", "local_workers", "open_executor", "partition_size", "run_partitions"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_PARTITION = 500
MIN_PARTITION = 100
MIN_PARTITIONS = 32
IN_FLIGHT_PER_WORKER = 4
#: A local cluster gets at most this many worker processes per core: the work is CPU-bound, so
#: more processes only compete for the cores (64 workers on 2 cores: 20 files took 333 s).
MAX_WORKERS_PER_CORE = 2


def local_workers(workers: int | None) -> int | None:
    """The number of local worker processes to start for ``workers``.

    Negative numbers are refused (:class:`ConfigError`); more than :data:`MAX_WORKERS_PER_CORE`
    per core are capped, with a warning.
    """
    if workers is None:
        return None
    if workers < 0:
        raise ConfigError(f"workers={workers}: give 0 (run in this process) or a number of worker "
                          "processes, e.g. the number of cores")
    cores = os.cpu_count() or 1
    cap = MAX_WORKERS_PER_CORE * cores
    if workers > cap:
        logger.warning("%d worker processes asked for on %d cores: starting %d (at most %d per core; "
                       "more only compete for the cores)", workers, cores, cap, MAX_WORKERS_PER_CORE)
        return cap
    return workers


def partition_size(n_files: int, requested: int | None = None) -> int:
    """Files per partition for ``n_files`` inputs (``requested`` overrides the rule).

    ``ceil(n_files / 32)`` clamped to [100, 500]: a function of ``n_files`` only (``--resume``
    takes the interrupted run's size from its manifest folder). Each task costs dask about 10 ms
    of client and 25 ms of worker CPU (benchmarks/SCALING.md): 157 files per task at 5,000 files
    ran apply 15% and scan 15-30% faster than 79 did on 2 workers.
    """
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"partition size {requested}: give at least 1 file per partition")
        return int(requested)
    return max(MIN_PARTITION, min(MAX_PARTITION, math.ceil(n_files / MIN_PARTITIONS)))


#: ``--cluster`` names of the batch systems, with their dask-jobqueue class and submit command.
JOBQUEUE_SYSTEMS = {"slurm": ("SLURMCluster", "sbatch", "SLURM"), "pbs": ("PBSCluster", "qsub", "PBS")}


@dataclass(frozen=True)
class JobQueue:
    """Run on a batch system through dask-jobqueue: ``jobs`` fixed jobs, or ``adapt=(min, max)`` jobs.

    Each job runs ``processes`` dask worker processes (one thread each unless the config says
    otherwise) with the settings of dask's ``jobqueue.<system>`` config (queue, account, cores,
    memory, walltime, job-script-prologue, ...; see ``configs/jobqueue.yaml``). Without ``jobs``
    and ``adapt``, one job is submitted.
    """

    system: str
    jobs: int | None = None
    adapt: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.system not in JOBQUEUE_SYSTEMS:
            raise ConfigError(f"--cluster {self.system!r} is not a known batch system; use one of "
                              f"{', '.join(sorted(JOBQUEUE_SYSTEMS))} (or --workers / --scheduler)")
        if self.jobs is not None and self.adapt is not None:
            raise ConfigError("give --jobs N or --adapt MIN:MAX, not both")
        if self.jobs is not None and self.jobs < 1:
            raise ConfigError(f"--jobs {self.jobs}: give at least 1 job")
        if self.adapt is not None:
            low, high = self.adapt
            if not 0 <= low <= high or high < 1:
                raise ConfigError(f"--adapt {low}:{high}: give MIN:MAX jobs with 0 <= MIN <= MAX and MAX >= 1, "
                                  "e.g. --adapt 0:20")


@dataclass
class Executor:
    """Where partitions run: a dask.distributed client, or dask's synchronous scheduler.

    ``planned_workers`` is the number of workers a batch-system cluster will have (its jobs may
    still be queued): the in-flight window is sized for them, not for those connected so far.
    """

    client: Any = None  # distributed.Client or None for the synchronous scheduler
    description: str = "synchronous scheduler (in this process)"
    dashboard: str | None = None
    planned_workers: int = 0

    @property
    def nworkers(self) -> int:
        if self.client is None:
            return 1
        return max(1, self.planned_workers, len(self.client.scheduler_info().get("workers", {})))


def jobqueue_cluster_class(system: str) -> Any:
    """The dask-jobqueue cluster class of ``system`` (``slurm``, ``pbs``); a clear error without it."""
    JobQueue(system)  # validates the name
    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigError(f"--cluster {system} needs dask-jobqueue, which is not installed: "
                          "pip install 'deid-batch[hpc]'") from None
    return getattr(dask_jobqueue, JOBQUEUE_SYSTEMS[system][0])


def _quiet_worker_logs() -> None:
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


class _QuietWorkerLogs(WorkerPlugin):
    """Worker plugin (setup runs in each local worker process): dask's own worker logs stay quiet."""

    def setup(self, worker: Any) -> None:
        _quiet_worker_logs()


#: dask's "logs for developers" (every message a comm sent, every transition, every event):
#: 1,000 entries each by default. Each recent message of the scheduler's link to a worker holds
#: the tasks it carried, paths included (~100 KB for a 500-file partition), so the client of a
#: LocalCluster or dask-jobqueue cluster (the scheduler runs in it) kept the last 1,000
#: partitions' paths per worker: 210 MB at 1M files on 2 workers (benchmarks/client_probe.py).
#: deid-batch keeps none of them while it runs.
DEVELOPER_LOG_LENGTH = {"distributed.admin.low-level-log-length": 0}
#: The local clusters deid-batch starts run their workers without dask's statistical profiler: it
#: samples the task's stack every 10 ms on the worker's event-loop thread, holding the GIL the task
#: needs (0.3 s of a 9 s one-worker apply of 5,000 small files on that thread, and the task itself
#: 7-10% slower). A cluster the user starts (``client=``, ``--scheduler``) keeps its own settings.
LOCAL_CLUSTER_CONFIG = {"distributed.worker.profile.enabled": False}


@contextlib.contextmanager
def open_executor(client: Any = None, *, workers: int | None = None, scheduler: str | None = None,
                  cluster: JobQueue | str | None = None) -> Iterator[Executor]:
    """Use ``client``; or connect to ``scheduler``; or submit batch jobs (``cluster``, a
    :class:`JobQueue` or ``"slurm"``/``"pbs"``); or start a LocalCluster of ``workers`` processes.

    ``client="sync"`` or ``workers=0`` (and no client, no scheduler, no cluster) run in this
    process on dask's synchronous scheduler. A batch-system cluster's jobs are cancelled when the
    block ends. Clusters and clients started here keep no developer logs
    (:data:`DEVELOPER_LOG_LENGTH`), so the scheduler does not hold finished partitions' paths.
    """
    with dask.config.set(DEVELOPER_LOG_LENGTH), \
            _open_executor(client, workers=workers, scheduler=scheduler, cluster=cluster) as ex:
        yield ex


@contextlib.contextmanager
def _open_executor(client: Any, *, workers: int | None, scheduler: str | None,
                   cluster: JobQueue | str | None) -> Iterator[Executor]:
    if client is not None and client != "sync":
        yield Executor(client, f"dask client {client.scheduler.address}", client.dashboard_link)
        return
    if cluster is not None:
        spec = JobQueue(cluster) if isinstance(cluster, str) else cluster
        if scheduler or workers:
            raise ConfigError(f"--cluster {spec.system} starts its own workers: leave out --workers and --scheduler")
        with _jobqueue_executor(spec) as ex:
            yield ex
        return
    workers = local_workers(workers)
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
    with _workers_ignore_sigint(), dask.config.set(LOCAL_CLUSTER_CONFIG):  # read when the workers start
        # The worker processes' own dask logs (tracebacks of connections torn down by an
        # interrupt or a lost peer) stay out of the terminal: every failure reaches the client
        # as a task result, and the client reports it (no traceback, no header value).
        local = LocalCluster(n_workers=int(workers or 1), threads_per_worker=1, processes=True,
                             dashboard_address=":0", silence_logs=logging.CRITICAL)
    c = Client(local)
    c.register_plugin(_QuietWorkerLogs(), name="deid-batch-quiet-worker-logs")
    here = logging.getLogger("distributed")
    level = here.level
    try:
        yield Executor(c, f"local cluster of {workers} worker processes", c.dashboard_link)
    except KeyboardInterrupt:
        # Ctrl-C / SIGTERM: the shutdown cancels running tasks and may have to kill slow workers;
        # none of that is news to the user (the CLI says how to continue), so it is not logged.
        _quiet_workers(c)
        here.setLevel(logging.ERROR)
        raise
    finally:
        try:
            c.close()
            local.close()
        finally:
            here.setLevel(level)


@contextlib.contextmanager
def _workers_ignore_sigint() -> Iterator[None]:
    """Start worker processes with SIGINT ignored (they inherit it).

    Ctrl-C in a terminal reaches every process of the foreground group: without this each worker
    dies with its own KeyboardInterrupt traceback while the client is still shutting them down.
    The client (this process) handles the interrupt and closes the cluster.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _silence_cancelled_tasks() -> None:
    """(On a worker) tasks cancelled by the shutdown are expected: do not log each one."""
    logging.getLogger("distributed.worker.state_machine").setLevel(logging.ERROR)
    logging.getLogger("distributed.worker").setLevel(logging.ERROR)


def _quiet_workers(client: Any) -> None:
    """Before an interrupted run closes its local cluster, keep the shutdown from logging every
    cancelled task (the user pressed Ctrl-C; the CLI says how to continue)."""
    with contextlib.suppress(Exception):
        client.run(_silence_cancelled_tasks, wait=True)


def jobqueue_cluster(system: str) -> Any:
    """Start the dask-jobqueue cluster object of ``system`` from dask's ``jobqueue.<system>`` config.

    Its scheduler runs in this process; no job is submitted yet (``cluster.job_script()`` shows
    the script each job will run). Where the config leaves ``processes`` unset, each job runs one
    single-threaded worker process per core (pydicom's work holds the GIL). The dashboard gets a
    free port unless ``scheduler-options`` names one (a login node is shared).
    """
    cls = jobqueue_cluster_class(system)
    conf = f"jobqueue.{system}"
    # cores, memory and processes are pinned: dask-jobqueue re-reads them (and raises without
    # them) whenever it makes a job, and the cluster may outlive the config it was started with
    kwargs: dict[str, Any] = {k: dask.config.get(f"{conf}.{k}", None) for k in ("cores", "memory", "processes")}
    if kwargs["cores"] and kwargs["processes"] is None:
        kwargs["processes"] = int(kwargs["cores"])
    options = dict(dask.config.get(f"{conf}.scheduler-options", None) or {})
    options.setdefault("dashboard_address", ":0")
    kwargs["scheduler_options"] = options
    # the job's workers run without the statistical profiler, as a LocalCluster's (the user's
    # prologue lines first; env-extra is the older name dask-jobqueue still reads)
    prologue = dask.config.get(f"{conf}.job-script-prologue", None) or \
        dask.config.get(f"{conf}.env-extra", None) or []
    exports = [f"export {_env_name(k)}={v}" for k, v in LOCAL_CLUSTER_CONFIG.items()]
    kwargs["job_script_prologue"] = [*prologue, *exports]
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"--cluster {system}: the dask-jobqueue settings are incomplete "
                          f"({_first_line(exc)}); set {conf}.cores and {conf}.memory (and queue, account, "
                          "walltime) in configs/jobqueue.yaml and pass it with --dask-config, or put it in "
                          "~/.config/dask/") from None


def _env_name(key: str) -> str:
    """The environment variable dask reads ``key`` from (``DASK_`` + dots as ``__``)."""
    return "DASK_" + key.replace(".", "__").replace("-", "_").upper()


def check_jobqueue(cluster: JobQueue | str | None) -> JobQueue | None:
    """Refuse, before anything is written, a batch-system run that cannot start (None: not one).

    dask-jobqueue missing, the submit command (``sbatch``, ``qsub``) not on PATH, or no
    ``cores`` / ``memory`` in the ``jobqueue.<system>`` config: a :class:`ConfigError` with the fix.
    """
    if cluster is None:
        return None
    spec = JobQueue(cluster) if isinstance(cluster, str) else cluster
    jobqueue_cluster_class(spec.system)
    _, submit, name = JOBQUEUE_SYSTEMS[spec.system]
    if shutil.which(submit) is None:
        raise ConfigError(f"--cluster {spec.system}: `{submit}` was not found on PATH; run deid-batch on a "
                          f"{name} login node (or load its module, e.g. `module load {spec.system}`), or use "
                          "--workers / --scheduler")
    conf = f"jobqueue.{spec.system}"
    unset = [k for k in ("cores", "memory") if dask.config.get(f"{conf}.{k}", None) in (None, "", 0)]
    if unset:
        raise ConfigError(f"--cluster {spec.system}: {' and '.join(f'{conf}.{k}' for k in unset)} not set; give "
                          "the cores and memory of one job (and queue, account, walltime) in "
                          "configs/jobqueue.yaml and pass it with --dask-config, or put it in ~/.config/dask/")
    return spec


@contextlib.contextmanager
def _jobqueue_executor(spec: JobQueue) -> Iterator[Executor]:
    """A dask-jobqueue cluster (scheduler in this process, workers in batch jobs) and its client."""
    from distributed import Client

    check_jobqueue(spec)
    _, submit, name = JOBQUEUE_SYSTEMS[spec.system]
    jq = jobqueue_cluster(spec.system)
    try:
        processes = int(jq._dummy_job.worker_processes)
        if spec.adapt is not None:
            low, high = spec.adapt
            if low:
                _submit_jobs(jq, low, spec.system, submit)
            jq.adapt(minimum_jobs=low, maximum_jobs=high, Adaptive=_whole_jobs_adaptive())
            jobs_text, planned = f"adaptive, {low} to {high} jobs", high * processes
        else:
            jobs = spec.jobs or 1
            _submit_jobs(jq, jobs, spec.system, submit)
            jobs_text, planned = f"{jobs} job{'s' if jobs > 1 else ''}", jobs * processes
        c = Client(jq)
    except BaseException:
        jq.close()
        raise
    try:
        yield Executor(c, f"{name} cluster via dask-jobqueue ({jobs_text} of {processes} worker process"
                       f"{'es' if processes > 1 else ''}; queued jobs start when the batch system allows)",
                       c.dashboard_link, planned_workers=planned)
    finally:
        c.close()
        jq.close()  # cancels the jobs (scancel / qdel)


def _whole_jobs_adaptive() -> Any:
    """dask's Adaptive, with targets rounded up to whole jobs.

    A job runs ``processes`` workers; a target below that (dask asks for 1 worker while none has
    connected) makes Adaptive submit a job and cancel it again every few seconds, so none ever starts.
    """
    from distributed.deploy.adaptive import Adaptive

    class WholeJobs(Adaptive):
        async def target(self) -> int:
            n = int(await super().target())
            cluster: Any = self.cluster
            per_job = max(1, int(cluster._dummy_job.worker_processes))
            return math.ceil(n / per_job) * per_job

    return WholeJobs


def _submit_jobs(jq: Any, jobs: int, system: str, submit: str) -> None:
    """Submit ``jobs`` jobs now, so a refused submission (bad queue, account) is an error, not a hang.

    ``scale()`` would submit them in a background callback whose failure is only logged (and the
    run would wait for workers forever); the specs are added here and submitted in the foreground.
    """
    while len(jq.worker_spec) < jobs:
        jq.worker_spec.update(jq.new_worker_spec())
    try:
        jq.sync(jq._correct_state)
    except RuntimeError as exc:
        from distributed.core import Status

        for job in jq.workers.values():  # the refused jobs never started: let close() pass them by
            if getattr(job, "job_id", None) is None:
                job.status = Status.failed
        detail = str(exc).split("stderr:", 1)[-1].strip().splitlines()
        raise ConfigError(f"--cluster {system}: `{submit}` refused the job"
                          f"{': ' + detail[-1] if detail else ''}; check the queue/partition, account, cores, "
                          f"memory and walltime in the jobqueue.{system} settings") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class Ranged(Protocol):
    """Items read by range (:class:`deid_batch.stages.discover.PathList`: paths in a spill file)."""

    def __len__(self) -> int: ...

    def take_range(self, start: int, stop: int) -> list[Any]: ...


Items: TypeAlias = "Sequence[Any] | pa.Array | pa.ChunkedArray | Ranged"


def _slice(items: Items, start: int, stop: int) -> list[Any]:
    """``items[start:stop]`` as a list: built when the partition is submitted, dropped when it is done."""
    if isinstance(items, (pa.Array, pa.ChunkedArray)):
        return list(items.slice(start, stop - start).to_pylist())
    if hasattr(items, "take_range"):
        return items.take_range(start, stop)
    return list(items[start:stop])


@dataclass(frozen=True)
class Shipped:
    """A worker function's config, pickled once on the client.

    A config (the recipe, its compiled tables, the options) is tens of KB of objects: pickled for
    every task it cost the client, the scheduler (which runs in the client process for a
    LocalCluster or a dask-jobqueue cluster) and every worker milliseconds per partition. Shipped,
    it travels as one bytes object, and each worker process unpickles it once
    (:meth:`load` keeps the last few by digest).
    """

    blob: bytes
    digest: str

    @classmethod
    def of(cls, config: Any) -> Shipped:
        from distributed.protocol import pickle as dask_pickle  # cloudpickle for user functions

        blob = dask_pickle.dumps(config)
        return cls(blob, hashlib.blake2b(blob, digest_size=16).hexdigest())

    def load(self) -> Any:
        config = _LOADED.get(self.digest)
        if config is None:
            from distributed.protocol import pickle as dask_pickle

            config = dask_pickle.loads(self.blob)
            while len(_LOADED) >= _LOADED_MAX:
                _LOADED.pop(next(iter(_LOADED)))
            _LOADED[self.digest] = config
        return config


_LOADED: dict[str, Any] = {}
_LOADED_MAX = 4


def _task_key(func: Callable[..., Any], partition: int) -> str:
    """A task's key: the worker function's name (what the dashboard shows), the partition, a nonce."""
    return f"{getattr(func, '__name__', 'partition')}-{partition}-{uuid.uuid4().hex}"


def _run_shipped(func: Callable[..., T], items: Sequence[Any], shipped: Shipped, partition: int) -> T:
    """(On a worker) ``func(items, config, partition)`` with the shipped config."""
    return func(items, shipped.load(), partition)


def _one_by_one(executor: Executor, func: Callable[..., Any], chunk: Sequence[Any], config: Any, i: int,
                on_lost: Callable[[int, Sequence[Any], BaseException], Any]) -> list[Any]:
    """Re-run a lost partition one item per task, so only the item that kills workers is lost.

    Tasks go one at a time: a task that is merely queued on a dying worker shares the blame.
    """
    results: list[Any] = []
    shipped = Shipped.of(config)
    for item in chunk:
        future = executor.client.submit(_run_shipped, func, [item], shipped, i, key=_task_key(func, i))
        try:
            results.append(future.result())
        except Exception as exc:  # noqa: BLE001 - this item keeps killing its worker
            results.append(on_lost(i, [item], exc))
        future.release()
    return results


def run_partitions(executor: Executor, func: Callable[..., T], items: Items, config: Any,
                   *, size: int, skip: frozenset[int] = frozenset(),
                   on_lost: Callable[[int, Sequence[Any], BaseException], Any] | None = None,
                   combine: Callable[[list[Any]], Any] | None = None,
                   item_func: Callable[..., Any] | None = None, item_config: Any = None,
                   record: Callable[[int, Any], T] | None = None,
                   ) -> Iterator[tuple[int, T, int]]:
    """Run ``func(partition_items, config, index)`` over the partitions of ``items``.

    ``items`` is a sequence, an Arrow array or a :class:`Ranged` (e.g. the paths of
    :func:`deid_batch.stages.discover.discover_paths`); partition ``i`` is
    ``items[i * size:(i + 1) * size]``, turned into a list only when its task is submitted.
    Yields ``(partition index, result, number of items)`` as partitions finish (in order on the
    synchronous scheduler). Partitions in ``skip`` are not run. A partition whose task fails
    (its worker was killed more often than the scheduler retries, e.g. by one file that crashes
    the process) is re-run one item per task when ``combine`` is given, so only the guilty items
    are passed to ``on_lost``; ``combine`` turns those results into the partition's result.
    The one-by-one tasks run ``item_func(items, item_config, index)`` when given (e.g. a variant
    that returns its rows instead of writing them), else ``func``; ``record(index, combined)``
    then turns their combined result into the partition's (e.g. writes the part the lost worker
    did not). Without ``combine`` the whole partition is passed to ``on_lost``.
    """
    n = len(items)
    if not n:
        return
    count = math.ceil(n / size)
    todo = [i for i in range(count) if i not in skip]

    def chunk(i: int) -> list[Any]:
        return _slice(items, i * size, min(n, (i + 1) * size))

    def rows(i: int) -> int:
        return min(n, (i + 1) * size) - i * size

    def lost(i: int, exc: BaseException) -> Any:
        if on_lost is None:
            raise exc
        part = chunk(i)
        if combine is not None and len(part) > 1:
            logger.warning("partition %d lost its worker repeatedly (%s); re-running its files "
                           "one by one", i, type(exc).__name__)
            single = item_func or func
            result = combine(_one_by_one(executor, single, part, item_config if item_func else config, i, on_lost))
        else:
            logger.error("partition %d failed on the cluster (%s); its files are marked failed",
                         i, type(exc).__name__)
            result = on_lost(i, part, exc)
            result = combine([result]) if combine is not None else result
        return record(i, result) if record is not None else result

    if executor.client is None:
        for i in todo:
            yield i, func(chunk(i), config, i), rows(i)
        return
    from distributed import as_completed

    # A sliding window of partitions in flight: each partition's items are built when it is
    # submitted, so neither the scheduler nor this process ever holds the whole archive's tasks
    # (10 million paths would be gigabytes there), yet every worker always has work queued.
    window = max(IN_FLIGHT_PER_WORKER * executor.nworkers, 4)
    waiting = iter(todo)
    index: dict[str, int] = {}
    running = as_completed()
    shipped = Shipped.of(config)

    def submit_next() -> None:
        i = next(waiting, None)
        if i is not None:
            future = executor.client.submit(_run_shipped, func, chunk(i), shipped, i, key=_task_key(func, i))
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
            result = lost(i, exc)
        future.release()
        yield i, result, rows(i)

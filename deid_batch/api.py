"""The Python API, with deid's names: the stages called in order.

``get_identifiers`` (discover -> scan), ``replace_identifiers`` (discover -> [scan -> mapping
join] -> apply -> manifest) and ``verify`` (outputs + identifiers + manifest -> hits) wire the
stage modules together; :mod:`deid_batch.stages.pipeline` runs the partitions. ``client`` may
be a ``distributed.Client``, ``"sync"`` (dask's synchronous scheduler, in this process) or
``None``; with ``None``, ``workers=N`` starts a LocalCluster of N processes and
``scheduler="tcp://host:8786"`` connects to an existing one, ``cluster="slurm"`` / ``"pbs"`` (or a
:class:`deid_batch.stages.pipeline.JobQueue`) submits batch jobs through dask-jobqueue, otherwise
work runs in this process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from deid_batch.dicom.writing import TMP_MARKER
from deid_batch.errors import ConfigError, MappingError, RecipeError
from deid_batch.hygiene import private_file
from deid_batch.recipe.builtins import DEFAULT_BASE
from deid_batch.recipe.engine import EngineOptions, private_tags_warning
from deid_batch.recipe.filters import Filters, compile_filters
from deid_batch.recipe.parse import Recipe, RecipeAction, load_recipe
from deid_batch.schemas import DETECTIONS, IDENTIFIERS, MANIFEST, SCAN_ERRORS, Reason, Status
from deid_batch.stages import keys as keys_mod
from deid_batch.stages import linkage as linkage_mod
from deid_batch.stages import parts, storage
from deid_batch.stages import verify as verify_mod
from deid_batch.stages.apply import ApplyConfig, RecordConfig, apply_and_record, apply_paths
from deid_batch.stages.detect import DetectConfig, detect_partition
from deid_batch.stages.discover import PathList, check_output_location, discover, discover_paths
from deid_batch.stages.layout import output_path
from deid_batch.stages.manifest import (
    RECIPE_FILE,
    RUN_FILE,
    ManifestStore,
    PartResult,
    Summary,
    default_manifest_dir,
    read_manifest,
)
from deid_batch.stages.mapping import (
    PartitionJoin,
    as_text_table,
    check_mapping,
    from_lookup,
    load_mapping,
    mapping_digest,
    unused_mapping_rows,
)
from deid_batch.stages.pipeline import (
    Executor,
    check_jobqueue,
    local_workers,
    open_executor,
    partition_size,
    run_partitions,
)
from deid_batch.stages.pixels import FlaggedPolicy, PixelConfig
from deid_batch.stages.scan import (
    DEFAULT_SCAN_SKIP,
    PYDICOM_COUNT,
    RAW_COUNT,
    ScanConfig,
    path_counts,
    scan_partition,
)
from deid_batch.stages.verify import Hit

__all__ = [
    "ApplyReport",
    "as_lookup",
    "detect_burned_pixels",
    "get_identifiers",
    "get_private",
    "has_private",
    "load_config",
    "read_manifest",
    "remove_private_identifiers",
    "replace_identifiers",
    "run_apply",
    "run_detect",
    "run_scan",
]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


# ---------------------------------------------------------------------------- deid config.json
@dataclass(frozen=True)
class DeidConfig:
    """deid's ``config.json``: ``get.skip``, ``get.ids`` (entity/item), ``put.actions``."""

    skip: tuple[str, ...] = DEFAULT_SCAN_SKIP
    entity_id: str | None = None
    item_id: str | None = None
    put_actions: tuple[RecipeAction, ...] | None = None


def load_config(config: str | os.PathLike[str] | Mapping[str, Any] | None) -> DeidConfig:
    """Read a deid-style ``config.json`` (path or dict)."""
    if config is None:
        return DeidConfig()
    data: Mapping[str, Any]
    if isinstance(config, Mapping):
        data = config
    else:
        name = os.fspath(config)
        try:
            with open(name, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {name} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"config file {name} cannot be read ({exc.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            where = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
            raise ConfigError(f"config file {name} is not valid JSON{where}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {name} must hold a JSON object with 'get'/'put' keys")
    get = data.get("get", {}) or {}
    put = data.get("put", {}) or {}
    ids = get.get("ids", {}) or {}
    put_actions = None
    if "actions" in put:
        recipe = load_recipe({"format": "dicom", "header": list(put["actions"])})
        put_actions = tuple(recipe.header)
    skip = tuple(get["skip"]) if "skip" in get else DEFAULT_SCAN_SKIP
    return DeidConfig(skip, ids.get("entity"), ids.get("item"), put_actions)


# ---------------------------------------------------------------------------- helpers
def _files_arg(files: Any, dicom_files: Any) -> Any:
    if files is not None and dicom_files is not None:
        raise ConfigError("give the inputs once: files= or dicom_files=, not both")
    files = files if files is not None else dicom_files
    if files is None:
        raise ConfigError("no input files: pass a folder, a file, or a list of them")
    return files


def _sources_digest(paths: Any) -> str:
    """sha256 of the input paths, in order (read chunk by chunk off an Arrow array)."""
    h = hashlib.sha256()
    for chunk in _chunks(paths):
        for p in (chunk.to_pylist() if isinstance(chunk, pa.Array) else chunk):
            h.update(p.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()


def _chunks(paths: Any) -> Any:
    """The paths chunk by chunk (Arrow arrays, or the list itself)."""
    if isinstance(paths, PathList):
        return paths.chunks()
    if isinstance(paths, pa.ChunkedArray):
        return paths.chunks
    return [paths]


def _notify(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


# ---------------------------------------------------------------------------- scan
Paths: TypeAlias = "list[str] | pa.Array | pa.ChunkedArray | PathList"


def run_scan(paths: Paths, scan_config: ScanConfig, executor: Executor, *,
             parquet_path: str | None = None, errors_path: str | None = None,
             progress: Progress | None = None, keep_fields: bool = True,
             size: int | None = None, keep_keys: bool = True) -> tuple[pa.Table, pa.Table]:
    """Scan ``paths``; return (identifiers, errors).

    With ``parquet_path`` each worker writes its partition's identifiers as a part beside it
    (``IDS.parts/``), the parts are streamed into ``parquet_path`` in input order (one row group
    per partition) and removed, and the returned table holds only the key columns, read back
    from the file (none with ``keep_keys=False``: the client then holds no per-file rows at all).
    """
    size = partition_size(len(paths), size)
    if parquet_path is not None:
        return _scan_to_parquet(paths, scan_config, executor, parquet_path, errors_path, progress, size,
                                keep_keys)
    kept: list[pa.RecordBatch] = []
    errs: list[pa.RecordBatch] = []
    pending: dict[int, pa.RecordBatch] = {}
    nxt, done = 0, 0
    counts = [0, 0]  # files read by the raw walker, by pydicom
    for i, (ids, errors), n in run_partitions(executor, scan_partition, paths, scan_config,
                                              size=size, on_lost=_lost_scan, combine=_combine_scan):
        counts = [a + b for a, b in zip(counts, path_counts([ids]))]
        errs.append(errors)
        pending[i] = ids
        while nxt in pending:
            batch = pending.pop(nxt)
            kept.append(batch if keep_fields else _copy_keys(batch))
            nxt += 1
        done += n
        _notify(progress, done, len(paths))
    schema = IDENTIFIERS if keep_fields else pa.schema([IDENTIFIERS.field(n) for n in _KEYS])
    table = _with_path_counts(pa.Table.from_batches(kept, schema=schema), counts)
    errors_table = pa.Table.from_batches(errs, schema=SCAN_ERRORS)
    _write_errors(errors_table, errors_path, scan_config.storage_options)
    return table, errors_table


def _lost_scan(i: int, chunk: Any, exc: BaseException) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    rows = {"source": list(chunk), "status": [Status.FAILED.value] * len(chunk),
            "reason": [f"{Reason.WORKER_LOST.value}: the worker scanning this file was lost"] * len(chunk)}
    return pa.RecordBatch.from_pylist([], schema=IDENTIFIERS), pa.RecordBatch.from_pydict(rows, schema=SCAN_ERRORS)


def _scan_to_parquet(paths: Paths, scan_config: ScanConfig, executor: Executor, parquet_path: str,
                     errors_path: str | None, progress: Progress | None, size: int,
                     keep_keys: bool) -> tuple[pa.Table, pa.Table]:
    """:func:`run_scan` to a Parquet file: the workers write the parts, the client streams them."""
    options = scan_config.storage_options
    folder = parts.parts_folder(parquet_path)
    parts.prepare_folder(folder, options)
    errs: list[pa.RecordBatch] = []
    done = 0

    counts = [0, 0]  # files read by the raw walker, by pydicom

    def record(i: int, result: tuple[pa.RecordBatch, pa.RecordBatch]) -> tuple[int, pa.RecordBatch]:
        ids, errors = result  # a lost partition, re-run file by file: its part is written here
        parts.write_part(folder, i, ids, options)
        return ids.num_rows, errors.replace_schema_metadata(ids.schema.metadata)

    config = parts.ScanParts(scan_config, folder, dict(options))
    try:
        for _i, (_rows, errors), n in run_partitions(
                executor, parts.scan_to_part, paths, config, size=size, on_lost=_lost_scan,
                combine=_combine_scan, item_func=scan_partition, item_config=scan_config, record=record):
            counts = [a + b for a, b in zip(counts, path_counts([errors]))]  # carried by the errors
            if errors.num_rows:
                errs.append(errors.replace_schema_metadata(None))
            done += n
            _notify(progress, done, len(paths))
        errors_table = pa.Table.from_batches(errs, schema=SCAN_ERRORS)
        _consolidate(folder, math.ceil(len(paths) / size) if len(paths) else 0, parquet_path, options)
    finally:
        parts.remove_parts(folder, options)
    _write_errors(errors_table, errors_path, options)
    keys_schema = pa.schema([IDENTIFIERS.field(n) for n in _KEYS])
    if not keep_keys:
        return _with_path_counts(keys_schema.empty_table(), counts), errors_table
    return _with_path_counts(_read_ids(parquet_path, options), counts), errors_table


def _with_path_counts(table: pa.Table, counts: list[int]) -> pa.Table:
    """``table`` carrying the files read by the raw walker / by pydicom (:func:`path_counts`)."""
    return table.replace_schema_metadata({RAW_COUNT: str(counts[0]), PYDICOM_COUNT: str(counts[1])})


_KEYS = ("source", "entity_id", "item_id")


def _consolidate(folder: str, partitions: int, parquet_path: str, options: Mapping[str, Any]) -> None:
    """Stream the parts into ``parquet_path`` (a private local file renamed into place, or put
    whole as one object)."""
    remote = storage.is_url(parquet_path)
    # a table for object storage is written to a private local file, then put whole (one object)
    tmp = _private_tmp() if remote else f"{parquet_path}.tmp"
    private_file(tmp)  # PHI: readable by the owner only
    try:
        with pq.ParquetWriter(tmp, IDENTIFIERS) as writer:
            parts.consolidate(folder, partitions, writer, options)
        if remote:
            storage.upload_file(tmp, parquet_path, options)
        else:
            os.replace(tmp, parquet_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_errors(errors_table: pa.Table, errors_path: str | None, options: Mapping[str, Any]) -> None:
    if errors_path and storage.is_url(errors_path):
        sink = pa.BufferOutputStream()
        pq.write_table(errors_table, sink)
        storage.write_bytes(errors_path, sink.getvalue().to_pybytes(), options)
    elif errors_path:  # source paths (often foldered by patient name): private too
        private_file(errors_path + ".tmp")
        pq.write_table(errors_table, errors_path + ".tmp")
        os.replace(errors_path + ".tmp", errors_path)


def _private_tmp() -> str:
    """A new local file only this user can read (mode 0600), for a table bound for object storage."""
    fd, path = tempfile.mkstemp(prefix="deid-batch-ids-", suffix=".parquet")
    os.close(fd)
    return path


def _combine_scan(parts: list[tuple[pa.RecordBatch, pa.RecordBatch]]) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    n_raw, n_pydicom = path_counts([p[0] for p in parts])
    ids = pa.concat_batches([p[0] for p in parts]).replace_schema_metadata(
        {RAW_COUNT: str(n_raw), PYDICOM_COUNT: str(n_pydicom)})
    return ids, pa.concat_batches([p[1] for p in parts])


def _copy_keys(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The key columns in buffers of their own: a zero-copy ``select`` would keep the whole
    received frame (with every header field) alive on the client."""
    schema = pa.schema([IDENTIFIERS.field(n) for n in _KEYS])
    return pa.RecordBatch.from_arrays(
        [pa.array(batch.column(n).to_pylist(), pa.string()) for n in _KEYS], schema=schema)


def get_identifiers(files: Any = None, *, entity_id: str | None = None, item_id: str | None = None,
                    client: Any = None, workers: int | None = None, scheduler: str | None = None,
                    cluster: Any = None, config: Any = None, expand_sequences: bool = True,
                    return_errors: bool = False,
                    progress: Progress | None = None, dicom_files: Any = None,
                    storage_options: Mapping[str, Any] | None = None,
                    ) -> pa.Table | tuple[pa.Table, pa.Table]:
    """One row per readable file: source, entity and item ids, flattened header fields.

    Headers only (read with ``stop_before_pixels``; the config's skip list leaves bulk data out).
    Unreadable files go to a separate errors table (``return_errors=True`` returns
    ``(identifiers, errors)``); they are logged by count and reason, never silently dropped.
    """
    cfg = load_config(config)
    scan_config = ScanConfig(entity_id or cfg.entity_id or "PatientID",
                             item_id or cfg.item_id or "SOPInstanceUID", cfg.skip, expand_sequences,
                             dict(storage_options or {}))
    paths = discover_paths(_files_arg(files, dicom_files), storage_options)
    with open_executor(client, workers=workers, scheduler=scheduler, cluster=cluster) as ex:
        table, errors = run_scan(paths, scan_config, ex, progress=progress)
    if errors.num_rows:
        logger.warning("%d of %d files could not be read; see the errors table (return_errors=True)",
                       errors.num_rows, len(paths))
    return (table, errors) if return_errors else table


# ---------------------------------------------------------------------------- detect
def recipe_filters(recipe: Recipe, name: str) -> Filters:
    """The checked %filter groups of ``recipe``; a :class:`ConfigError` when it has none."""
    filters = compile_filters(recipe)
    if not filters:
        raise ConfigError(f"recipe {name} has no %filter section, so no file can be flagged: use "
                          "--recipe dicom (deid's bundled filters, as deid's has_burned_pixels does), "
                          "dicom.ultrasound, dicom.xray.chest, or a recipe with its own %filter")
    return filters


def _pixel_config(recipe: Recipe, clean: bool, flagged: str, decompress: bool) -> PixelConfig | None:
    try:
        policy = FlaggedPolicy(flagged)
    except ValueError:
        raise ConfigError(f"--flagged {flagged!r}: use 'skip' (files flagged without a region are not "
                          "written) or 'write'") from None
    if not clean:
        if policy is not FlaggedPolicy.SKIP or decompress:
            raise ConfigError("--flagged and --decompress-pixels only apply with --clean-pixels")
        return None
    filters = recipe_filters(recipe, " + ".join(recipe.stack or recipe.sources))
    return PixelConfig(filters, policy, decompress)


def _lost_detect(i: int, chunk: Any, exc: BaseException) -> pa.RecordBatch:
    rows = [{"source": s, "reason": f"{Reason.WORKER_LOST.value}: the worker reading this file was lost"}
            for s in chunk]
    return pa.RecordBatch.from_pylist(rows, schema=DETECTIONS)


def run_detect(paths: list[str], filters: Filters, executor: Executor, *, report_path: str | None = None,
               progress: Progress | None = None, size: int | None = None) -> pa.Table:
    """Evaluate ``filters`` on every file of ``paths``; the report table, in input order.

    With ``report_path`` the table is also written to Parquet (under a temporary name, then
    renamed: never half-written).
    """
    size = partition_size(len(paths), size)
    pending: dict[int, pa.RecordBatch] = {}
    done = 0
    for i, batch, n in run_partitions(executor, detect_partition, paths, DetectConfig(filters), size=size,
                                      on_lost=_lost_detect, combine=pa.concat_batches):
        pending[i] = batch
        done += n
        _notify(progress, done, len(paths))
    table = pa.Table.from_batches([pending[i] for i in sorted(pending)], schema=DETECTIONS)
    if report_path is not None:
        tmp = report_path + ".tmp"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, report_path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return table


def detect_burned_pixels(files: Any = None, *, recipe: Any = "dicom", report: str | None = None,
                         client: Any = None, workers: int | None = None, scheduler: str | None = None,
                         progress: Progress | None = None, dicom_files: Any = None) -> pa.Table:
    """deid's ``has_burned_pixels`` over an archive: one :data:`~deid_batch.schemas.DETECTIONS` row per file.

    ``recipe`` supplies the %filter sections (default deid's bundled ``dicom``, as deid); they are
    evaluated on each file's original header. ``report`` also writes the table to Parquet.
    """
    parsed = load_recipe(recipe)
    filters = recipe_filters(parsed, " + ".join(parsed.sources) or str(recipe))
    paths = discover(_files_arg(files, dicom_files))
    with open_executor(client, workers=workers, scheduler=scheduler) as ex:
        return run_detect(paths, filters, ex, report_path=os.path.abspath(report) if report else None,
                          progress=progress)


def as_lookup(table: pa.Table) -> dict[str, dict[str, dict[str, Any]]]:
    """deid's nested ``{entity: {item: {field: value}}}`` dict, for small interactive use."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in table.to_pylist():
        fields = {f["path"]: f["value"] for f in row.get("fields") or ()}
        fields["source"] = row["source"]
        out.setdefault(row["entity_id"], {})[row["item_id"]] = fields
    return out


# ---------------------------------------------------------------------------- apply
@dataclass
class ApplyReport:
    """What an apply run did."""

    outputs: list[str]
    summary: Summary
    manifest: str
    output_folder: str
    identifiers: str | None = None
    messages: list[str] = field(default_factory=list)
    #: the effective recipe stack, base first
    recipe_stack: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        return 1 if self.summary.failed else 0


def _check_manifest_location(output_folder: str, manifest_dir: str) -> None:
    """The manifest (PHI linkage, run key) does not go into OUTDIR (nor into an input:
    :func:`check_output_location`)."""
    if storage.inside(manifest_dir, output_folder) or storage.inside(output_folder, manifest_dir):
        raise ConfigError(
            f"manifest folder {manifest_dir} and output folder {output_folder} overlap; the output "
            "is shared as is and must hold only de-identified files: choose a --manifest folder "
            "beside it (the default is OUTDIR.manifest)"
        )


def _prepare_output(output_folder: str, resume: bool) -> None:
    """Create a local output folder (object stores need none); on resume, drop a crash's temporaries."""
    if storage.is_url(output_folder):
        return  # objects are put whole: no temporary object is ever left
    if resume and os.path.isdir(output_folder):
        stale = _clean_stale_tmp(output_folder)
        if stale:
            logger.info("removed %d partial temporary files left by the interrupted run", stale)
    os.makedirs(output_folder, exist_ok=True)


def _clean_stale_tmp(folder: str) -> int:
    n = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            if name.startswith(TMP_MARKER):
                os.unlink(os.path.join(root, name))
                n += 1
    return n


def _mapping_name(variables: Any) -> str:
    if variables is None:
        return "ids"
    if isinstance(variables, (str, os.PathLike)):
        return f"mapping {os.fspath(variables)}"
    return "the mapping table"


def _read_ids(path: str, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """The key columns of an identifiers table written by ``scan``."""
    path = storage.normalise(path)
    if storage.is_url(path):
        try:
            data: Any = pa.BufferReader(storage.read_bytes(path, storage_options))
        except FileNotFoundError:
            raise ConfigError(f"identifiers table {path} does not exist; write it with `deid-batch scan SRC "
                              f"--ids {path}`, or leave out --ids") from None
        except OSError as exc:
            raise ConfigError(f"identifiers table {path} cannot be read ({type(exc).__name__}); check the "
                              "URL and the credentials") from None
        try:
            return pq.read_table(data, columns=["source", "entity_id", "item_id"])
        except (pa.ArrowInvalid, OSError, KeyError) as exc:
            raise ConfigError(f"{path} is not an identifiers table written by `deid-batch scan` "
                              f"({type(exc).__name__}); a mapping goes to --vars, identifiers to --ids") from None
    if not os.path.isfile(path):
        raise ConfigError(f"identifiers table {path} does not exist; write it with `deid-batch scan SRC --ids "
                          f"{path}`, or leave out --ids")
    try:
        return pq.read_table(path, columns=["source", "entity_id", "item_id"])
    except OSError as exc:
        raise ConfigError(f"identifiers table {path} cannot be read ({exc.strerror}); give a readable "
                          "file written by `deid-batch scan`") from None
    except (pa.ArrowException, KeyError) as exc:
        raise ConfigError(f"{path} is not an identifiers table written by `deid-batch scan` "
                          f"({type(exc).__name__}); a mapping goes to --vars, identifiers to --ids") from None


def _undo_on_refusal(output_folder: str, manifest_dir: str) -> Any:
    """Remove the folders this run created if it is refused (a usage error) before writing
    any output: a refused run leaves nothing behind. Existing folders are never touched."""
    new = [f for f in (output_folder, manifest_dir) if not os.path.lexists(f)]

    @contextlib.contextmanager
    def undo() -> Any:
        try:
            yield
        except (ConfigError, MappingError, RecipeError):
            for folder in new:
                if os.path.isdir(folder) and not _holds_outputs(folder):
                    shutil.rmtree(folder, ignore_errors=True)
            raise
    return undo()


def _holds_outputs(folder: str) -> bool:
    """True if ``folder`` holds a DICOM output or a manifest part (something a run finished)."""
    for _root, _dirs, names in os.walk(folder):
        if any(n.endswith(".dcm") or n.startswith("part-") for n in names):
            return True
    return False


def _check_ids_file(path: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """``path`` if it is an identifiers table written by ``scan`` (its schema read, not its rows)."""
    path = storage.normalise(path)
    if storage.is_url(path):
        try:
            fs, where = storage.filesystem(path, storage_options)
            with fs.open(where, "rb") as fh:
                schema = pq.read_schema(fh)
        except FileNotFoundError:
            raise ConfigError(f"identifiers table {path} does not exist; write it with `deid-batch scan SRC "
                              f"--ids {path}`, or leave out --ids") from None
        except (pa.ArrowInvalid, OSError) as exc:
            raise ConfigError(f"identifiers table {path} cannot be read as Parquet ({type(exc).__name__}); check "
                              "the URL and the credentials; a mapping goes to --vars, identifiers to --ids") from None
    else:
        if not os.path.isfile(path):
            raise ConfigError(f"identifiers table {path} does not exist; write it with `deid-batch scan SRC --ids "
                              f"{path}`, or leave out --ids")
        try:
            schema = pq.read_schema(path)
        except OSError as exc:
            if isinstance(exc, pa.ArrowException):
                raise ConfigError(f"{path} is not an identifiers table written by `deid-batch scan` "
                                  f"({type(exc).__name__}); a mapping goes to --vars, identifiers to --ids") from None
            raise ConfigError(f"identifiers table {path} cannot be read ({exc.strerror}); give a readable "
                              "file written by `deid-batch scan`") from None
        except pa.ArrowException as exc:
            raise ConfigError(f"{path} is not an identifiers table written by `deid-batch scan` "
                              f"({type(exc).__name__}); a mapping goes to --vars, identifiers to --ids") from None
    if not set(_KEYS) <= set(schema.names):
        raise ConfigError(f"{path} is not an identifiers table written by `deid-batch scan` (KeyError); "
                          "a mapping goes to --vars, identifiers to --ids")
    return path


KeysSource: TypeAlias = "str | pa.Table"


def _prepare_mapping(ids: Any, variables: Any, entity: str, item: str,
                     storage_options: Mapping[str, Any] | None = None,
                     ) -> tuple[KeysSource | None, pa.Table | None, dict[str, Callable[..., Any]]]:
    """Return (identifier keys: a Parquet location or a table, or None; mapping table or None;
    functions from ids). An identifiers file is checked here, and read by the workers."""
    functions: dict[str, Callable[..., Any]] = {}
    keys: KeysSource | None = None
    mapping = None
    if isinstance(ids, (str, os.PathLike)):
        keys = _check_ids_file(os.fspath(ids), storage_options)
    elif isinstance(ids, pa.Table):
        keys = ids.select(list(_KEYS))
    elif isinstance(ids, Mapping):
        mapping, functions = from_lookup(ids, entity, item)
    elif ids is not None:
        raise ConfigError("ids= must be an identifiers table, its Parquet path, or as_lookup()'s dict")
    if variables is not None:
        if mapping is not None:
            raise ConfigError("give variables either in ids (as_lookup dict) or in variables=, not both")
        mapping = load_mapping(variables, name=_mapping_name(variables), storage_options=storage_options)
    return keys, mapping, functions


def _lost_partition(i: int, chunk: Any, exc: BaseException) -> tuple[pa.RecordBatch, int, int]:
    """Manifest rows for a partition whose worker died more often than dask retries it."""
    reason = f"{Reason.WORKER_LOST.value}: the worker processing this partition was lost repeatedly"
    return pa.RecordBatch.from_pylist(
        [{"source": s, "output": None, "status": Status.FAILED.value, "reason": reason,
          "warnings": [], "partition": i} for s in chunk], schema=MANIFEST), 0, 0


def _combine_applied(results: list[tuple[pa.RecordBatch, int, int]]) -> tuple[pa.RecordBatch, int, int]:
    return (pa.concat_batches([r[0] for r in results]), sum(r[1] for r in results), sum(r[2] for r in results))


def _ids_name(ids: Any) -> str:
    return f"identifiers table {os.fspath(ids)}" if isinstance(ids, (str, os.PathLike)) else "the identifiers table"


def _keys_dataset(keys: KeysSource, options: Mapping[str, Any] | None) -> Any:
    if isinstance(keys, pa.Table):
        return pads.dataset(keys)
    if storage.is_url(keys):
        fs, where = storage.filesystem(keys, options)
        return pads.dataset(where, format="parquet", filesystem=fs)
    return pads.dataset(keys, format="parquet")


def _check_ids_cover(paths: Paths, keys: KeysSource, ids_name: str,
                     options: Mapping[str, Any] | None = None) -> None:
    """Refuse an identifiers table that holds none of the inputs (the table is read in batches)."""
    if not len(paths):
        return
    sample = pa.array(_head(paths, 1000), pa.string())
    dataset = _keys_dataset(keys, options)
    if dataset.count_rows(filter=pc.field("source").isin(sample)):
        return
    for batch in dataset.to_batches(columns=["source"]):
        column = batch.column("source").cast(pa.string())
        if any(pc.any(pc.is_in(column, value_set=c if isinstance(c, pa.Array) else pa.array(c, pa.string()))).as_py()
               for c in _chunks(paths) if len(c)):
            return
    raise ConfigError(
        f"{ids_name} holds none of the {len(paths)} input files (made from another archive or "
        "folder?); run `deid-batch scan` on these inputs, or leave out --ids to gather them"
    )


def _head(paths: Paths, n: int) -> list[str]:
    if isinstance(paths, PathList):
        return paths.take_range(0, n)
    if isinstance(paths, (pa.Array, pa.ChunkedArray)):
        head: list[str] = paths.slice(0, n).to_pylist()
        return head
    return list(paths[:n])


def _keys_from_sources(paths: Paths, mapping: pa.Table, entity: str, item: str) -> pa.Table | None:
    """The identifier keys read off a mapping that has a ``source`` per row covering every input."""
    names = mapping.column_names
    if "source" not in names or entity not in names or item not in names:
        return None
    sources = mapping.column("source").cast(pa.string())
    if sources.null_count or pc.count_distinct(sources).as_py() != len(sources):
        return None
    wanted = (paths.to_arrow() if isinstance(paths, PathList)  # (the mapping names every file: as big)
              else paths if isinstance(paths, (pa.Array, pa.ChunkedArray)) else pa.array(paths, pa.string()))
    wanted = wanted.combine_chunks() if isinstance(wanted, pa.ChunkedArray) else wanted
    if not pc.all(pc.is_in(wanted, value_set=sources.combine_chunks())).as_py() and len(wanted):
        return None
    rows = mapping.filter(pc.is_in(sources, value_set=wanted))
    return pa.table({"source": rows.column("source").cast(pa.string()),
                     "entity_id": rows.column(entity).cast(pa.string()),
                     "item_id": rows.column(item).cast(pa.string())})


_KEYS_FILE, _MAPPING_FILE, _IDS_FILE = "_keys.parquet", "_mapping.parquet", "_identifiers.parquet"


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=65536)
    return bytes(sink.getvalue().to_pybytes())


def _copy_keys_file(source: str, folder: storage.Folder, options: Mapping[str, Any] | None) -> None:
    """The key columns of an identifiers file as ``_keys.parquet``, streamed batch by batch.

    Row groups of 65,536 rows in input order: a worker's range filter on ``source`` reads only the
    few row groups of its partition, and the footer stays small (an identifiers file has a row
    group per scan partition and every header field).
    """
    dataset = _keys_dataset(source, options)
    schema = pa.schema([(n, pa.string()) for n in _KEYS])
    tmp = _private_tmp()
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            held: list[pa.RecordBatch] = []
            rows = 0
            for batch in dataset.to_batches(columns=list(_KEYS)):
                held.append(batch)
                rows += batch.num_rows
                if rows >= 65536:
                    writer.write_table(pa.Table.from_batches(held).cast(schema), row_group_size=65536)
                    held, rows = [], 0
            if held:
                writer.write_table(pa.Table.from_batches(held).cast(schema), row_group_size=65536)
        if folder.url:
            storage.upload_file(tmp, folder.path(_KEYS_FILE), options)
        else:
            private_file(folder.path(_KEYS_FILE) + ".tmp")
            shutil.copyfile(tmp, folder.path(_KEYS_FILE) + ".tmp")
            os.replace(folder.path(_KEYS_FILE) + ".tmp", folder.path(_KEYS_FILE))
    finally:
        os.unlink(tmp)


def _partition_join(paths: Paths, keys: KeysSource | None, mapping: pa.Table | None,
                    entity: str, item: str, cfg: DeidConfig, ex: Executor, report: ApplyReport,
                    name: str = "mapping", options: Mapping[str, Any] | None = None) -> PartitionJoin | None:
    """Where the workers find each partition's keys and mapping rows (None: no mapping).

    No mapping: no identifiers are needed and none are gathered. With a mapping but no identifiers
    table, the keys come from the mapping's ``source`` column when it names every input (deid's
    ``as_lookup`` dict carries each file's source), otherwise from a scan of the inputs (written
    to ``_identifiers.parquet`` by the workers); their key columns are copied once into
    ``_keys.parquet`` (row groups of 65,536 rows). The mapping is written once, sorted by its entity
    key, as ``_mapping.parquet`` in the manifest folder (a linkage file, like the manifest); each
    worker reads only the rows of its partition's entities.
    """
    if mapping is None:
        return None
    folder = storage.Folder(report.manifest, options)
    if keys is None:
        keys = _keys_from_sources(paths, mapping, entity, item)
    if keys is None:
        keys = folder.path(_IDS_FILE)
        logger.info("gathering identifiers of %d files for the mapping join", len(paths))
        run_scan(paths, ScanConfig(entity, item, cfg.skip, storage_options=dict(options or {})), ex,
                 parquet_path=keys, keep_fields=False, keep_keys=False)
        report.identifiers = keys
    if isinstance(keys, pa.Table):
        folder.write_bytes(_KEYS_FILE, _parquet_bytes(keys.sort_by([("source", "ascending")])))
    else:
        _copy_keys_file(keys, folder, options)
    location = folder.path(_KEYS_FILE)
    text = as_text_table(mapping, name=name)
    folder.write_bytes(_MAPPING_FILE, _parquet_bytes(text.sort_by([(entity, "ascending")])))
    return PartitionJoin(location, folder.path(_MAPPING_FILE), entity, item, name, dict(options or {}))


def _report_join(report: ApplyReport, join: PartitionJoin | None, mapping: pa.Table | None, user_ids: bool,
                 ids_name: str) -> None:
    """The join's counts (files without a row, rows without a file, files not in the ids), logged."""
    if join is None or mapping is None:
        return
    summary = report.summary
    if not user_ids:
        summary.not_in_ids = 0  # keys gathered by this run: a file missing there failed its scan
    summary.unused_rows = unused_mapping_rows(join.keys, mapping, join.entity_field, join.item_field,
                                              join.storage_options, name=join.name)
    if summary.not_in_ids:
        logger.warning("%d input files are not in %s; they got no variables (var: lookups missing): "
                       "re-run scan to include them", summary.not_in_ids, ids_name)
    if summary.unmapped:
        logger.warning("%d files have no row in the mapping; their var: lookups are missing", summary.unmapped)
    if summary.unused_rows:
        logger.warning("%d mapping rows match no input file (check the key column's values)", summary.unused_rows)


def _has_files(folder: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Does ``folder`` hold any file (at any depth)? Stops at the first one."""
    if storage.is_url(folder):
        return storage.has_files(folder, storage_options)
    if not os.path.isdir(folder):
        return False
    stack = [folder]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    return True
    return False


def _check_outdir_key(paths: Any, output_folder: str, manifest_dir: str, key: bytes,
                      storage_options: Mapping[str, Any] | None = None) -> None:
    """Refuse an OUTDIR that already holds files made under another run key.

    Such a run would write a second copy of every input under new names. OUTDIR is accepted when
    this manifest folder's run wrote into it with this key, or when an output this key gives one
    of the inputs is already there.
    """
    if not _has_files(output_folder, storage_options):
        return
    folder = storage.Folder(manifest_dir, storage_options)
    if folder.exists(RUN_FILE):
        try:
            before = json.loads(folder.read_bytes(RUN_FILE).decode("utf-8"))
        except (OSError, ValueError):
            before = {}
        if before.get("output_folder") == output_folder and before.get("key") == keys_mod.key_fingerprint(key):
            return
    if any(storage.exists(output_path(output_folder, key, p), storage_options) for p in _head(paths, 256)):
        return
    raise ConfigError(
        f"output folder {output_folder} already holds files that this run's key did not make "
        "(an earlier run with another --manifest folder or key?); writing would add a second copy "
        "of every input under new names. Give the manifest folder of the run that made them "
        "(--manifest DIR) or its key (--key-file FILE), or choose a new, empty --out folder"
    )


def _given_or_resumed_size(partition: int | None, resume: bool, manifest_dir: str,
                           storage_options: Mapping[str, Any] | None) -> int | None:
    """The partition size given; for ``--resume`` without one, the interrupted run's, so a run
    started by a version whose partitioning rule differed resumes as it was split."""
    if partition is not None or not resume:
        return partition
    folder = storage.Folder(manifest_dir, storage_options)
    try:
        size = json.loads(folder.read_bytes(RUN_FILE).decode("utf-8")).get("partition_size")
    except (OSError, ValueError, AttributeError):
        return None  # no earlier run (or not ours): prepare() says so
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 1 else None


def _open_manifest(manifest_dir: str, fingerprint: dict[str, Any], resume: bool, new_key: bytes | None,
                   recipe: Recipe, storage_options: Mapping[str, Any] | None = None) -> ManifestStore:
    """Create (or check, on resume) the manifest folder; keep a generated key and the effective recipe."""
    store = ManifestStore(manifest_dir, storage_options)
    store.done = store.prepare(fingerprint, resume=resume)
    if new_key is not None:
        keys_mod.store_key(manifest_dir, new_key, storage_options)
    store.write_json(RECIPE_FILE, {"stack": list(recipe.stack), "recipe": recipe.as_dict()})
    return store


def _count_shared_uids(store: ManifestStore, report: ApplyReport) -> None:
    """Outputs of the run that end with the same SOPInstanceUID: counted in the summary, warned."""
    report.summary.shared_uids, report.summary.shared_uid_outputs = store.shared_uids()
    if report.summary.shared_uids:
        logger.warning("%d outputs share %d SOPInstanceUIDs (two files should never share one); "
                       "see the sop_instance_uid column of the manifest",
                       report.summary.shared_uid_outputs, report.summary.shared_uids)


def run_apply(files: Any, *, recipe: Any = None, base: Any = DEFAULT_BASE, ids: Any = None,
              variables: Any = None,
              output_folder: str | None = None, overwrite: bool = False, remove_private: bool = True,
              entity_id: str | None = None, item_id: str | None = None, client: Any = None,
              workers: int | None = None, scheduler: str | None = None, cluster: Any = None,
              config: Any = None, functions: Mapping[str, Callable[..., Any]] | None = None,
              manifest: str | None = None,
              resume: bool = False, key_file: str | None = None, partition: int | None = None,
              progress: Progress | None = None, on_start: Callable[[Executor], None] | None = None,
              collect_outputs: bool = True, write_no_pixel_data: bool = False,
              clean_pixels: bool = False, flagged: str = "skip", decompress_pixels: bool = False,
              byte_writer: bool = True, storage_options: Mapping[str, Any] | None = None,
              linkage: bool | None = None) -> ApplyReport:
    """The whole apply job; returns an :class:`ApplyReport` (``replace_identifiers`` returns its outputs).

    ``base`` is put under ``recipe`` (default ``remove-everything``; ``"none"`` for deid's
    recipe-only behaviour; see :func:`deid_batch.recipe.load_recipe`). ``byte_writer=False``
    encodes every output with pydicom (the reference path; same bytes, slower): for benchmarks
    and comparisons only. Paths may be fsspec URLs (``s3://bucket/prefix``); ``storage_options`` go
    to fsspec (see :mod:`deid_batch.stages.storage`).
    ``write_no_pixel_data``: write image storage objects without pixel data (header-only, or cut
    at an element boundary) with a manifest warning; by default they are ``skipped/no-pixel-data``.

    ``clean_pixels=True`` evaluates the recipe's %filter sections on each original header and
    blanks the regions of the LABELs that flag it in every frame, before the header recipe;
    a file flagged without a region is ``skipped`` (``flagged="write"`` writes it, with a
    warning); compressed pixel data is ``failed`` unless ``decompress_pixels=True`` (decoded,
    cleaned and written uncompressed).

    ``linkage``: write ``uid_mapping.csv`` and ``patid_mapping.csv`` in the manifest folder
    (:mod:`deid_batch.stages.linkage`); ``None`` (default): when the recipe makes keyed pseudonyms.
    """
    store_opts = dict(storage_options or {})
    parsed: Recipe = load_recipe(recipe, base=base)
    with_linkage = linkage_mod.wanted(parsed, linkage)
    pixels = _pixel_config(parsed, clean_pixels, flagged, decompress_pixels)
    cluster = check_jobqueue(cluster)  # a batch-system run that cannot start is refused before anything is written
    cfg = load_config(config)
    entity = entity_id or cfg.entity_id or "PatientID"
    item = item_id or cfg.item_id or "SOPInstanceUID"
    paths = discover_paths(files, store_opts)
    if output_folder is None:
        output_folder = tempfile.mkdtemp(prefix="deid-batch-")
    output_folder = storage.normalise(output_folder)
    manifest_dir = storage.normalise(manifest or default_manifest_dir(output_folder))
    check_output_location(files, output_folder, manifest_dir)  # one pass over the inputs for both
    _check_manifest_location(output_folder, manifest_dir)
    keys_source, mapping, id_functions = _prepare_mapping(ids, variables, entity, item, store_opts)
    if mapping is not None:
        check_mapping(mapping, entity, item, name=_mapping_name(variables))
        if keys_source is not None:
            _check_ids_cover(paths, keys_source, _ids_name(ids), store_opts)
    workers = local_workers(workers)
    size = partition_size(len(paths), _given_or_resumed_size(partition, resume, manifest_dir, store_opts))
    with _undo_on_refusal(output_folder, manifest_dir):
        key, new_key = keys_mod.resolve_key(manifest_dir, key_file, store_opts)
        if not resume:
            _check_outdir_key(paths, output_folder, manifest_dir, key, store_opts)
        default_options = EngineOptions()
        options = EngineOptions(
            remove_private=remove_private, uid_key=key,
            skip=cfg.skip if config is not None else default_options.skip,
            put_actions=cfg.put_actions if cfg.put_actions is not None else default_options.put_actions,
        )
        all_functions = {**id_functions, **dict(functions or {})}
        fingerprint = {
            "recipe": parsed.digest, "mapping": mapping_digest(mapping), "sources": _sources_digest(paths),
            "output_folder": output_folder, "overwrite": overwrite, "remove_private": remove_private,
            "entity_id": entity, "item_id": item, "skip": list(options.skip),
            "put_actions": [f"{a.action} {a.field} {a.value or ''}".strip() for a in options.put_actions],
            "functions": sorted(all_functions), "partition_size": size,
            "key": keys_mod.key_fingerprint(key), "recipe_stack": list(parsed.stack),
            "run_stamp": time.time_ns() // 1_000 * 1_000, "write_no_pixel_data": write_no_pixel_data,
            "pixels": None if pixels is None else {"flagged": pixels.flagged.value,
                                                   "decompress": pixels.allow_decode},
            "linkage": with_linkage,
        }
        store = _open_manifest(manifest_dir, fingerprint, resume, key if new_key else None, parsed,
                               store_opts)
        done_parts = store.done
        if not resume:
            linkage_mod.reset(manifest_dir, store_opts)
        _prepare_output(output_folder, resume)
        report = ApplyReport([], Summary(), manifest_dir, output_folder, recipe_stack=parsed.stack)
        if not remove_private:
            logger.warning(private_tags_warning())
            report.messages.append(private_tags_warning())
        with open_executor(client, workers=workers, scheduler=scheduler, cluster=cluster) as ex:
            if on_start is not None:
                on_start(ex)
            join = _partition_join(paths, keys_source, mapping, entity, item, cfg, ex, report,
                                   name=_mapping_name(variables), options=store_opts)
            apply_config = ApplyConfig(parsed, options, output_folder, key, overwrite,
                                       tuple(sorted(all_functions.items())), stamp_ns=store.stamp,
                                       has_mapping=mapping is not None,
                                       write_no_pixel_data=write_no_pixel_data, pixels=pixels,
                                       byte_writer=byte_writer, storage_options=store_opts,
                                       linkage_folder=manifest_dir if with_linkage else None)
            record_config = RecordConfig(apply_config, manifest_dir, join)
            total, done = len(paths), 0
            for i in sorted(done_parts):
                part = store.read_part(i)
                report.summary.add(part)
                counts = store.read_counts(i)
                report.summary.unmapped += counts.get("unmapped", 0)
                report.summary.not_in_ids += counts.get("not_in_ids", 0)
                done += part.num_rows
            if done_parts:
                logger.info("resuming: %d partitions (%d files) were already done", len(done_parts), done)
            _notify(progress, done, total)

            def record(i: int, result: tuple[pa.RecordBatch, int, int]) -> PartResult:
                batch, unmapped, missing = result  # a lost partition: its rows are written here
                store.write_part(i, batch, {"unmapped": unmapped, "not_in_ids": missing})
                return PartResult.of(i, batch, unmapped, missing)

            for _i, result, n in run_partitions(ex, apply_and_record, paths, record_config, size=size,
                                                skip=frozenset(done_parts), on_lost=_lost_partition,
                                                combine=_combine_applied, item_func=apply_paths,
                                                item_config=record_config, record=record):
                report.summary.merge(result.summary)
                for out in result.exists:
                    logger.error("%s already exists, overwrite set to False. Not writing.", out)
                done += n
                _notify(progress, done, total)
        del paths  # the client holds counts only from here on
        _report_join(report, join, mapping, isinstance(ids, (str, os.PathLike, pa.Table)), _ids_name(ids))
        _count_shared_uids(store, report)
        if with_linkage:
            n_uids, n_patids = linkage_mod.consolidate(manifest_dir, store_opts)
            logger.info("linkage files: %d UID pairs, %d PatientID pairs in %s", n_uids, n_patids,
                        manifest_dir)
        if collect_outputs:
            table = store.read().select(["output", "partition"]).sort_by([("partition", "ascending")])
            report.outputs = [o for o in table.column("output").to_pylist() if o is not None]
    return report


def replace_identifiers(files: Any = None, *, recipe: Any = None, base: Any = DEFAULT_BASE, ids: Any = None,
                        variables: Any = None,
                        output_folder: str | None = None, overwrite: bool = False,
                        remove_private: bool = True, entity_id: str | None = None,
                        item_id: str | None = None, client: Any = None, config: Any = None,
                        functions: Mapping[str, Callable[..., Any]] | None = None,
                        dicom_files: Any = None, deid: Any = None, write_no_pixel_data: bool = False,
                        **kwargs: Any) -> list[str]:
    """De-identify ``files`` with ``recipe`` on ``base``; return the output paths in input order.

    ``base`` (default ``"remove-everything"``) is layered under ``recipe`` as deid's docs show
    (``"none"``: the recipe alone, as deid 0.4.13 runs it; see :func:`deid_batch.recipe.load_recipe`).
    ``write_no_pixel_data=True`` also writes image storage objects without pixel data (with a
    manifest warning); by default they are skipped with reason ``no-pixel-data``.

    Failed and skipped files have no output path (they are in the manifest, with a reason).
    ``deid=`` and ``dicom_files=`` are accepted as deid's names for ``recipe`` and ``files``.
    Extra keyword arguments (``workers``, ``scheduler``, ``cluster``, ``manifest``, ``resume``,
    ``key_file``, ``partition``, ``progress``, ``byte_writer``, ``storage_options``) are those of :func:`run_apply`.
    """
    if recipe is not None and deid is not None:
        raise ConfigError("give the recipe once: recipe= or deid=, not both")
    unknown = set(kwargs) - {"workers", "scheduler", "cluster", "manifest", "resume", "key_file", "partition",
                             "progress", "byte_writer", "storage_options"}
    if unknown:
        raise TypeError(f"replace_identifiers() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    report = run_apply(_files_arg(files, dicom_files), recipe=recipe if recipe is not None else deid,
                       base=base, ids=ids, variables=variables, output_folder=output_folder, overwrite=overwrite,
                       remove_private=remove_private, entity_id=entity_id, item_id=item_id,
                       client=client, config=config, functions=functions,
                       write_no_pixel_data=write_no_pixel_data, **kwargs)
    if report.summary.failed:
        logger.warning("%d files failed; see the manifest in %s", report.summary.failed, report.manifest)
    return report.outputs


_EMPTY_RECIPE = {"format": "dicom", "header": []}


def remove_private_identifiers(files: Any = None, *, output_folder: str | None = None,
                               overwrite: bool = False, client: Any = None, dicom_files: Any = None,
                               **kwargs: Any) -> list[str]:
    """Copy ``files`` with every private tag removed (nothing else changes but the file meta)."""
    return replace_identifiers(files, dicom_files=dicom_files, recipe=_EMPTY_RECIPE, base=None,
                               output_folder=output_folder, overwrite=overwrite, remove_private=True,
                               client=client, **kwargs)


def get_private(dataset: Dataset) -> list[DataElement]:
    """Every private element of ``dataset``, nested sequences included (deid's order)."""
    found: list[DataElement] = []
    queue = [dataset]
    while queue:
        ds = queue.pop(0)
        for elem in ds:
            if elem.tag.is_private:
                found.append(elem)
                if elem.VR == "SQ":
                    queue.extend(elem.value)
    return found


def has_private(dataset: Dataset) -> bool:
    """True if ``dataset`` holds any private element."""
    return bool(get_private(dataset))




# ---------------------------------------------------------------------------- verify
@dataclass
class VerifyReport:
    """What ``verify`` found: the hits (file, tag path, kind; never a value) and what it checked."""

    hits: list[Hit]
    files: int
    recipe_stack: tuple[str, ...] = ()
    manifest: str | None = None
    #: UID references into the input set that resolve to no output (needs the manifest)
    broken_references: list[verify_mod.BrokenReference] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.hits or self.broken_references else 0


def _has_outputs(root: str, opts: Mapping[str, Any]) -> bool:
    if not storage.is_url(root):
        return os.path.isdir(root)
    try:
        return storage.has_files(root, opts)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any storage failure: say what to check
        raise ConfigError(f"output folder {root} cannot be listed ({type(exc).__name__}); check the URL, "
                          "the endpoint (AWS_ENDPOINT_URL) and the credentials (--storage-options)") from None


def _verify_key(manifest: str | None, key_file: str | None, opts: Mapping[str, Any]) -> bytes | None:
    """The run key if one is at hand (never generated); a URL manifest's ``_key`` is fetched."""
    if manifest is not None and storage.is_url(manifest) and not key_file and \
            not os.environ.get(keys_mod.ENV_VAR):
        folder = storage.Folder(manifest, opts)
        return folder.read_bytes(keys_mod.KEY_FILE_NAME).strip() if folder.exists(keys_mod.KEY_FILE_NAME) \
            else None
    return keys_mod.find_key(manifest, key_file)


def run_verify(output_folder: str | os.PathLike[str], ids: Any, *, manifest: str | None = None,
               recipe: Any = None, base: Any = DEFAULT_BASE, keep: Any = None, key_file: str | None = None,
               min_length: int = 4, client: Any = None, workers: int | None = None,
               scheduler: str | None = None, partition: int | None = None, progress: Progress | None = None,
               on_start: Callable[[Executor], None] | None = None, cluster: Any = None,
               show_uids: bool = False, storage_options: Mapping[str, Any] | None = None) -> VerifyReport:
    """Rescan every output for original identifying values (see :mod:`deid_batch.stages.verify`),
    and check that the outputs' UID references into the input set still resolve (with the
    manifest; ``show_uids`` puts the outputs' unresolved UIDs in the report).

    The recipe is ``recipe`` (on ``base``, as ``apply`` layers it), else ``keep`` (KEEP selectors,
    e.g. ``["StudyDate", "contains:Pixel"]``), else the manifest folder's ``_recipe.json``. The
    manifest folder defaults to ``OUTDIR.manifest`` when it exists. Raises ``ConfigError`` (naming
    the argument and the fix) for a missing output folder, manifest, identifiers table or recipe.
    """
    opts = dict(storage_options or {})
    root = storage.normalise(output_folder)
    if not _has_outputs(root, opts):
        raise ConfigError(f"output folder {root} does not exist; give the --out folder of the apply run")
    if manifest is None and storage.Folder(default_manifest_dir(root), opts).exists():
        manifest = default_manifest_dir(root)
    if manifest is not None:
        manifest = storage.normalise(manifest)
        if not storage.Folder(manifest, opts).exists():
            raise ConfigError(f"manifest folder {manifest} does not exist; give the apply run's "
                              "manifest folder (--manifest DIR)")
    if keep is not None and recipe is None:
        recipe, base = {"format": "dicom", "header": [{"action": "KEEP", "field": k} for k in keep]}, None
    parsed, run = verify_mod.load_run(manifest, recipe, base, opts)
    key = _verify_key(manifest, key_file, opts)
    config, items = verify_mod.prepare(root, ids, recipe=parsed, run=run, manifest=manifest,
                                       min_length=min_length, key=key, storage_options=opts)
    checked = verify_mod.Checked()

    def lost(i: int, chunk: Any, exc: BaseException) -> verify_mod.Checked:
        return verify_mod.Checked([Hit(item[0], "<file>", "unverified") for item in chunk])

    total, done = len(items), 0
    _notify(progress, 0, total)
    with open_executor(client, workers=workers, scheduler=scheduler, cluster=cluster) as ex:
        if on_start is not None:
            on_start(ex)
        for _, part, n in run_partitions(ex, verify_mod.check_partition, items, config,
                                         size=partition_size(total, partition), on_lost=lost,
                                         combine=verify_mod.combine_checked):
            checked.hits.extend(part.hits)
            checked.links.merge(part.links)
            done += n
            _notify(progress, done, total)
    hits = sorted(checked.hits)
    for hit in hits:
        logger.info("%s", hit)
    broken = verify_mod.broken_references(checked.links, show_uids)
    for ref in broken:
        logger.info("%s", ref)
    return VerifyReport(hits, total, tuple(parsed.stack), manifest, broken)


def verify(output_folder: str | os.PathLike[str], ids: Any, **kwargs: Any) -> list[Hit]:
    """:func:`run_verify`, returning the hits only (empty when the outputs are clean)."""
    return run_verify(output_folder, ids, **kwargs).hits

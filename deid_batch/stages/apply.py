"""Apply stage (workers): read, de-identify and write one partition of files.

Takes a partition of ``(source, variables)`` rows and a frozen :class:`ApplyConfig`; returns one
manifest record batch (:data:`~deid_batch.schemas.MANIFEST`) with exactly one row per input:
``written`` (a new output, or the identical output an earlier attempt of this job left), ``exists``
(a different file is at the output path and overwrite is off), ``skipped`` or ``failed`` with a
reason code, and which writer wrote it (``raw``: the direct path, :mod:`deid_batch.recipe.direct`,
straight from the input's raw elements with no pydicom Dataset; ``bytes``: the engine + the
byte-level writer; ``pydicom``: the reference encoder, where both decline). One bad file never
stops the partition. An image storage object without pixel data is
``skipped/no-pixel-data`` unless ``write_no_pixel_data`` is set (then written, with a warning). A
dataset pydicom cannot encode is ``failed/write-error`` naming the element (tag path and VR, never
its value).

Pure and picklable: no dask, no state between calls, datasets never leave the worker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from deid_batch.dicom import reading
from deid_batch.dicom.rewrite import read_input, rewrite
from deid_batch.dicom.writing import Outcome, encode, unencodable_element, write_atomic
from deid_batch.errors import DatasetError
from deid_batch.hygiene import no_value_logging
from deid_batch.recipe.direct import deidentify_direct
from deid_batch.recipe.engine import EngineOptions, deidentify_dataset, finish_dataset
from deid_batch.recipe.parse import Recipe
from deid_batch.schemas import MANIFEST, Reason, Status
from deid_batch.stages import linkage, storage
from deid_batch.stages.layout import output_path
from deid_batch.stages.manifest import ManifestStore, PartResult
from deid_batch.stages.mapping import PartitionJoin, partition_variables
from deid_batch.stages.pixels import PixelConfig, clean_before_recipe

__all__ = ["ApplyConfig", "RecordConfig", "apply_and_record", "apply_partition", "apply_paths", "process_file"]

logger = logging.getLogger(__name__)

Row = tuple[str, "Mapping[str, Any] | None"]
_LINKAGE = "_linkage"  # a written row's linkage pairs (never in the manifest)


@dataclass(frozen=True)
class ApplyConfig:
    """Everything an apply worker needs, passed explicitly (nothing read from the environment)."""

    recipe: Recipe
    options: EngineOptions
    output_folder: str
    name_key: bytes = field(repr=False)
    overwrite: bool = False
    functions: tuple[tuple[str, Callable[..., Any]], ...] = ()
    #: the run's stamp (mtime of every output it writes; see :func:`~deid_batch.dicom.writing.write_atomic`)
    stamp_ns: int | None = None
    #: the run has a variable mapping (the manifest's ``mapped`` column says whether a file had a row)
    has_mapping: bool = False
    write_no_pixel_data: bool = False
    #: ``--clean-pixels``: blank the %filter regions before the header recipe (None: pixels untouched)
    pixels: PixelConfig | None = None
    byte_writer: bool = True  # False: always convert and encode with pydicom (the reference path)
    #: try the direct path first (``recipe.direct``: no pydicom Dataset; writer ``raw``); needs
    #: ``byte_writer``. False: always the engine (the reference the direct path is tested against)
    direct: bool = True
    #: fsspec options for URL inputs and outputs (may hold secrets: not in the repr)
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: the manifest folder when the run writes linkage files (:mod:`deid_batch.stages.linkage`)
    linkage_folder: str | None = None


def _row(source: str, output: str | None, status: Status, reason: str | None,
         warnings: Sequence[str], partition: int, uid: str | None = None,
         writer: str | None = None) -> dict[str, Any]:
    return {"source": source, "output": output, "status": status.value, "reason": reason,
            "warnings": list(warnings), "partition": partition, "sop_instance_uid": uid, "writer": writer}


def _sop_instance_uid(ds: Any) -> str | None:
    value = ds.get("SOPInstanceUID")
    return str(value) if value not in (None, "") else None


def _load(source: str, config: ApplyConfig) -> tuple[Any, bytes | None]:
    """The input's entry problem (or None) and its bytes: fetched for a URL; read once for the byte
    writer (parsed from memory and copied from), else None (pydicom reads the path)."""
    if config.byte_writer and not storage.is_url(source):
        problem, data, _size = reading.read_entry(source)  # one open: the entry's checks and the read
    else:
        problem, data = storage.load_input(source, config.storage_options)
    if problem is None and data is None and config.byte_writer:
        data = read_input(source)  # a symlink to a regular file: read through it
    return problem, data


def process_file(source: str, variables: Mapping[str, Any] | None, config: ApplyConfig,
                 partition: int = 0) -> dict[str, Any]:
    """De-identify one file; return its manifest row (never raises for bad input)."""
    problem, data = _load(source, config)
    if problem is not None:
        status, reason, message = problem
        return _row(source, None, Status(status), f"{Reason(reason).value}: {message}", (), partition)
    out = output_path(config.output_folder, config.name_key, source)
    label = os.path.basename(out)
    # the direct path writes no linkage pairs (a run that records them takes the engine's path)
    if data is not None and config.direct and config.byte_writer and config.pixels is None and \
            config.linkage_folder is None:
        direct = deidentify_direct(data, config.recipe, variables, config.options, label,
                                   dict(config.functions))
        if direct is not None:  # straight from the raw elements (else: the engine decides)
            return _store(source, out, direct.parts, direct.warnings, partition, config,
                          direct.sop_instance_uid, "raw")
    try:
        ds = reading.read_dataset(source, allow_no_pixel_data=config.write_no_pixel_data, data=data)
    except DatasetError as exc:
        status = reading.status_for(exc.reason)
        return _row(source, None, status, f"{exc.reason}: {exc}", (), partition)
    character_set = ds.get("SpecificCharacterSet")
    sop_class = reading.sop_class_of(ds)
    no_pixels = reading.lacks_pixel_data(ds)
    pixels = clean_before_recipe(ds, config.pixels) if config.pixels is not None else None
    if pixels is not None and pixels.stop is not None:
        return _row(source, None, pixels.stop[0], pixels.stop[1], pixels.warnings, partition)
    before = linkage.snapshot(ds) if config.linkage_folder else None
    try:
        result = deidentify_dataset(ds, config.recipe, variables, functions=dict(config.functions),
                                    options=config.options, source=label,
                                    finish=not config.byte_writer)
    except DatasetError as exc:
        return _row(source, None, Status.FAILED, f"{exc.reason}: {exc}", (), partition)
    except Exception as exc:  # noqa: BLE001 - a recipe must never stop the run; no message (may hold values)
        logger.debug("unexpected %s while de-identifying %s", type(exc).__name__, label)
        return _row(source, None, Status.FAILED,
                    f"{Reason.DEID_ERROR.value}: unexpected {type(exc).__name__} while applying the recipe",
                    (), partition)
    warnings = [*(pixels.warnings if pixels is not None else ()), *result.warnings]
    if no_pixels:
        warnings.append(f"{label}: {Reason.NO_PIXEL_DATA.value}: written because write_no_pixel_data is "
                        "set; an image storage object without pixel data is a header-only object or a "
                        "file cut exactly at an element boundary")
    encoded, writer = None, "bytes"
    if config.byte_writer:
        original = data if data is not None else read_input(source)
        encoded = (rewrite(result.dataset, original, character_set, sop_class=sop_class, instance_seed=label)
                if original is not None else None)
        if encoded is None:
            try:
                finish_dataset(result.dataset, label)
            except DatasetError as exc:
                return _row(source, None, Status.FAILED, f"{exc.reason}: {exc}", (), partition)
    if encoded is None:
        writer = "pydicom"
        try:
            encoded = encode(result.dataset, character_set=character_set, sop_class=sop_class,
                          instance_seed=label)
        except Exception as exc:  # noqa: BLE001 - pydicom cannot write some values back
            return _row(source, None, Status.FAILED, _write_error(result.dataset, exc), warnings, partition)
    row = _store(source, out, encoded, warnings, partition, config, _sop_instance_uid(result.dataset),
                 writer)
    return _with_linkage(row, before, result.dataset) if row["status"] == Status.WRITTEN.value else row


def _store(source: str, out: str, encoded: bytes | list[bytes | memoryview], warnings: list[str],
           partition: int, config: ApplyConfig, uid: str | None, writer: str) -> dict[str, Any]:
    """Write the output (its bytes, or its pieces in order) and return the file's manifest row."""
    try:
        if storage.is_url(out):
            whole = encoded if isinstance(encoded, bytes) else b"".join(encoded)
            outcome = storage.put_object(out, whole, overwrite=config.overwrite, stamp_ns=config.stamp_ns,
                                         options=config.storage_options)
        else:
            outcome = write_atomic(out, encoded, overwrite=config.overwrite, stamp_ns=config.stamp_ns)
    except OSError as exc:
        return _row(source, None, Status.FAILED,
                    f"{Reason.WRITE_ERROR.value}: cannot write {out}: {exc.strerror or type(exc).__name__}",
                    warnings, partition)
    if outcome is Outcome.EXISTS:
        return _row(source, out, Status.EXISTS, "exists: already exists, overwrite set to False. Not writing.",
                    warnings, partition, uid, writer)
    return _row(source, out, Status.WRITTEN, None, warnings, partition, uid, writer)


def _with_linkage(row: dict[str, Any], before: linkage.Snapshot | None, ds: Any) -> dict[str, Any]:
    """A written row with the file's linkage pairs (when the run writes linkage files)."""
    if before is not None:
        row[_LINKAGE] = linkage.pairs(before, ds)
    return row


def _write_error(ds: Any, exc: Exception) -> str:
    """The ``write-error`` reason: the element that cannot be encoded (tag path, VR), never a value."""
    try:
        where = unencodable_element(ds)
    except Exception:  # noqa: BLE001 - the search itself must not fail the row differently
        where = None
    what = f"element {where}" if where else "the de-identified dataset"
    return (f"{Reason.WRITE_ERROR.value}: {what} cannot be encoded ({type(exc).__name__}); "
            "its value does not fit its VR")


def apply_partition(rows: Sequence[Row], config: ApplyConfig, partition: int) -> pa.RecordBatch:
    """De-identify a partition; one manifest row per input row, in input order."""
    with no_value_logging():
        out = [process_file(source, variables, config, partition) for source, variables in rows]
    if config.linkage_folder:
        found = [row.pop(_LINKAGE) for row in out if _LINKAGE in row]
        linkage.write_part(config.linkage_folder, config.storage_options, partition,
                           [source for source, _ in rows], found)
    if config.has_mapping:
        for row, (_source, variables) in zip(out, rows):
            row["mapped"] = variables is not None
    return pa.RecordBatch.from_pylist(out, schema=MANIFEST)


@dataclass(frozen=True)
class RecordConfig:
    """An apply partition that joins its own variables and records its own manifest part.

    ``join`` says where the worker reads its partition's keys and mapping rows (None: no
    mapping); ``manifest`` is the manifest folder the worker writes ``part-N.parquet`` into.
    """

    apply: ApplyConfig
    manifest: str
    join: PartitionJoin | None = None


def apply_paths(paths: Sequence[str], config: RecordConfig, partition: int) -> tuple[pa.RecordBatch, int, int]:
    """Join the partition's variables, then :func:`apply_partition`: (manifest rows, files
    without a mapping row, files not in the keys table)."""
    if config.join is None:
        return apply_partition([(p, None) for p in paths], config.apply, partition), 0, 0
    variables, unmapped, missing = partition_variables(list(paths), config.join)
    return apply_partition(list(zip(paths, variables)), config.apply, partition), unmapped, missing


def apply_and_record(paths: Sequence[str], config: RecordConfig, partition: int) -> PartResult:
    """:func:`apply_paths`, then write the manifest part (atomically, named by partition: a
    retried task replaces it); return the partition's counts only."""
    batch, unmapped, missing = apply_paths(paths, config, partition)
    ManifestStore(config.manifest, config.apply.storage_options).write_part(
        partition, batch, {"unmapped": unmapped, "not_in_ids": missing})
    return PartResult.of(partition, batch, unmapped, missing)

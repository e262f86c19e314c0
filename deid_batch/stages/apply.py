"""Apply stage (workers): read, de-identify and write one partition of files.

Takes a partition of ``(source, variables)`` rows and a frozen :class:`ApplyConfig`; returns one
manifest record batch (:data:`~deid_batch.schemas.MANIFEST`) with exactly one row per input:
``written`` (a new output, or the identical output an earlier attempt of this job left), ``exists``
(a different file is at the output path and overwrite is off), ``skipped`` or ``failed`` with a
reason code. One bad file never stops the partition.

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
from deid_batch.dicom.writing import Outcome, encode, write_atomic
from deid_batch.errors import DatasetError
from deid_batch.hygiene import no_value_logging
from deid_batch.recipe.engine import EngineOptions, deidentify_dataset
from deid_batch.recipe.parse import Recipe
from deid_batch.schemas import MANIFEST, Reason, Status
from deid_batch.stages import storage
from deid_batch.stages.layout import output_path

__all__ = ["ApplyConfig", "apply_partition", "process_file"]

logger = logging.getLogger(__name__)

Row = tuple[str, "Mapping[str, Any] | None"]


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
    #: fsspec options for URL inputs and outputs (may hold secrets: not in the repr)
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)


def _row(source: str, output: str | None, status: Status, reason: str | None,
         warnings: Sequence[str], partition: int, uid: str | None = None) -> dict[str, Any]:
    return {"source": source, "output": output, "status": status.value, "reason": reason,
            "warnings": list(warnings), "partition": partition, "sop_instance_uid": uid}


def _sop_instance_uid(ds: Any) -> str | None:
    value = ds.get("SOPInstanceUID")
    return str(value) if value not in (None, "") else None


def process_file(source: str, variables: Mapping[str, Any] | None, config: ApplyConfig,
                 partition: int = 0) -> dict[str, Any]:
    """De-identify one file; return its manifest row (never raises for bad input)."""
    problem, data = storage.load_input(source, config.storage_options)
    if problem is not None:
        status, reason, message = problem
        return _row(source, None, Status(status), f"{Reason(reason).value}: {message}", (), partition)
    out = output_path(config.output_folder, config.name_key, source)
    label = os.path.basename(out)
    try:
        ds = reading.read_dataset(source, data=data)
    except DatasetError as exc:
        status = Status.SKIPPED if exc.reason == Reason.DICOMDIR.value else Status.FAILED
        return _row(source, None, status, f"{exc.reason}: {exc}", (), partition)
    character_set = ds.get("SpecificCharacterSet")
    try:
        result = deidentify_dataset(ds, config.recipe, variables, functions=dict(config.functions),
                                    options=config.options, source=label)
    except DatasetError as exc:
        return _row(source, None, Status.FAILED, f"{exc.reason}: {exc}", (), partition)
    except Exception as exc:  # noqa: BLE001 - a recipe must never stop the run; no message (may hold values)
        logger.debug("unexpected %s while de-identifying %s", type(exc).__name__, label)
        return _row(source, None, Status.FAILED,
                    f"{Reason.DEID_ERROR.value}: unexpected {type(exc).__name__} while applying the recipe",
                    (), partition)
    warnings = result.warnings
    try:
        encoded = encode(result.dataset, character_set=character_set)
    except Exception as exc:  # noqa: BLE001 - pydicom cannot write some values back
        return _row(source, None, Status.FAILED,
                    f"{Reason.WRITE_ERROR.value}: the de-identified dataset cannot be encoded "
                    f"({type(exc).__name__}); a value does not fit its VR", warnings, partition)
    try:
        if storage.is_url(out):
            outcome = storage.put_object(out, encoded, overwrite=config.overwrite, stamp_ns=config.stamp_ns,
                                         options=config.storage_options)
        else:
            outcome = write_atomic(out, encoded, overwrite=config.overwrite, stamp_ns=config.stamp_ns)
    except OSError as exc:
        return _row(source, None, Status.FAILED,
                    f"{Reason.WRITE_ERROR.value}: cannot write {out}: {exc.strerror or type(exc).__name__}",
                    warnings, partition)
    uid = _sop_instance_uid(result.dataset)
    if outcome is Outcome.EXISTS:
        return _row(source, out, Status.EXISTS, "exists: already exists, overwrite set to False. Not writing.",
                    warnings, partition)
    return _row(source, out, Status.WRITTEN, None, warnings, partition, uid)


def apply_partition(rows: Sequence[Row], config: ApplyConfig, partition: int) -> pa.RecordBatch:
    """De-identify a partition; one manifest row per input row, in input order."""
    with no_value_logging():
        out = [process_file(source, variables, config, partition) for source, variables in rows]
    if config.has_mapping:
        for row, (_source, variables) in zip(out, rows):
            row["mapped"] = variables is not None
    return pa.RecordBatch.from_pylist(out, schema=MANIFEST)

"""Mapping stage (client): load the variable mapping and join it to the identifiers.

Takes the identifiers' key columns (``source``, ``entity_id``, ``item_id``) and a mapping given as
a CSV or Parquet file, an Arrow table, a pandas DataFrame or deid's nested ``ids`` dict; returns a
table with ``source`` and one column per variable, in identifier order. The key columns are named
after the entity and item fields (``PatientID``, ``SOPInstanceUID``); rows with an item key are
item-level and win over entity-level rows (item key empty). The join is a left outer join on Arrow
tables: files without a mapping row keep null variables and are counted, never dropped. A missing
key column or a key that appears twice raises :class:`~deid_batch.errors.MappingError` before
anything is written. Error messages give row numbers, never key values.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from deid_batch.errors import MappingError

__all__ = ["JoinResult", "from_lookup", "join_variables", "load_mapping", "mapping_digest"]

_E, _I, _ROW = "__entity", "__item", "__row"


def _read_file(path: str) -> pa.Table:
    if not os.path.exists(path):
        raise MappingError(f"mapping file {path} does not exist; give a CSV or Parquet file")
    try:
        if path.lower().endswith((".parquet", ".pq")):
            return pq.read_table(path)
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    except (pa.ArrowInvalid, OSError) as exc:
        raise MappingError(f"mapping file {path} cannot be read as CSV/Parquet: {type(exc).__name__}") from None


def load_mapping(variables: Any, *, name: str = "mapping") -> pa.Table:
    """Load a mapping given as a path, an Arrow table or a pandas DataFrame."""
    if isinstance(variables, pa.Table):
        return variables
    if isinstance(variables, (str, os.PathLike)):
        return _read_file(os.fspath(variables))
    if hasattr(variables, "to_dict") and hasattr(variables, "columns"):  # pandas DataFrame
        return pa.Table.from_pandas(variables, preserve_index=False)
    raise MappingError(
        f"{name}: unsupported mapping type {type(variables).__name__}; give a CSV/Parquet path, "
        "a pyarrow.Table or a pandas.DataFrame"
    )


def from_lookup(
    ids: Mapping[str, Any], entity_field: str, item_field: str
) -> tuple[pa.Table, dict[str, Callable[..., Any]]]:
    """Turn deid's nested ``{entity: {item: {name: value}}}`` dict into a mapping table.

    Callables found among the values (for ``func:``) are returned separately by name.
    """
    rows: list[dict[str, Any]] = []
    functions: dict[str, Callable[..., Any]] = {}
    for entity, items in ids.items():
        if not isinstance(items, Mapping):
            raise MappingError(
                "ids must be the nested {entity: {item: {variable: value}}} dict of as_lookup() "
                f"or a table; found a {type(items).__name__} under an entity key"
            )
        for item, variables in items.items():
            if not isinstance(variables, Mapping):
                raise MappingError("ids[entity][item] must be a dict of variables")
            row: dict[str, Any] = {entity_field: entity, item_field: item}
            for key, value in variables.items():
                if callable(value):
                    functions[str(key)] = value
                elif key not in (entity_field, item_field):
                    row[str(key)] = None if value is None else str(value)
            rows.append(row)
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    table = pa.table({n: pa.array([r.get(n) for r in rows], pa.string()) for n in names}) if rows else None
    if table is None:
        table = pa.table({entity_field: pa.array([], pa.string()), item_field: pa.array([], pa.string())})
    return table, functions


def _check_unique(table: pa.Table, keys: list[str], shown: str, name: str) -> None:
    if table.num_rows == 0:
        return
    counts = table.group_by(keys).aggregate([([], "count_all")])
    dup = counts.filter(pc.greater(counts["count_all"], 1))
    if dup.num_rows:
        raise MappingError(
            f"{name}: {dup.num_rows} key(s) in column(s) {shown} appear more than once; "
            "each entity (or entity+item) must have exactly one row - remove the duplicate rows"
        )


@dataclass(frozen=True)
class JoinResult:
    table: pa.Table  # source + variable columns, identifier order
    variables: tuple[str, ...]
    unmapped: int  # files with no mapping row at all


def join_variables(
    keys: pa.Table, mapping: pa.Table, entity_field: str, item_field: str, *, name: str = "mapping"
) -> JoinResult:
    """Left-outer-join ``mapping`` onto ``keys`` (source, entity_id, item_id)."""
    if entity_field not in mapping.column_names:
        raise MappingError(
            f"{name} has no key column named {entity_field!r} (the entity id field); columns are "
            f"{', '.join(mapping.column_names)} - rename the key column or pass entity_id="
        )
    variables = [c for c in mapping.column_names if c not in (entity_field, item_field)]
    if not variables:
        raise MappingError(f"{name} has key columns but no variable columns")
    mapping = mapping.set_column(
        mapping.schema.get_field_index(entity_field), _E, pc.cast(mapping[entity_field], pa.string())
    )
    has_item = item_field in mapping.column_names
    if has_item:
        item_col = pc.cast(mapping[item_field], pa.string())
        mapping = mapping.set_column(mapping.schema.get_field_index(item_field), _I, item_col)
        is_item = pc.invert(pc.is_null(item_col))
        entity_rows = mapping.filter(pc.invert(is_item)).drop_columns([_I])
        item_rows = mapping.filter(is_item)
    else:
        entity_rows, item_rows = mapping, None
    _check_unique(entity_rows, [_E], repr(entity_field), name)
    base = keys.select(["source", "entity_id", "item_id"]).append_column(
        _ROW, pa.array(range(keys.num_rows), pa.int64())
    )
    ent = entity_rows.append_column("__hit_e", pa.array([True] * entity_rows.num_rows, pa.bool_()))
    joined = base.join(ent, keys="entity_id", right_keys=_E, join_type="left outer", right_suffix="__e")
    if item_rows is not None and item_rows.num_rows:
        _check_unique(item_rows, [_E, _I], f"{entity_field!r}+{item_field!r}", name)
        it = item_rows.append_column("__hit_i", pa.array([True] * item_rows.num_rows, pa.bool_()))
        it = it.rename_columns([c if c in (_E, _I, "__hit_i") else c + "__i" for c in it.column_names])
        joined = joined.join(
            it, keys=["entity_id", "item_id"], right_keys=[_E, _I], join_type="left outer"
        )
        cols = {
            v: pc.coalesce(joined[v + "__i"], joined[v]) if joined[v + "__i"].type == joined[v].type
            else pc.coalesce(pc.cast(joined[v + "__i"], pa.string()), pc.cast(joined[v], pa.string()))
            for v in variables
        }
        hit = pc.or_kleene(pc.fill_null(joined["__hit_e"], False), pc.fill_null(joined["__hit_i"], False))
    else:
        cols = {v: joined[v] for v in variables}
        hit = pc.fill_null(joined["__hit_e"], False)
    out = pa.table({"source": joined["source"], _ROW: joined[_ROW], **cols, "__hit": hit})
    out = out.sort_by(_ROW)
    unmapped = out.num_rows - int(pc.sum(pc.cast(out["__hit"], pa.int64())).as_py() or 0)
    return JoinResult(out.drop_columns([_ROW, "__hit"]), tuple(variables), unmapped)


def mapping_digest(mapping: pa.Table | None) -> str:
    """sha256 of the mapping's content, to refuse a resume with a different mapping."""
    if mapping is None:
        return "none"
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, mapping.schema) as writer:
        writer.write_table(mapping)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def check_mapping(mapping: pa.Table, entity_field: str, item_field: str, *, name: str = "mapping") -> None:
    """Raise :class:`MappingError` for a missing key column or a duplicate key (before any work)."""
    empty = pa.table({"source": pa.array([], pa.string()), "entity_id": pa.array([], pa.string()),
                      "item_id": pa.array([], pa.string())})
    join_variables(empty, mapping, entity_field, item_field, name=name)

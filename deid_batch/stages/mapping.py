"""Mapping stage (client): load the variable mapping and join it to the identifiers.

Takes the identifiers' key columns (``source``, ``entity_id``, ``item_id``) and a mapping given as
a CSV or Parquet file, an Arrow table, a pandas DataFrame or deid's nested ``ids`` dict; returns
each file's variables, in identifier order. The key columns are named after the entity and item
fields (``PatientID``, ``SOPInstanceUID``); rows with an item key are item-level and win over
entity-level rows (item key empty). The join is a left outer join on Arrow tables: files without a
mapping row keep null variables and are counted, never dropped. A missing key column or a key that
appears twice raises :class:`~deid_batch.errors.MappingError` before anything is written. Error
messages give row numbers and column names, never key values.

Cells are text. A CSV is read with every column as a string, cells exactly as written (leading
zeros, inner spaces, unicode); an empty cell is "not provided" (the engine's missing-variable
precaution). Other tables go through one rule (:func:`as_text_table`): strings stay, integers
become decimal text, anything else (floats, dates, booleans, ...) is refused naming the column.
Variable names belong to the user: the join works on internal positional column names, so a
variable called ``entity_id``, ``source`` or ``__row`` is never shadowed by the join's own columns.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import posixpath
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from deid_batch.errors import MappingError
from deid_batch.stages import storage

__all__ = ["JoinResult", "PartitionJoin", "as_text_table", "check_mapping", "from_lookup", "join_variables",
           "load_mapping", "mapping_digest", "partition_variables", "unused_mapping_rows"]

# internal column names of the join (never the user's: variables are renamed to _V + position)
_SRC, _EK, _IK, _ROW, _E, _I, _HIT_E, _HIT_I, _LINE = (
    "\x00src", "\x00ek", "\x00ik", "\x00row", "\x00e", "\x00i", "\x00hit_e", "\x00hit_i", "\x00line")
_V = "\x00v"
_DELIMITERS = (",", ";", "\t", "|")


# ------------------------------------------------------------------------------------------ loading
def _sniff_delimiter(path: str, header: str) -> str:
    if path.lower().endswith((".tsv", ".tab")):
        return "\t"
    counts = {d: header.count(d) for d in _DELIMITERS}
    if counts[","]:
        return ","
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _read_csv(path: str) -> pa.Table:
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            header_line = fh.readline()
    except UnicodeDecodeError:
        raise MappingError(
            f"mapping file {path} is not UTF-8 text; save it as 'CSV UTF-8' (spreadsheets) or "
            "re-export it with UTF-8 encoding"
        ) from None
    except OSError as exc:
        raise MappingError(f"mapping file {path} cannot be read ({exc.strerror})") from None
    if not header_line.strip():
        raise MappingError(f"mapping file {path} is empty or has no header row; the first row must name "
                           "the columns (e.g. PatientID,id)")
    delimiter = _sniff_delimiter(path, header_line)
    names = next(csv.reader(io.StringIO(header_line), delimiter=delimiter))
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise MappingError(f"mapping file {path}: column name(s) {', '.join(map(repr, duplicates))} appear "
                           "more than once in the header row; give each column its own name")
    if any(not n for n in names):
        raise MappingError(f"mapping file {path}: the header row has an empty column name (column "
                           f"{names.index('') + 1}); name every column")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        table = pacsv.read_csv(
            pa.BufferReader(raw),
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=True,
                null_values=[""], quoted_strings_can_be_null=True),
        )
    except pa.ArrowInvalid as exc:
        text = str(exc)
        if "UTF8" in text or "utf8" in text.lower():
            raise MappingError(f"mapping file {path} is not UTF-8 text; save it as 'CSV UTF-8' and retry") from None
        where = text.split("Row #")[-1].split(":")[0] if "Row #" in text else None
        hint = f" (near row {where})" if where and where.strip().isdigit() else ""
        raise MappingError(
            f"mapping file {path} cannot be read as {'tab' if delimiter == chr(9) else repr(delimiter)}-separated "
            f"text{hint}: a row has another number of cells than the header row"
        ) from None
    return table


def _read_file(path: str) -> pa.Table:
    if not os.path.exists(path):
        raise MappingError(f"mapping file {path} does not exist; give a CSV or Parquet file")
    if os.path.isdir(path):
        raise MappingError(f"mapping file {path} is a folder; give a CSV or Parquet file")
    if path.lower().endswith((".parquet", ".pq")):
        try:
            return pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise MappingError(f"mapping file {path} cannot be read as Parquet ({type(exc).__name__})") from None
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == b"PAR1":
        raise MappingError(f"mapping file {path} is a Parquet file; name it .parquet")
    return _read_csv(path)


def _column_as_text(column: pa.ChunkedArray, name: str, where: str) -> pa.ChunkedArray:
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind):
        return column.cast(pa.string())
    if pa.types.is_integer(kind):
        return pc.cast(column, pa.string())
    advice = ("read the file with every column as text (pandas: dtype=str, keep_default_na=False)"
              if pa.types.is_floating(kind) else "convert it to text as it should appear in the DICOM header")
    raise MappingError(
        f"{where}: column {name!r} holds {kind} values; mapping cells are text (integers are "
        f"converted to decimal text, {kind} is refused because its text is ambiguous): {advice}"
    )


def as_text_table(table: pa.Table, *, name: str = "mapping") -> pa.Table:
    """Every column as text by the documented rule (strings kept, integers to decimal text)."""
    names = [str(n) for n in table.column_names]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise MappingError(f"{name}: column name(s) {', '.join(map(repr, duplicates))} appear more than once")
    return pa.table({n: _column_as_text(table.column(i), n, name) for i, n in enumerate(names)})


def _read_url(url: str, storage_options: storage.StorageOptions | None) -> pa.Table:
    """A mapping object read through a private local copy (the readers' messages name the URL)."""
    try:
        data = storage.read_bytes(url, storage_options)
    except FileNotFoundError:
        raise MappingError(f"mapping file {url} does not exist; give a CSV or Parquet file") from None
    except OSError as exc:
        raise MappingError(f"mapping file {url} cannot be read ({type(exc).__name__})") from None
    with tempfile.TemporaryDirectory(prefix="deid-batch-mapping-") as tmp:
        local = os.path.join(tmp, posixpath.basename(url) or "mapping")
        with open(local, "wb") as fh:
            fh.write(data)
        try:
            return _read_file(local)
        except MappingError as exc:
            raise MappingError(str(exc).replace(local, url)) from None


def load_mapping(variables: Any, *, name: str = "mapping",
                 storage_options: storage.StorageOptions | None = None) -> pa.Table:
    """Load a mapping given as a path, an Arrow table or a pandas DataFrame; every column text."""
    if isinstance(variables, pa.Table):
        return as_text_table(variables, name=name)
    if isinstance(variables, (str, os.PathLike)):
        path = storage.normalise(variables)
        table = _read_url(path, storage_options) if storage.is_url(path) else _read_file(path)
        return as_text_table(table, name=name)
    if hasattr(variables, "to_dict") and hasattr(variables, "columns"):  # pandas DataFrame
        try:
            table = pa.Table.from_pandas(variables, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise MappingError(f"{name}: the DataFrame has a column of mixed types ({type(exc).__name__}); "
                               "convert every column to str") from None
        return as_text_table(table, name=name)
    raise MappingError(
        f"{name}: unsupported mapping type {type(variables).__name__}; give a CSV/Parquet path, "
        "a pyarrow.Table or a pandas.DataFrame"
    )


def from_lookup(
    ids: Mapping[str, Any], entity_field: str, item_field: str
) -> tuple[pa.Table | None, dict[str, Callable[..., Any]]]:
    """Turn deid's nested ``{entity: {item: {name: value}}}`` dict into a mapping table.

    Callables found among the values (for ``func:``) are returned separately by name; a dict
    that holds only functions gives no table (``None``), as deid accepts it.
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
            row: dict[str, Any] = {entity_field: str(entity), item_field: str(item)}
            for key, value in variables.items():
                if callable(value):
                    functions[str(key)] = value
                elif key not in (entity_field, item_field):
                    row[str(key)] = None if value is None else str(value)
            rows.append(row)
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    if set(names) <= {entity_field, item_field}:
        return None, functions
    table = pa.table({n: pa.array([r.get(n) for r in rows], pa.string()) for n in names})
    return table, functions


# ------------------------------------------------------------------------------------------ the join
@dataclass(frozen=True)
class JoinResult:
    sources: pa.Array  # identifier order
    table: pa.Table  # the variable columns (the user's names), one row per source
    variables: tuple[str, ...]
    unmapped: int  # files with no mapping row at all
    unused_rows: int = 0  # mapping rows whose key matched no file
    hit: pa.Array | None = None  # per source: had a mapping row

    def per_source(self) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """``(source, {variable: value})`` with provided values only, in identifier order;
        ``None`` instead of the dict for a file with no mapping row."""
        columns = [self.table.column(i).to_pylist() for i in range(self.table.num_columns)]
        hits = self.hit.to_pylist() if self.hit is not None else [True] * len(self.sources)
        for row, source in enumerate(self.sources.to_pylist()):
            yield source, ({v: col[row] for v, col in zip(self.variables, columns) if col[row] is not None}
                           if hits[row] else None)


def _row_numbers(rows: pa.Array, limit: int = 10) -> str:
    numbers = sorted(int(r) + 2 for r in rows.to_pylist())  # +1 for 1-based, +1 for the header row
    shown = ", ".join(map(str, numbers[:limit]))
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


def _check_unique(table: pa.Table, keys: list[str], shown: str, name: str) -> None:
    if table.num_rows == 0:
        return
    counts = table.group_by(keys).aggregate([([], "count_all")])
    dup = counts.filter(pc.greater(counts["count_all"], 1))
    if dup.num_rows:
        dup_rows = table.join(dup.select(keys), keys=keys, join_type="inner").column(_LINE).combine_chunks()
        raise MappingError(
            f"{name}: {dup.num_rows} key(s) in column(s) {shown} appear more than once (rows "
            f"{_row_numbers(dup_rows)}, counting the header as row 1); each entity (or entity+item) must "
            "have exactly one row - remove the duplicate rows"
        )


def _missing_key_message(name: str, entity_field: str, columns: list[str]) -> str:
    looks_wrong = len(columns) == 1 and any(d in columns[0] for d in _DELIMITERS)
    hint = (" (the whole header is one column: is the file separated by something else than ',', ';', "
            "tab or '|'?)" if looks_wrong else "")
    return (f"{name} has no key column named {entity_field!r}; its columns are {', '.join(map(repr, columns))}"
            f"{hint}. Name the column that holds each file's {entity_field} value {entity_field!r} "
            f"(the entity id field; choose another DICOM field with --entity-id / entity_id=)")


def join_variables(
    keys: pa.Table, mapping: pa.Table, entity_field: str, item_field: str, *, name: str = "mapping"
) -> JoinResult:
    """Left-outer-join ``mapping`` onto ``keys`` (source, entity_id, item_id)."""
    mapping = as_text_table(mapping, name=name)
    columns = list(mapping.column_names)
    if entity_field not in columns:
        raise MappingError(_missing_key_message(name, entity_field, columns))
    variables = tuple(c for c in columns if c not in (entity_field, item_field))
    if not variables:
        raise MappingError(f"{name} has key columns but no variable columns; add one column per var:NAME "
                           "of the recipe")
    internal = {v: f"{_V}{i}" for i, v in enumerate(variables)}
    renamed = {entity_field: _E, item_field: _I, **internal}
    m = mapping.rename_columns([renamed[c] for c in columns])
    m = m.append_column(_LINE, pa.array(range(m.num_rows), pa.int64()))
    has_item = _I in m.column_names
    if has_item:
        is_item = pc.invert(pc.is_null(m[_I]))
        entity_rows = m.filter(pc.invert(is_item)).drop_columns([_I])
        item_rows = m.filter(is_item)
    else:
        entity_rows, item_rows = m, None
    entity_rows = entity_rows.filter(pc.invert(pc.is_null(entity_rows[_E])))
    _check_unique(entity_rows, [_E], repr(entity_field), name)
    base = pa.table({
        _SRC: keys.column("source"), _EK: pc.cast(keys.column("entity_id"), pa.string()),
        _IK: pc.cast(keys.column("item_id"), pa.string()), _ROW: pa.array(range(keys.num_rows), pa.int64()),
    })
    ent = entity_rows.drop_columns([_LINE]).append_column(_HIT_E, pa.array([True] * entity_rows.num_rows, pa.bool_()))
    ent = ent.rename_columns([c + "e" if c.startswith(_V) else c for c in ent.column_names])
    joined = base.join(ent, keys=_EK, right_keys=_E, join_type="left outer")
    used_entities = set(joined.filter(pc.fill_null(joined[_HIT_E], False))[_EK].to_pylist())
    unused = sum(1 for k in entity_rows[_E].to_pylist() if k not in used_entities)
    cols: dict[str, pa.ChunkedArray]
    if item_rows is not None and item_rows.num_rows:
        _check_unique(item_rows, [_E, _I], f"{entity_field!r}+{item_field!r}", name)
        it = item_rows.drop_columns([_LINE]).append_column(_HIT_I, pa.array([True] * item_rows.num_rows, pa.bool_()))
        it = it.rename_columns([c + "i" if c.startswith(_V) else c for c in it.column_names])
        joined = joined.join(it, keys=[_EK, _IK], right_keys=[_E, _I], join_type="left outer")
        hits = joined.filter(pc.fill_null(joined[_HIT_I], False))
        used_items = set(zip(hits[_EK].to_pylist(), hits[_IK].to_pylist()))
        unused += sum(1 for k in zip(item_rows[_E].to_pylist(), item_rows[_I].to_pylist()) if k not in used_items)
        cols = {v: pc.coalesce(joined[internal[v] + "i"], joined[internal[v] + "e"]) for v in variables}
        hit = pc.or_kleene(pc.fill_null(joined[_HIT_E], False), pc.fill_null(joined[_HIT_I], False))
    else:
        cols = {v: joined[internal[v] + "e"] for v in variables}
        hit = pc.fill_null(joined[_HIT_E], False)
    order = pc.sort_indices(joined[_ROW])
    out = pa.table([pc.take(cols[v], order) for v in variables], names=list(variables))
    sources = pc.take(joined[_SRC], order).combine_chunks()
    unmapped = keys.num_rows - int(pc.sum(pc.cast(hit, pa.int64())).as_py() or 0)
    return JoinResult(sources, out, variables, unmapped, unused, pc.take(hit, order).combine_chunks())


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


# ------------------------------------------------------------------------------ the join per partition
@dataclass(frozen=True)
class PartitionJoin:
    """Where a worker finds the keys and the mapping of its partition (both Parquet, written once).

    ``keys`` holds ``source``, ``entity_id``, ``item_id`` per file (an identifiers table written by
    ``scan``, or the one ``apply`` gathered or wrote); ``mapping`` is the text mapping table
    (:func:`as_text_table`) with the ``entity_field`` / ``item_field`` key columns. Local paths or URLs.
    """

    keys: str
    mapping: str
    entity_field: str
    item_field: str
    name: str = "mapping"
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)


def _dataset(location: str, options: Mapping[str, Any]) -> pads.Dataset:
    if storage.is_url(location):
        fs, path = storage.filesystem(location, options)
        return pads.dataset(path, format="parquet", filesystem=fs)
    return pads.dataset(location, format="parquet")


def read_partition_keys(join: PartitionJoin, paths: list[str]) -> pa.Table:
    """The key rows of ``paths`` (each at most once, in no particular order)."""
    if not paths:
        return pa.table({"source": pa.array([], pa.string()), "entity_id": pa.array([], pa.string()),
                         "item_id": pa.array([], pa.string())})
    wanted = pa.array(paths, pa.string())
    source = pc.field("source")
    # the range lets Parquet statistics skip the row groups of other partitions (inputs are
    # scanned in the order they are applied); is_in keeps exactly this partition's files
    where = (source >= pc.min(wanted).as_py()) & (source <= pc.max(wanted).as_py()) & source.isin(wanted)
    table = _dataset(join.keys, join.storage_options).to_table(columns=["source", "entity_id", "item_id"],
                                                              filter=where)
    return table.cast(pa.schema([("source", pa.string()), ("entity_id", pa.string()), ("item_id", pa.string())]))


def _read_partition_mapping(join: PartitionJoin, entities: pa.Array) -> pa.Table:
    entity = pc.field(join.entity_field)
    return _dataset(join.mapping, join.storage_options).to_table(filter=entity.isin(entities))


def partition_variables(paths: list[str], join: PartitionJoin
                        ) -> tuple[list[Mapping[str, Any] | None], int, int]:
    """(each path's variables or None, files without a mapping row, files not in the keys table).

    Runs on a worker: reads only this partition's key rows and the mapping rows of their
    entities, and joins them with :func:`join_variables` (same rules as a whole-archive join).
    """
    keys = read_partition_keys(join, paths)
    entities = pc.unique(keys.column("entity_id").combine_chunks()).drop_null() if keys.num_rows else pa.array(
        [], pa.string())
    mapping = _read_partition_mapping(join, entities)
    joined = join_variables(keys, mapping, join.entity_field, join.item_field, name=join.name)
    by_source = dict(joined.per_source())
    missing = sum(1 for p in paths if p not in by_source)
    return [by_source.get(p) for p in paths], joined.unmapped, missing


def unused_mapping_rows(keys_location: str, mapping: pa.Table, entity_field: str, item_field: str,
                        storage_options: Mapping[str, Any] | None = None, *, name: str = "mapping") -> int:
    """Mapping rows whose key matches no row of the keys table (read in batches: O(mapping) memory)."""
    mapping = as_text_table(mapping, name=name)
    if mapping.num_rows == 0:
        return 0
    has_item = item_field in mapping.column_names
    is_item = pc.is_valid(mapping[item_field]) if has_item else pa.array([False] * mapping.num_rows)
    ent_keys = mapping[entity_field]
    pair_keys = (pc.binary_join_element_wise(mapping[entity_field], mapping[item_field], "\x00")
                 if has_item else None)
    used = pa.array([False] * mapping.num_rows)
    scanner = _dataset(keys_location, dict(storage_options or {})).scanner(columns=["entity_id", "item_id"])
    for batch in scanner.to_batches():
        if not batch.num_rows:
            continue
        ent = batch.column("entity_id").cast(pa.string())
        hit = pc.is_in(ent_keys, value_set=pc.unique(ent).drop_null())
        if pair_keys is not None:
            pairs = pc.binary_join_element_wise(ent, batch.column("item_id").cast(pa.string()), "\x00")
            hit = pc.if_else(is_item, pc.is_in(pair_keys, value_set=pc.unique(pairs).drop_null()), hit)
        used = pc.or_(used, pc.fill_null(hit, False))
    usable = pc.or_(pc.is_valid(ent_keys), is_item)  # (entity rows without a key are not rows at all)
    return int(pc.sum(pc.cast(pc.and_(usable, pc.invert(used)), pa.int64())).as_py() or 0)

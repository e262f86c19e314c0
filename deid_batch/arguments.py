"""Command-line arguments checked before anything starts or is written (used by :mod:`deid_batch.cli`).

Every check raises :class:`~deid_batch.errors.ConfigError` with one line that names the argument,
the path the user gave, what is wrong and the fix (``--ids m.csv: not a Parquet file (...); give
the IDS.parquet written by `deid-batch scan```). One function per concern, so a new option adds
one line to a table:

* :func:`check_execution` - ``--workers``, ``--partition-size``, ``--files``;
* :func:`check_inputs` - files the command reads (recipe, mapping, identifiers, config, key, DICOM);
* :func:`check_outputs` - files and folders the command creates (``scan --ids``, ``--out``,
  ``--manifest``, the demo folder): not of the wrong kind, in a folder that exists and is
  writable, never inside an input.

Paths in messages are the user's own arguments, never header values.
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import stat
from collections.abc import Callable

from deid_batch.errors import ConfigError
from deid_batch.stages import storage

__all__ = ["check_execution", "check_inputs", "check_outputs"]

_IDS_FIX = "give the IDS.parquet written by `deid-batch scan`"
_MAPPING_FIX = "give a CSV (comma-separated, UTF-8) or Parquet mapping with a PatientID column"
_RECIPE_FIX = ("give a deid recipe file (starting with FORMAT dicom), a folder holding one, or a "
               "bundled recipe name (dicom, dicom.ultrasound, dicom.xray.chest)")
_CONFIG_FIX = "give deid's config.json (a JSON object with get/put sections)"
_KEY_FIX = "give a readable file holding the secret key (at least 16 bytes)"
_DICOM_FIX = "give a DICOM file"


def _fail(arg: str, path: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{arg} {path}: {problem}; {fix}")


def _readable(path: str, arg: str, fix: str, *, folder_ok: bool = False) -> bool:
    """Check that ``path`` exists and can be opened; return True if it is a folder."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _fail(arg, path, "no such file", fix) from None
    except OSError as exc:
        raise _fail(arg, path, f"cannot be read ({exc.strerror})", fix) from None
    if stat.S_ISDIR(st.st_mode):
        if not folder_ok:
            raise _fail(arg, path, "is a folder, not a file", fix)
        try:
            os.listdir(path)
        except OSError as exc:
            raise _fail(arg, path, f"cannot be read ({exc.strerror})", fix) from None
        return True
    if not stat.S_ISREG(st.st_mode):
        raise _fail(arg, path, "is not a regular file", fix)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise _fail(arg, path, f"cannot be read ({exc.strerror})", fix) from None
    return False


def _text(path: str, arg: str, fix: str, what: str) -> None:
    """The start of ``path`` must be UTF-8 text (no NUL byte)."""
    with open(path, "rb") as fh:
        head = fh.read(65536)
    try:
        codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError:
        raise _fail(arg, path, f"is not a {what} (not UTF-8 text)", fix) from None
    if b"\0" in head:
        raise _fail(arg, path, f"is not a {what} (binary content)", fix)


def _parquet_columns(path: str, arg: str, fix: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowException, OSError) as exc:
        raise _fail(arg, path, f"is not a Parquet file ({type(exc).__name__})", fix) from None


def identifiers_file(path: str, arg: str = "--ids", *, columns: tuple[str, ...] = ()) -> None:
    """An identifiers table written by ``scan`` (the key columns, plus ``columns``)."""
    _readable(path, arg, _IDS_FIX)
    names = _parquet_columns(path, arg, _IDS_FIX)
    missing = [c for c in ("source", "entity_id", "item_id", *columns) if c not in names]
    if missing:
        raise _fail(arg, path, f"is a Parquet file but not an identifiers table (no column {', '.join(missing)})",
                    _IDS_FIX)


def _verify_ids(path: str, arg: str) -> None:
    identifiers_file(path, arg, columns=("fields",))


def _mapping(path: str, arg: str) -> None:
    _readable(path, arg, _MAPPING_FIX)
    if path.lower().endswith((".parquet", ".pq")):
        _parquet_columns(path, arg, _MAPPING_FIX)
    else:
        _text(path, arg, _MAPPING_FIX, "CSV file")


def _recipe(path: str, arg: str) -> None:
    if os.sep not in path and not os.path.lexists(path) and not path.endswith(".recipe"):
        return  # a bundled recipe name: the recipe loader resolves it (and says if it is unknown)
    try:
        is_folder = _readable(path, arg, _RECIPE_FIX, folder_ok=True)
    except ConfigError as exc:
        if os.path.lexists(path):
            raise
        raise _fail(arg, path, "no such file (nor a bundled recipe name)", _RECIPE_FIX) from exc
    if not is_folder:
        _text(path, arg, _RECIPE_FIX, "recipe")


def _config(path: str, arg: str) -> None:
    _readable(path, arg, _CONFIG_FIX)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except UnicodeDecodeError:
        raise _fail(arg, path, "is not a JSON file (not UTF-8 text)", _CONFIG_FIX) from None
    except json.JSONDecodeError as exc:
        raise _fail(arg, path, f"is not valid JSON (line {exc.lineno})", _CONFIG_FIX) from None
    if not isinstance(data, dict):
        raise _fail(arg, path, f"holds a JSON {type(data).__name__}, not an object", _CONFIG_FIX)


def _key(path: str, arg: str) -> None:
    _readable(path, arg, _KEY_FIX)


def _dicom(path: str, arg: str) -> None:
    _readable(path, arg, _DICOM_FIX)


Check = Callable[[str, str], None]

#: (command, argparse attribute, option as the user spells it, check); list options check each value.
INPUTS: tuple[tuple[str, str, str, Check], ...] = (
    ("scan", "config", "--config", _config),
    ("apply", "recipe", "--recipe", _recipe),
    ("apply", "vars", "--vars", _mapping),
    ("apply", "ids", "--ids", identifiers_file),
    ("apply", "key_file", "--key-file", _key),
    ("apply", "config", "--config", _config),
    ("verify", "ids", "--ids", _verify_ids),
    ("verify", "recipe", "--recipe", _recipe),
    ("inspect", "file", "FILE", _dicom),
    ("inspect", "recipe", "--recipe", _recipe),
)


def check_inputs(args: argparse.Namespace) -> None:
    """Every file the command will read exists, is readable and is of the right kind."""
    for command, attr, arg, check in INPUTS:
        if args.command != command:
            continue
        value = getattr(args, attr, None)
        for path in value if isinstance(value, list) else [value]:
            if path is not None and not storage.is_url(path):  # URLs: checked where they are read
                check(_local(path), arg)


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _writable_folder(folder: str, arg: str, path: str, fix: str) -> None:
    if not os.path.isdir(folder):
        raise _fail(arg, path, f"{folder} is not a folder", fix)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _fail(arg, path, f"cannot write in {folder} (permission denied)", fix)


def output_folder(path: str, arg: str) -> None:
    """A folder the command creates (or writes into): not a file; its nearest parent is writable."""
    fix = "give a folder you can write to"
    if os.path.lexists(path) and not os.path.isdir(path):
        raise _fail(arg, path, "is a file, not a folder", fix)
    _writable_folder(_nearest_existing(path), arg, path, fix)


def output_file(path: str, arg: str) -> None:
    """A file the command creates: not a folder, in an existing writable folder."""
    fix = "give a file name such as ids.parquet in an existing folder you can write to"
    if os.path.isdir(path):
        raise _fail(arg, path, "is a folder, not a file", fix)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise _fail(arg, path, f"folder {parent} does not exist", "create it first or " + fix)
    _writable_folder(parent, arg, path, fix)


OUTPUTS: tuple[tuple[str, str, str, Check], ...] = (
    ("scan", "ids", "--ids", output_file),
    ("apply", "out", "--out", output_folder),
    ("apply", "manifest", "--manifest", output_folder),
    ("strip-private", "out", "--out", output_folder),
    ("strip-private", "manifest", "--manifest", output_folder),
    ("demo", "folder", "FOLDER", output_folder),
)


def _inside_an_input(path: str, sources: list[str]) -> bool:
    return any(storage.inside(path, source) for source in sources)


def _local(path: str) -> str:
    """A ``file://`` URL as the local path it names; other paths as given."""
    return storage.normalise(path) if path.lower().startswith("file://") else path


def check_outputs(args: argparse.Namespace) -> None:
    """Every file or folder the command creates can be created; ``scan --ids`` is not inside an
    input (``apply`` checks its own folders against the inputs and says which overlaps)."""
    for command, attr, arg, check in OUTPUTS:
        path = getattr(args, attr, None) if args.command == command else None
        if path is None or storage.is_url(path):  # object stores need no folder; URLs checked in the run
            continue
        path = _local(path)
        check(path, arg)
        if command == "scan" and _inside_an_input(path, args.sources):
            raise _fail(arg, path, "is inside an input folder (inputs are never modified)",
                        "write the identifiers table outside every input")


def _positive(value: int | None, arg: str, what: str) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{arg} {value}: must be at least 1 ({what})")


def check_execution(args: argparse.Namespace) -> None:
    """Numbers that size the run: refused when they cannot work, before any cluster starts."""
    workers = getattr(args, "workers", None)
    if workers is not None and workers < 0:
        raise ConfigError(f"--workers {workers}: must be 0 (run in this process) or a number of "
                          "worker processes, e.g. the number of cores")
    _positive(getattr(args, "partition_size", None), "--partition-size", "files per task")
    _positive(getattr(args, "files", None), "--files", "files to generate")

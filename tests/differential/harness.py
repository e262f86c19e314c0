"""Run deid 0.4.13 and deid_batch on the same file and recipe, and diff the written files.

``run_deid`` calls ``deid.dicom.replace_identifiers`` exactly as the oracle rules say (one file,
``DeidRecipe(path, base=False)``, ``ids`` keyed by the absolute path, ``save=True`` into an output
folder); ``run_ours`` calls ``deid_batch.recipe.engine.deidentify_dataset`` on a freshly read dataset and
saves it the same way (``save_as`` with pydicom defaults). ``diff_files`` re-reads two files and
compares them element by element - preamble, file meta, every element at every depth (tag path, VR,
raw value bytes) and sequence item counts - and returns a list of :class:`Difference`; an empty list
means the files carry the same header.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

DEID_DATA = Path(pydicom.__file__).parent.parent / "deid_data" / "data"
SAMPLES = {
    "ctbrain1": DEID_DATA / "humans" / "ctbrain1.dcm",
    "ctbrain2": DEID_DATA / "humans" / "ctbrain2.dcm",
    "cat": DEID_DATA / "animals" / "cat.dcm",
    "us-greyscale": DEID_DATA / "ultrasounds" / "GREYSCALE_IMAGE.dcm",
    "us-rgb": DEID_DATA / "ultrasounds" / "RGB_IMAGE.dcm",
    "us-multiframe": DEID_DATA / "ultrasounds" / "ultrasound-multiframe.dcm",  # 43 MB
    **{f"cookie{i}": DEID_DATA / "dicom-cookies" / f"image{i}.dcm" for i in range(1, 8)},
}
BUNDLED = ("dicom", "dicom.ultrasound", "dicom.xray.chest")


# --------------------------------------------------------------------------------------------
# Recipes and cases


def recipe_text(body: str) -> str:
    """A full recipe: ``body`` as is if it has its own FORMAT line, else under ``%header``."""
    lines = [line.strip() for line in body.strip().splitlines()]
    if lines and lines[0].upper().startswith("FORMAT"):
        return "\n".join(lines) + "\n"
    return "FORMAT dicom\n\n%header\n\n" + "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Case:
    """One golden case: a recipe run by both tools on one input.

    ``source`` is ``"generated"`` (the factory file) or a key of :data:`SAMPLES`. ``changes``
    says whether deid's output differs from the input; it guards against a case that silently
    selects nothing.
    """

    id: str
    recipe: str
    source: str = "generated"
    variables: Mapping[str, Any] = field(default_factory=dict)
    functions: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    disable_skip: bool = False
    changes: bool = True

    def __str__(self) -> str:
        return self.id


# --------------------------------------------------------------------------------------------
# Running the two tools


@functools.cache
def bundled_deid_recipe(tag: str) -> Any:
    """deid's ``DeidRecipe`` for a bundled tag, parsed once per session."""
    from deid.config import DeidRecipe

    return DeidRecipe(tag, base=False)


def run_deid(
    source: Path,
    recipe: Path | str | list[Path | str],
    out_dir: Path,
    *,
    ids: Mapping[str, Any] | None = None,
    base: bool = False,
    remove_private_after: bool = False,
    remove_private: bool = False,
    disable_skip: bool = False,
) -> Path:
    """De-identify ``source`` with deid 0.4.13 and return the written file.

    ``recipe`` is a recipe path, a bundled tag or a list of them (``base`` appends deid's default
    recipe, as ``DeidRecipe(base=True)`` does). ``ids`` (variables and functions together, as
    deid wants them) is keyed by the absolute path of ``source``. With ``remove_private_after``
    the written file is re-read, stripped of private tags and written again (the oracle for our
    ``remove_private=True``); ``remove_private`` is deid's own option (stripping before the
    recipe), used only by the deviation tests.
    """
    from deid.config import DeidRecipe
    from deid.dicom import replace_identifiers
    from deid.dicom.fields import _get_fields_inner

    if isinstance(recipe, list | tuple):  # several recipes, combined by deid
        deid_recipe = DeidRecipe([str(r) for r in recipe], base=base)
    elif isinstance(recipe, str) and recipe in BUNDLED and not base:
        deid_recipe = bundled_deid_recipe(recipe)
    else:
        deid_recipe = DeidRecipe(str(recipe), base=base)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        [written] = replace_identifiers(
            dicom_files=[str(source)],
            deid=deid_recipe,
            ids={os.path.abspath(source): dict(ids or {})},
            save=True,
            output_folder=str(out_dir),
            remove_private=remove_private,
            disable_skip=disable_skip,
        )
    finally:
        _get_fields_inner.cache_clear()  # deid's process-wide cache keeps every dataset alive
    path = Path(written)
    if remove_private_after:
        ds = pydicom.dcmread(path, force=True)
        ds.remove_private_tags()
        ds.save_as(path)
    return path


@dataclass
class OursRun:
    path: Path
    warnings: list[str]


def run_ours(
    source: Path,
    recipe: Path | str | list[Path | str],
    out_dir: Path,
    *,
    base: bool = False,
    variables: Mapping[str, Any] | None = None,
    functions: Mapping[str, Callable[..., Any]] | None = None,
    remove_private: bool = False,
    disable_skip: bool = False,
) -> OursRun:
    """De-identify ``source`` with deid_batch's engine, save like deid, return path + warnings."""
    from deid_batch.recipe.engine import EngineOptions, deidentify_dataset
    from deid_batch.recipe.parse import load_recipe

    ds = pydicom.dcmread(source, force=True)
    result = deidentify_dataset(
        ds,
        recipe=load_recipe([str(r) for r in recipe] if isinstance(recipe, list | tuple)
                           else str(recipe), base=base),
        variables=dict(variables or {}),
        functions=dict(functions or {}),
        options=EngineOptions(remove_private=remove_private, disable_skip=disable_skip),
        source=str(source),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / Path(source).name
    result.dataset.save_as(path)
    assert_byte_writer_agrees(source, load_recipe([str(r) for r in recipe] if isinstance(recipe, list | tuple)
                                                  else str(recipe), base=base),
                              dict(variables or {}), dict(functions or {}),
                              EngineOptions(remove_private=remove_private, disable_skip=disable_skip))
    return OursRun(path, list(result.warnings))


def assert_byte_writer_agrees(source: Path, recipe: Any, variables: dict[str, Any],
                              functions: dict[str, Callable[..., Any]], options: Any) -> None:
    """Every case also proves the byte-level writer: de-identified twice more, written once by
    ``rewrite`` (falling back as the apply worker does) and once by ``writing.encode`` (every
    element converted); the two outputs must be the same bytes (or the same failure)."""
    from deid_batch.dicom.rewrite import rewrite
    from deid_batch.dicom.writing import encode
    from deid_batch.recipe.engine import deidentify_dataset, finish_dataset

    data = Path(source).read_bytes()
    outcomes = []
    for finish in (True, False, True):
        ds = pydicom.dcmread(source, force=True)
        charset = ds.get("SpecificCharacterSet")
        try:
            result = deidentify_dataset(ds, recipe=recipe, variables=variables, functions=functions,
                                        options=options, source="case", finish=finish)
            out = None if finish else rewrite(result.dataset, data, charset)
            if out is None:
                if not finish:
                    finish_dataset(result.dataset, "case")
                out = encode(result.dataset, character_set=charset)
            outcomes.append(("written", out, tuple(result.warnings)))
        except Exception as exc:  # noqa: BLE001 - both paths must fail alike
            outcomes.append(("failed", type(exc).__name__, str(exc)))
        if len(outcomes) == 2 and outcomes[0] == outcomes[1]:
            return
    if outcomes[0] != outcomes[2]:
        return  # random values (deid_func:basic_uuid ...): two reference runs differ already
    assert outcomes[0] == outcomes[1], "the byte-level writer and the pydicom path disagree"


def engine_available() -> bool:
    try:
        import deid_batch.recipe.engine  # noqa: F401
        import deid_batch.recipe.parse  # noqa: F401
    except ImportError:
        return False
    return True


def with_tempdir(directory: Path) -> Callable[[], None]:
    """Point ``tempfile`` (used by deid) at ``directory``; returns the undo callable."""
    previous = tempfile.tempdir
    directory.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(directory)

    def undo() -> None:
        tempfile.tempdir = previous

    return undo


# --------------------------------------------------------------------------------------------
# Diffing written files


@dataclass(frozen=True)
class Difference:
    """One difference between file ``a`` and file ``b``.

    ``path`` is ``file_meta/(0002,0003)``, ``(0010,0010)`` or, nested,
    ``(0040,0275)[0]/(0008,0050)``. ``kind`` is one of ``only-in-a``, ``only-in-b``, ``vr``,
    ``value``, ``items`` (sequence item count) or ``preamble``. ``a``/``b`` show the values.
    """

    path: str
    kind: str
    a: str = ""
    b: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.kind} a={self.a} b={self.b}"


@dataclass(frozen=True)
class _Leaf:
    vr: str
    key: object  # raw value bytes, decoded value, or item count for SQ
    shown: str


def _show(value: object) -> str:
    if isinstance(value, bytes):
        text = value[:24].hex() + ("..." if len(value) > 24 else "")
        return f"0x{text}"
    text = repr(list(value)) if isinstance(value, pydicom.multival.MultiValue) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _flatten(ds: Dataset, prefix: str) -> Iterator[tuple[str, _Leaf]]:
    for tag in sorted(ds.keys()):
        raw = ds.get_item(tag)
        elem = ds[tag]
        path = f"{prefix}{Tag(tag)}"
        if elem.VR == "SQ":
            items = elem.value or []
            yield path, _Leaf("SQ", len(items), f"{len(items)} item(s)")
            for i, item in enumerate(items):
                yield from _flatten(item, f"{path}[{i}]/")
            continue
        if isinstance(raw, RawDataElement):
            key: object = raw.value
        else:
            key = _show(elem.value)
        yield path, _Leaf(str(elem.VR), key, _show(elem.value))


def flatten_file(path: Path) -> dict[str, _Leaf]:
    """Every element of a written file, file meta first, keyed by tag path."""
    ds = pydicom.dcmread(path, force=True)
    leaves = dict(_flatten(ds.file_meta, "file_meta/")) if ds.file_meta is not None else {}
    leaves["preamble"] = _Leaf("", ds.preamble, _show(ds.preamble))
    leaves.update(_flatten(ds, ""))
    return leaves


def diff_files(a: Path, b: Path) -> list[Difference]:
    """Every difference between the two files; ``[]`` when they carry the same header."""
    left, right = flatten_file(a), flatten_file(b)
    diffs: list[Difference] = []
    gone: list[str] = []  # reported missing subtrees: their descendants are not repeated

    def under_gone(path: str) -> bool:
        return any(path.startswith(g + "[") for g in gone)

    for path in list(left) + [p for p in right if p not in left]:
        if under_gone(path):
            continue
        x, y = left.get(path), right.get(path)
        if x is None or y is None:
            kind = "only-in-b" if x is None else "only-in-a"
            diffs.append(Difference(path, kind, x.shown if x else "", y.shown if y else ""))
            gone.append(path)
        elif path == "preamble":
            if x.key != y.key:
                diffs.append(Difference(path, "preamble", x.shown, y.shown))
        elif x.vr != y.vr:
            diffs.append(Difference(path, "vr", x.vr, y.vr))
        elif x.key != y.key:
            kind = "items" if x.vr == "SQ" else "value"
            diffs.append(Difference(path, kind, x.shown, y.shown))
    return diffs


def value_at(path: Path, tag_path: str) -> str | None:
    """The shown value at ``tag_path`` in a written file (``None`` when absent)."""
    leaf = flatten_file(path).get(tag_path)
    return None if leaf is None else leaf.shown

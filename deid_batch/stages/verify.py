"""Verification: rescan de-identified outputs for original identifying values (workers).

Takes an output folder, the identifiers table of the inputs (:data:`~deid_batch.schemas.IDENTIFIERS`,
as ``deid-batch scan`` or ``get_identifiers`` write it), the run's recipe (by default the manifest
folder's ``_recipe.json``) and the manifest's source -> output linkage; returns a list of
:class:`Hit` (output file, tag path, kind), never a value. ``deid-batch verify`` exits 1 on any hit.
:func:`load_run` finds the recipe, :func:`prepare` builds the frozen :class:`VerifyConfig` and the
work items on the client, :func:`verify_partition` is the pure worker function (no dask);
:func:`deid_batch.api.run_verify` runs it in partitions on the dask workers.

Original values
    Every text value (VR AE AS CS DA DS DT IS LO LT PN SH ST TM UC UI UR UT) of every input field
    in the table, each value of a multi-valued element on its own, except values that identify no
    one: software, device and structural fields (:data:`NOT_IDENTIFYING`), private creators,
    well-known DICOM UIDs (pydicom's UID dictionary and anything under ``1.2.840.10008.``) and
    the tool's own values (:func:`tool_values`; UIDs the run key generates, when the key is at hand).

Two comparisons, one rule
    * **Searched everywhere** (substring, token-aligned): values of VR PN (the whole name and each
      component), LO, SH, DA, DT and UI, and the entity and item id of each row, of at least
      ``min_length`` (4) characters. Found in any text element of any output at any depth (file
      meta and private elements included) or in an output's file name, it is a hit.
    * **Compared in place** (exact element): every original value, short or not, of any VR above.
      An output element holding a value that its own input held at the same tag path is a hit (a
      value the recipe should have removed stayed where it was): ``PatientSex`` ``M``, an
      ``ImageComments`` text, a 3-character ID.

    Exempt, because the recipe put it there on purpose: an element named by a KEEP line of the
    recipe (any KEEP selector, as the recipe language reads it: keywords, tags, ``contains:`` ...
    ``select:VR:`` ...; an element inside a kept sequence too), by the run's skip list (which no
    action touches) or by a ``KEEP`` put-action, when it holds exactly its own input's value
    there; and an element an ``ADD``/``REPLACE`` line with a literal value (not ``var:``/
    ``func:``) matches, when it holds exactly that literal. A value from the user's mapping is not
    original unless it equals one, and then it is a hit like any other.

    A date the recipe shifted (an element a ``JITTER`` line or a ``deid_func:jitter`` value
    matches, holding a date or time that is no longer its input's value there) is not searched
    for the other original values: moved by a day or by years, it lands on someone else's date
    sooner or later (in an archive of thousands of studies, almost always). A date left unshifted
    is still a hit in place, and an original date anywhere else is still found.

    With the manifest, each output is compared with its own input; an output the manifest does not
    list is compared with every input (a value any input held at that path).

Where and how it is searched
    Only text VRs are read as text (never OB/OW/OF/OD/OL/OV, binary numbers, AT tags, pixel data);
    an ``UN`` element (a private element of an implicit-VR file) only when its whole value is
    printable text, as ``scan`` reads it. Matching is case-insensitive and token-aligned: UIDs
    match whole UIDs only, and inside a UI element only UIDs are looked for; other values match
    as a run of whole words (``Doe^John`` in ``Mr DOE, John``; ``1234`` not inside ``912345``);
    dates also as the first eight digits of a longer digit run (a DT). A file under the output
    folder that is not readable DICOM is a hit of kind ``unreadable``.

PS3.15 profiles and cleaned descriptors
    A stack that starts with ``ps3.15-basic`` keeps, by the profile's definition, every standard
    attribute its lines do not name: such an element holding its own input's value is kept on
    purpose (like a KEEP). An element a ``REPLACE ... deid_func:clean_descriptor`` line matches
    (``ps3.15-clean-descriptors``: the text kept, this file's identifying values removed) is a
    hit only if one of its own input's identifying values (the fields of the recipe's
    ``%values`` lists) still occurs in it, by the cleaner's own rule; without the manifest (no
    own input) the general rule applies.

Referential integrity (with the manifest)
    Every UID at any depth below the top level of an output (ReferencedSOPInstanceUID,
    SeriesInstanceUID in ReferencedSeriesSequence, FrameOfReferenceUID links, ...) whose own
    input held, at the same tag path, the SOPInstanceUID, SeriesInstanceUID, StudyInstanceUID
    or FrameOfReferenceUID of an instance of the input set (the identifiers table) must now be
    the same kind of UID of an output (the outputs' top-level values). One that is not is a
    :class:`BrokenReference` (output file, tag path, kind; the output's UID only on request):
    the recipe changed the instance's UIDs but not the references to it (or the other way
    round). A reference the recipe removed, or one that pointed outside the input set, is not
    checked. :func:`check_partition` gives each partition's hits and :class:`Links`;
    :func:`broken_references` resolves them once every output is read.

Where the files are
    OUTDIR, the identifiers table and the manifest folder may be fsspec URLs (``s3://...``) as
    for the other commands (:mod:`deid_batch.stages.storage`; ``storage_options`` to fsspec): the
    outputs are listed under the prefix and each worker fetches its outputs one at a time.

Memory: the candidate values (one entry per distinct value) are one shared graph node; each work
item carries its own input's (path, value) pairs; outputs are read one at a time by the workers.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from deid_batch.errors import ConfigError
from deid_batch.hygiene import no_value_logging
from deid_batch.recipe.fields import DicomField, Selector, compile_selector
from deid_batch.stages import storage

__all__ = [
    "NOT_IDENTIFYING", "REFERENCED_KINDS", "SEARCHED_VRS", "TEXT_VRS", "BrokenReference", "Checked",
    "Hit", "Links", "VerifyConfig", "WorkItem", "broken_references", "check_partition", "load_run",
    "prepare", "recipe_keeps", "tool_values", "verify_partition",
]

logger = logging.getLogger(__name__)

#: VRs whose values are text: the only ones read as text, and the only original values.
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM",
                      "UC", "UI", "UR", "UT"})
#: VRs whose values (of ``min_length`` or more) are searched for everywhere.
SEARCHED_VRS = frozenset({"PN", "LO", "SH", "DA", "DT", "UI"})
#: Fields that name software, devices, character sets or object classes, not people.
NOT_IDENTIFYING = frozenset({
    "ImplementationVersionName", "ImplementationClassUID", "TransferSyntaxUID",
    "FileMetaInformationVersion", "FileMetaInformationGroupLength", "SpecificCharacterSet",
    "SOPClassUID", "MediaStorageSOPClassUID", "ReferencedSOPClassUID", "InstanceCreatorUID",
    "CreatorVersionUID", "PrivateInformationCreatorUID", "Manufacturer", "ManufacturerModelName",
    "SoftwareVersions",
})
_STANDARD_UID_ROOT = "1.2.840.10008."
_NOT_SEARCHED = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})  # pixel data
_UID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)+")
_WORD_RE = re.compile(r"[0-9a-z]+")
_UID_SHAPE = re.compile(r"^[0-9]+(?:\.[0-9]+)+$")
_PRIVATE_CREATOR = re.compile(r"\([0-9A-Fa-f]{3}[13579BDFbdf],00[1-9A-Fa-f][0-9A-Fa-f]\)$")
_LITERAL_ACTIONS = ("ADD", "REPLACE")
_NOT_LITERAL = ("var:", "func:", "deid_func:")


@dataclass(frozen=True, order=True)
class Hit:
    """One original value found in an output: where, and what kind of value - never the value.

    ``file`` is the output path, ``tag_path`` the element path (``RequestAttributesSequence[0].
    AccessionNumber``, private elements by tag ``(0009,1001)``; ``<name>`` for the file name,
    ``<file>`` for an unreadable file), ``kind`` the VR of the original field (``PN``, ``DA``, ...),
    ``entity_id`` / ``item_id``, ``unreadable`` or ``unverified`` (its worker was lost).
    """

    file: str
    tag_path: str
    kind: str

    def __str__(self) -> str:
        return f"{self.file}: {self.tag_path}: original {self.kind} value found"


#: the top-level UIDs a reference may point at: keyword -> kind
REFERENCED_KINDS = {"SOPInstanceUID": "instance", "SeriesInstanceUID": "series",
                    "StudyInstanceUID": "study", "FrameOfReferenceUID": "frame of reference"}


@dataclass(frozen=True, order=True)
class BrokenReference:
    """A UID reference of an output that pointed at an instance of the input set and no longer
    resolves inside the output set: output file, tag path, kind (``instance``, ``series``,
    ``study``, ``frame of reference``); ``uid`` (the output's value) only when asked for."""

    file: str
    tag_path: str
    kind: str
    uid: str = ""

    def __str__(self) -> str:
        where = f" ({self.uid})" if self.uid else ""
        return f"{self.file}: {self.tag_path}: {self.kind} reference{where} resolves to no output"


@dataclass
class Links:
    """A partition's referential data: the outputs' own top-level UIDs by kind, and the
    references that pointed into the input set (file, tag path, kind, the output's values)."""

    own: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    refs: list[tuple[str, str, str, tuple[str, ...]]] = field(default_factory=list)

    def merge(self, other: Links) -> None:
        for kind, uids in other.own.items():
            self.own[kind].update(uids)
        self.refs.extend(other.refs)


@dataclass
class Checked:
    """What :func:`check_partition` returns: the hits and the referential data."""

    hits: list[Hit] = field(default_factory=list)
    links: Links = field(default_factory=Links)


def combine_checked(parts: Sequence[Checked]) -> Checked:
    out = Checked()
    for part in parts:
        out.hits.extend(part.hits)
        out.links.merge(part.links)
    return out


def broken_references(links: Links, show_uids: bool = False) -> list[BrokenReference]:
    """The references of ``links`` whose every value is no output's UID of that kind."""
    broken = set()
    for file, path, kind, values in links.refs:
        missing = [v for v in values if v not in links.own.get(kind, set())]
        for value in missing:
            broken.add(BrokenReference(file, path, kind, value if show_uids else ""))
    return sorted(broken)


# ------------------------------------------------------------------------------ values
def tool_values() -> frozenset[str]:
    """Values deid_batch and pydicom write themselves (implementation UID and version names)."""
    from deid_batch.dicom import writing

    values = {str(PYDICOM_IMPLEMENTATION_UID), f"PYDICOM {'.'.join(pydicom.__version_info__)}"}
    for name in ("IMPLEMENTATION_CLASS_UID", "IMPLEMENTATION_VERSION_NAME"):
        value = getattr(writing, name, None)
        if value:
            values.add(str(value))
    return frozenset(values)


def _well_known_uid(value: str) -> bool:
    from pydicom._uid_dict import UID_dictionary

    return value.startswith(_STANDARD_UID_ROOT) or value in UID_dictionary


def _parts(text: str) -> tuple[str, ...]:
    """The values of a (multi-valued) element's text, padding stripped."""
    return tuple(p for p in (part.strip().strip("\0").strip() for part in text.split("\\")) if p)


def _key(value: str) -> str | tuple[str, ...] | None:
    """The search form of a value: a UID string, or a tuple of lowercase words."""
    if _UID_SHAPE.match(value):
        return value
    words = tuple(_WORD_RE.findall(value.lower()))
    return words or None


def _long_enough(key: str | tuple[str, ...], min_length: int) -> bool:
    return len(key) >= min_length if isinstance(key, str) else sum(len(w) for w in key) >= min_length


def _identifying(path: str) -> bool:
    """Is a table field an original value (not software, device, class or private-creator text)?"""
    last = path.rsplit(".", 1)[-1]
    return last not in NOT_IDENTIFYING and not _PRIVATE_CREATOR.search(last)


@dataclass
class Candidates:
    """Values searched for everywhere: UIDs as strings, other values as word-token tuples."""

    kinds: dict[object, str] = field(default_factory=dict)
    by_first: dict[str, set[tuple[str, ...]]] = field(default_factory=lambda: defaultdict(set))

    def add(self, vr: str, kind: str, value: str, min_length: int, excluded: frozenset[str]) -> None:
        for part in _parts(value):
            if part in excluded or _well_known_uid(part):
                continue
            whole = _key(part)
            if whole is None or not _long_enough(whole, min_length):
                continue
            self.kinds.setdefault(whole, kind)
            if vr == "PN":
                for component in re.split(r"[\^=]", part):
                    key = _key(component.strip())
                    if key is not None and key != whole and _long_enough(key, min_length):
                        self.kinds.setdefault(key, kind)

    def finish(self) -> None:
        """Index the word-run candidates by their first word."""
        for key in self.kinds:
            if isinstance(key, tuple):
                self.by_first[key[0]].add(key)

    def found(self, text: str, uid_only: bool) -> Iterator[object]:
        """Candidate keys occurring in ``text`` (only whole UIDs when ``uid_only``)."""
        for uid in _UID_RE.findall(text):
            if uid in self.kinds:
                yield uid
        if uid_only:
            return
        words = _WORD_RE.findall(text.lower())
        for i, word in enumerate(words):
            for key in self.by_first.get(word, ()):
                if tuple(words[i:i + len(key)]) == key:
                    yield key
            if len(word) > 8 and word.isdigit() and (word[:8],) in self.kinds:
                yield (word[:8],)


#: one original field of an input: (tag path, VR, its values)
Original = tuple[str, str, tuple[str, ...]]


#: One output to check and its own input's original fields as JSON text (None: not in the
#: manifest). Plain text on purpose: dask walks nested tuples of every task it submits, and a
#: string is one atom however many fields it holds.
WorkItem = tuple[str, str | None]


def _work_item(output: str, own: tuple[Original, ...] | None) -> WorkItem:
    return output, None if own is None else json.dumps(own, separators=(",", ":"))


def _own_of(item: WorkItem) -> dict[str, tuple[str, tuple[str, ...]]] | None:
    if item[1] is None:
        return None
    return {path: (vr, tuple(values)) for path, vr, values in json.loads(item[1])}


@dataclass(frozen=True)
class VerifyConfig:
    """What a verify worker needs; built once by :func:`prepare`, shared by every task."""

    root: str
    candidates: Candidates
    keep: tuple[Selector, ...]
    skip: frozenset[str]
    literals: tuple[tuple[Selector, tuple[str, ...]], ...] = ()
    #: tag path -> (VR, every input's values there): for outputs without a manifest row
    anywhere: dict[str, tuple[str, frozenset[str], frozenset[tuple[str, ...]]]] | None = None
    #: the input set's top-level instance, series, study and frame of reference UIDs -> kind
    referenced: dict[str, str] = field(default_factory=dict)
    #: a PS3.15 stack: elements no header line names are kept on purpose (``named`` says which are)
    keeps_unnamed: bool = False
    named: tuple[frozenset[str], tuple[Selector, ...]] = (frozenset(), ())
    #: elements the recipe cleans (clean_descriptor), and the fields whose values they are cleaned of
    cleaned: tuple[Selector, ...] = ()
    identifying: frozenset[str] = frozenset()
    #: elements the recipe shifts (JITTER lines, ``deid_func:jitter`` values): dates it moved
    shifted: tuple[Selector, ...] = ()
    #: fsspec options when the outputs are URLs (may hold secrets: not in the repr)
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)


# ------------------------------------------------------------------------------ the recipe
def recipe_keeps(recipe: Any) -> tuple[str, ...]:
    """The KEEP selectors of a recipe (header KEEP lines; ``values:``/``fields:`` lists are not
    understood by deid's KEEP, so not here either)."""
    out = []
    for action in getattr(recipe, "header", ()):
        if action.action == "KEEP" and action.field:
            if compile_selector(str(action.field)).kind not in ("values", "fields"):
                out.append(str(action.field))
    return tuple(out)


def _recipe_literals(recipe: Any) -> tuple[tuple[Selector, tuple[str, ...]], ...]:
    out = []
    for action in getattr(recipe, "header", ()):
        value = action.value
        if action.action in _LITERAL_ACTIONS and action.field and value and not value.startswith(_NOT_LITERAL):
            selector = compile_selector(str(action.field))
            if selector.kind not in ("values", "fields"):
                out.append((selector, _parts(str(value))))
    return tuple(out)


_PS315_BASIC = "ps3.15-basic"
_CLEANER = "deid_func:clean_descriptor"
_JITTER = "deid_func:jitter"
#: the text of a date, time or date-time (one value or several): what a shifted element holds
_DATE_SHAPED = re.compile(r"^[0-9.+\-\\ ]*$")


def _named(recipe: Any) -> tuple[frozenset[str], tuple[Selector, ...]]:
    """Every header line's selector: exact ones as a set of keys, the others compiled."""
    exact: set[str] = set()
    other: list[Selector] = []
    for action in getattr(recipe, "header", ()):
        if not action.field:
            continue
        selector = compile_selector(str(action.field))
        if selector.kind == "exact":
            exact.add(selector.key)
        elif selector.kind not in ("values", "fields"):
            other.append(selector)
    return frozenset(exact), tuple(dict.fromkeys(other))


def _cleaning(recipe: Any) -> tuple[tuple[Selector, ...], frozenset[str]]:
    header = getattr(recipe, "header", ())
    cleaned = tuple(compile_selector(str(a.field)) for a in header
                    if a.action == "REPLACE" and a.field and a.value == _CLEANER)
    fields = frozenset(str(entry.field) for _, entries in getattr(recipe, "values", ())
                       for entry in entries if entry.action == "FIELD")
    return cleaned, fields


def _shifting(recipe: Any) -> tuple[Selector, ...]:
    """Selectors of the lines that shift dates: JITTER, and a ``deid_func:jitter`` value."""
    out = []
    for action in getattr(recipe, "header", ()):
        if action.field and (action.action == "JITTER" or str(action.value or "").startswith(_JITTER)):
            selector = compile_selector(str(action.field))
            if selector.kind not in ("values", "fields"):
                out.append(selector)
    return tuple(dict.fromkeys(out))


def _is_named(config: VerifyConfig, entry: DicomField) -> bool:
    exact, other = config.named
    if any(key in exact for keys in entry.static.keys.values() for key in keys):
        return True
    return any(s.matches(entry) for s in other)


def _still_identifying(text: str, own: dict[str, tuple[str, tuple[str, ...]]],
                       fields: frozenset[str]) -> bool:
    """Would the cleaner still remove something of this file's own identifying values?"""
    from deid_batch.recipe.keyed import clean_text

    values = [v for path, (_, parts) in own.items() if path.rsplit(".", 1)[-1] in fields for v in parts]
    return bool(values) and clean_text(text, values) != text


def load_run(manifest: str | None, recipe: Any, base: Any,
             options: storage.StorageOptions | None = None) -> tuple[Any, dict[str, Any]]:
    """(effective recipe, ``_run.json``) for a verify run; ``ConfigError`` naming the fix."""
    from deid_batch.recipe.parse import load_recipe
    from deid_batch.stages.manifest import RECIPE_FILE, RUN_FILE

    run: dict[str, Any] = {}
    folder = storage.Folder(manifest, options) if manifest is not None else None
    if folder is not None and folder.exists(RUN_FILE):
        run = json.loads(folder.read_bytes(RUN_FILE).decode("utf-8"))
    if recipe is not None:
        return load_recipe(recipe, base=base), run
    if manifest is None:
        raise ConfigError("verify needs the recipe the outputs were made with: give the apply run's "
                          "manifest folder (--manifest DIR; default OUTDIR.manifest) or --recipe R")
    path = storage.join(manifest, RECIPE_FILE)
    if folder is None or not folder.exists(RECIPE_FILE):
        raise ConfigError(f"manifest folder {manifest} has no {RECIPE_FILE} (made by an older "
                          "deid-batch?); give the recipe the outputs were made with: --recipe R")
    try:
        data = json.loads(folder.read_bytes(RECIPE_FILE).decode("utf-8"))
        loaded = load_recipe(data["recipe"], base=None)
        stack = tuple(str(s) for s in data.get("stack") or ())
        return (dataclasses.replace(loaded, stack=stack) if stack else loaded), run
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: cannot read the run's recipe ({type(exc).__name__}); give the "
                          "recipe the outputs were made with: --recipe R") from None


# ------------------------------------------------------------------------------ preparing
def _load_ids(ids: str | os.PathLike[str] | pa.Table, options: storage.StorageOptions | None = None
              ) -> pa.Table:
    if isinstance(ids, pa.Table):
        return ids
    path = os.fspath(ids)
    if not storage.exists(path, options):
        raise ConfigError(f"identifiers table {path} does not exist; give the table `deid-batch scan` "
                          "wrote for the inputs (--ids IDS.parquet)")
    columns = ["source", "entity_id", "item_id", "fields"]
    try:
        if storage.is_url(path):
            fs, where = storage.filesystem(path, options)
            return pq.read_table(where, columns=columns, filesystem=fs)
        return pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise ConfigError(f"identifiers table {path} cannot be read as Parquet ({type(exc).__name__}); "
                          "give the table `deid-batch scan` wrote (--ids IDS.parquet)") from None


def _load_pairing(manifest: str | None, root: str, made_in: str | None,
                  options: storage.StorageOptions | None = None) -> dict[str, str]:
    """output path -> source path, from the manifest (rows with an output). Outputs listed under
    the run's own output folder (``_run.json``) are found under ``root`` when OUTDIR was moved."""
    if manifest is None:
        return {}
    from deid_batch.stages.manifest import read_manifest

    table = read_manifest(manifest, options).select(["source", "output"])
    pairing = {}
    for src, out in zip(table["source"].to_pylist(), table["output"].to_pylist()):
        if out:
            out = storage.normalise(out)
            if made_in and made_in != root and storage.inside(out, made_in) and out != made_in:
                out = storage.join(root, _relative(out, made_in))
            pairing[out] = src
    return pairing


def _relative(path: str, root: str) -> str:
    if storage.is_url(path):
        return path[len(root.rstrip("/")) + 1:]
    return os.path.relpath(path, root)


def _output_files(output_folder: str, options: storage.StorageOptions | None = None) -> list[str]:
    if storage.is_url(output_folder):
        return [storage.normalise(u) for u in storage.list_entries(output_folder, options)]
    found: list[str] = []
    for folder, dirs, files in os.walk(output_folder):
        dirs.sort()
        found.extend(os.path.join(folder, name) for name in sorted(files))
    return found


def _originals(fields: Iterable[dict[str, Any]] | None, excluded: frozenset[str]) -> tuple[Original, ...]:
    out = []
    for f in fields or ():
        vr, value, path = f.get("vr"), f.get("value"), str(f.get("path"))
        if not value or vr not in TEXT_VRS or not _identifying(path):
            continue
        parts = tuple(p for p in _parts(str(value)) if p not in excluded and not _well_known_uid(p))
        if parts:
            out.append((path, str(vr), parts))
    return tuple(out)


def _generated_uids(key: bytes | None, cands: Candidates) -> frozenset[str]:
    if not key:
        return frozenset()
    from deid_batch.recipe.keyed import keyed_uid_value as keyed_uid

    return frozenset(keyed_uid(key, c) for c in cands.kinds if isinstance(c, str))


def prepare(output_folder: str, ids: str | os.PathLike[str] | pa.Table, *, recipe: Any,
            run: dict[str, Any], manifest: str | None, min_length: int = 4,
            key: bytes | None = None, storage_options: storage.StorageOptions | None = None
            ) -> tuple[VerifyConfig, list[WorkItem]]:
    """The shared config and one work item per file under ``output_folder`` (a folder or a URL)."""
    from deid_batch.recipe.engine import DEFAULT_PUT_ACTIONS, DEFAULT_SKIP

    options = dict(storage_options or {})
    table = _load_ids(ids, options)
    pairing = _load_pairing(manifest, output_folder, run.get("output_folder"), options)
    excluded = tool_values()
    cands = Candidates()
    own: dict[str, tuple[Original, ...]] = {}
    referenced: dict[str, str] = {}
    for row in table.to_pylist():
        fields = row.get("fields") or []
        for f in fields:
            vr, value = f.get("vr"), f.get("value")
            if value and str(f.get("path")) in REFERENCED_KINDS:
                for part in _parts(str(value)):
                    referenced.setdefault(part, REFERENCED_KINDS[str(f.get("path"))])
            if value and vr in SEARCHED_VRS and _identifying(str(f.get("path"))):
                cands.add(str(vr), str(vr), str(value), min_length, excluded)
        for column in ("entity_id", "item_id"):
            if row.get(column):
                cands.add("", column, str(row[column]), min_length, excluded)
        own[str(row["source"])] = _originals(fields, excluded)
    generated = _generated_uids(key, cands)
    for uid in generated & cands.kinds.keys():
        del cands.kinds[uid]
    cands.finish()
    files = _output_files(output_folder, options)
    items = [_work_item(p, own.get(pairing[p]) if p in pairing else None) for p in files]
    anywhere = _anywhere(own.values()) if any(i[1] is None for i in items) else None
    skip = frozenset(run.get("skip") or DEFAULT_SKIP)
    puts = run.get("put_actions")
    put_keeps = ([p.split()[1] for p in puts if p.startswith("KEEP ") and len(p.split()) > 1]
                 if puts is not None else [a.field for a in DEFAULT_PUT_ACTIONS if a.action == "KEEP"])
    keep = tuple(compile_selector(k) for k in (*recipe_keeps(recipe), *put_keeps))
    logger.debug("verify: %d candidate values, %d output files, %d KEEP selectors",
                 len(cands.kinds), len(files), len(keep))
    stack = tuple(getattr(recipe, "stack", ()) or ())
    cleaned, identifying = _cleaning(recipe)
    config = VerifyConfig(output_folder, cands, keep, skip, _recipe_literals(recipe), anywhere,
                          referenced, keeps_unnamed=bool(stack) and stack[0] == _PS315_BASIC,
                          named=_named(recipe), cleaned=cleaned, identifying=identifying,
                          shifted=_shifting(recipe),
                          storage_options=options)
    return config, items


def _anywhere(rows: Iterable[tuple[Original, ...]]
              ) -> dict[str, tuple[str, frozenset[str], frozenset[tuple[str, ...]]]]:
    parts: dict[str, set[str]] = defaultdict(set)
    wholes: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    vrs: dict[str, str] = {}
    for originals in rows:
        for path, vr, values in originals:
            vrs.setdefault(path, vr)
            parts[path].update(values)
            wholes[path].add(values)
    return {p: (vrs[p], frozenset(parts[p]), frozenset(wholes[p])) for p in vrs}


# ------------------------------------------------------------------------------ the worker
@dataclass
class _Element:
    """One element of an output as the checks see it."""

    path: str
    vr: str
    text: str
    entry: DicomField
    kept: bool  # an enclosing sequence is kept (KEEP line or skip list)


def _text(elem: DataElement) -> str | None:
    """The text of a text-VR element (or a printable UN one); None for anything else."""
    vr = elem.VR
    value = elem.value
    if value is None or value == "":
        return None
    if vr == "UN":
        if not isinstance(value, (bytes, bytearray)):
            return None
        try:
            text = bytes(value).rstrip(b"\x00 ").decode("utf-8")
        except UnicodeDecodeError:
            return None
        return text if text and text.isprintable() else None
    if vr not in TEXT_VRS or isinstance(value, (bytes, bytearray)):
        return None
    if isinstance(value, (list, tuple)) or elem.VM > 1:
        return "\\".join(str(v) for v in value)
    return str(value)


def _walk(ds: Dataset, config: VerifyConfig, prefix: str = "", name: str | None = None,
          uid: str | None = None, parents: tuple[tuple[int, int], ...] = (), kept: bool = False,
          meta: bool = False) -> Iterator[_Element]:
    for elem in ds:
        tag = int(elem.tag)
        if tag in _NOT_SEARCHED:
            continue
        keyword = elem.keyword or ""
        tagstr = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        path = prefix + (keyword if keyword and not elem.tag.is_private else tagstr)
        ename = keyword if name is None else f"{name}__{keyword}"
        euid = tagstr if uid is None else f"{uid}__{tagstr}"
        entry = DicomField(elem, ename, euid, meta, parents, ds)
        here = kept or keyword in config.skip or tagstr in config.skip or _selected(config.keep, entry)
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value or ()):
                yield from _walk(item, config, f"{path}[{i}].", ename, f"{euid}__{i}",
                                 (*parents, (tag, i)), here, meta)
            continue
        text = _text(elem)
        if text:
            yield _Element(path, str(elem.VR), text, entry, here)


def _selected(selectors: Iterable[Selector], entry: DicomField) -> bool:
    return any(s.matches(entry) for s in selectors)


def _read(path: str, config: VerifyConfig) -> list[_Element] | None:
    try:
        if storage.is_url(path):
            ds = pydicom.dcmread(io.BytesIO(storage.read_bytes(path, config.storage_options)))
        else:
            ds = pydicom.dcmread(path, defer_size="64 KB")
        meta = getattr(ds, "file_meta", None)
        out = list(_walk(meta, config, meta=True)) if meta is not None else []
        return out + list(_walk(ds, config))
    except Exception:  # noqa: BLE001 - any unreadable output is reported, never raised
        return None


def _links(output: str, elements: Sequence[_Element], own: dict[str, tuple[str, tuple[str, ...]]] | None,
           config: VerifyConfig, links: Links) -> None:
    """This output's own top-level UIDs and its references that pointed into the input set."""
    for el in elements:
        if el.vr != "UI" or el.entry.is_filemeta:
            continue
        if el.path in REFERENCED_KINDS:
            links.own[REFERENCED_KINDS[el.path]].update(_parts(el.text))
        elif own is not None and el.path in own:
            kinds = {config.referenced[v] for v in own[el.path][1] if v in config.referenced}
            if len(kinds) == 1:
                links.refs.append((output, el.path, kinds.pop(), _parts(el.text)))


def _check_file(item: WorkItem, config: VerifyConfig, links: Links | None = None) -> list[Hit]:
    output = item[0]
    elements = _read(output, config)
    found: set[tuple[str, str]] = set()
    if elements is None:
        found.add(("<file>", "unreadable"))
    cands = config.candidates
    for key in cands.found(_relative(output, config.root), uid_only=False):
        found.add(("<name>", cands.kinds[key]))
    own = _own_of(item)
    if links is not None and elements is not None and config.referenced:
        _links(output, elements, own, config, links)
    for el in elements or ():
        parts = _parts(el.text)
        if own is not None and config.cleaned and _selected(config.cleaned, el.entry):
            if _still_identifying(el.text, own, config.identifying):
                found.add((el.path, own.get(el.path, (el.vr, ()))[0]))
            continue  # kept but cleaned: only its own identifying values count
        kept = el.kept or (config.keeps_unnamed and not _is_named(config, el.entry))
        if own is not None:
            vr, theirs = own.get(el.path, ("", ()))
            same_whole, same_parts = parts == theirs, set(parts) & set(theirs)
        else:
            vr, every, wholes = (config.anywhere or {}).get(el.path, ("", frozenset(), frozenset()))
            same_whole, same_parts = parts in wholes, set(parts) & every
        if same_whole and kept:
            continue  # kept on purpose, unchanged
        if _literal(config, el, parts):
            continue  # the recipe's own value
        if same_parts and not kept:
            found.add((el.path, vr))  # a value that stayed where it was
        elif config.shifted and not same_parts and _DATE_SHAPED.match(el.text) \
                and _selected(config.shifted, el.entry):
            continue  # a date the recipe moved: it may land on any other date of the archive
        for key in cands.found(el.text, uid_only=el.vr == "UI"):
            found.add((el.path, cands.kinds[key]))
    return [Hit(output, tag_path, kind) for tag_path, kind in sorted(found)]


def _literal(config: VerifyConfig, el: _Element, parts: tuple[str, ...]) -> bool:
    return any(parts == value and selector.matches(el.entry) for selector, value in config.literals)


def verify_partition(items: Sequence[WorkItem], config: VerifyConfig, partition: int = 0) -> list[Hit]:
    """The hits of a partition of outputs (pure: reads the outputs, writes nothing)."""
    return check_partition(items, config, partition).hits


def check_partition(items: Sequence[WorkItem], config: VerifyConfig, partition: int = 0) -> Checked:
    """The hits and the referential :class:`Links` of a partition of outputs (pure)."""
    out = Checked()
    with no_value_logging():
        for item in items:
            out.hits.extend(_check_file(item, config, out.links))
    return out

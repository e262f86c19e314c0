"""Verification: rescan de-identified outputs for any original identifier the recipe took out.

Takes an output folder and the identifiers table of the inputs (:data:`~deid_batch.schemas.IDENTIFIERS`,
as written by ``deid-batch scan`` or ``get_identifiers``), optionally the run's manifest; returns a
list of :class:`Hit` (file, tag path, kind), never a value. ``deid-batch verify`` exits 1 on any hit.

What is searched for
    The **candidates** are the identifier values of the table: every field of VR PN (the whole
    name and each name component), LO, SH, DA, DT and UI, and the entity and item id of each row.
    Values shorter than ``min_length`` characters (after trimming) are ignored: short codes such as
    ``CT`` or ``1`` would match everywhere and identify no one. Software and device names
    (:data:`NOT_IDENTIFYING`, e.g. ImplementationVersionName, Manufacturer) and private creator
    strings are not searched for either.

Removed or replaced, versus kept on purpose
    A recipe may keep a value on purpose (``KEEP StudyDate``). Standard DICOM UIDs (root
    ``1.2.840.10008.``: SOP classes, transfer syntaxes) are never searched for.

    * ``keep=`` given (the fields the recipe keeps, e.g. the default recipe's KEEP list): a value
      is exempt only where an output holds it at its own tag path inside one of those fields.
      Strict: the only mode that also catches a value a broken recipe left in place.
    * ``keep=`` not given: keeping is inferred. A value counts as kept when an output holds it at
      the same tag path where an input held it, except original instance UIDs, which are never
      exempt (every recipe of this project replaces them).

    With a manifest, an output is compared with its own input (source -> output) and a kept value
    is exempt in that output only: one patient's id kept in their own file but found in another
    patient's file (a mapping mix-up) is a hit. Without a manifest (or for an output it does not
    list), any input counts and a kept value is exempt in every output (coarser: it may miss such
    cross-file mix-ups). Every other candidate was removed or replaced by the recipe, and finding
    it anywhere is a hit. Comparing at the tag path, not only by value, is what makes a
    deliberately kept date harmless while the same value in a private tag is reported.

Where it is searched
    Every element of every output (file meta, nested sequence items at any depth, remaining private
    elements), in its text form; binary values (OB, OW, UN, private bulk data) are decoded as
    Latin-1 and searched as text. PixelData is not searched (burned-in text is out of reach of a
    header check). The output file names are searched too. A file under the output folder that is
    not readable DICOM is reported as a hit of kind ``unreadable``: it cannot be verified.

Matching
    Case-insensitive and token-aligned: UIDs match whole UIDs only (``1.2.3`` does not match inside
    ``1.2.3.4``), other values match as a run of whole words (``Doe^John`` matches ``DOE JOHN`` and
    ``Mr Doe, John``; ``1234`` does not match inside ``912345``), and dates also match as the first
    eight digits of a longer digit run (a DT).

Memory: the candidate sets (one entry per distinct value) and, with a manifest, one set of
(path, value) pairs per input are held on the client; outputs are read one at a time.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

__all__ = ["CANDIDATE_VRS", "NOT_IDENTIFYING", "Hit", "recipe_keeps", "verify"]

logger = logging.getLogger(__name__)

#: VRs whose values are searched for (plus the entity and item ids of each row).
CANDIDATE_VRS = frozenset({"PN", "LO", "SH", "DA", "DT", "UI"})
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_NOT_SEARCHED = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})  # pixel data
_UID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)+")
_WORD_RE = re.compile(r"[0-9a-z]+")
_UID_SHAPE = re.compile(r"^[0-9]+(?:\.[0-9]+)+$")
_STANDARD_UID_ROOT = "1.2.840.10008."
#: Fields that name software, devices or private blocks, not people: never searched for.
NOT_IDENTIFYING = frozenset({
    "ImplementationVersionName", "ImplementationClassUID", "TransferSyntaxUID",
    "Manufacturer", "ManufacturerModelName", "SoftwareVersions",
})
_PRIVATE_CREATOR = re.compile(r"\([0-9A-Fa-f]{3}[13579BDFbdf],00[1-9A-Fa-f][0-9A-Fa-f]\)$")


@dataclass(frozen=True)
class Hit:
    """One original identifier found in an output: where, and what kind of value - never the value.

    ``file`` is the output path, ``tag_path`` the element path (``RequestAttributesSequence[0].
    AccessionNumber``, private elements by tag ``(0009,1001)``; ``<name>`` for the file name,
    ``<file>`` for an unreadable file), ``kind`` the VR of the original field (``PN``, ``DA``, ...),
    ``entity_id`` / ``item_id``, or ``unreadable``.
    """

    file: str
    tag_path: str
    kind: str

    def __str__(self) -> str:
        return f"{self.file}: {self.tag_path}: original {self.kind} value found"


@dataclass
class _Candidates:
    """Normalised candidate values: UIDs as strings, other values as word-token tuples."""

    kinds: dict[object, str] = field(default_factory=dict)  # key -> kind
    origins: dict[object, set[object]] = field(default_factory=lambda: defaultdict(set))
    by_first: dict[str, set[tuple[str, ...]]] = field(default_factory=lambda: defaultdict(set))

    def add(self, key: object, kind: str, origin: object) -> None:
        self.kinds.setdefault(key, kind)
        self.origins[key].add(origin)

    def finish(self) -> None:
        """Index the word-run candidates by their first word."""
        for key in self.kinds:
            if isinstance(key, tuple):
                self.by_first[key[0]].add(key)

    def exempt(self, key: object, kept: set[object]) -> bool:
        """Is this value kept (itself, or as part of a kept whole value such as a name)?"""
        return key in kept or bool(self.origins[key] & kept)


def _key(value: str) -> object | None:
    """The normalised form of a value: a UID string, or a tuple of lowercase words."""
    value = value.strip().strip("\0").strip()
    if _UID_SHAPE.match(value):
        return value
    words = tuple(_WORD_RE.findall(value.lower()))
    return words or None


def _long_enough(key: object, min_length: int) -> bool:
    if isinstance(key, str):
        return len(key) >= min_length
    return isinstance(key, tuple) and sum(len(w) for w in key) >= min_length


def _field_keys(vr: str, value: str, min_length: int) -> Iterator[tuple[object, object]]:
    """(candidate key, origin key) for one table value: each value of a multi-valued element, and
    each component of a person name. Standard DICOM UIDs (SOP classes, transfer syntaxes) are
    not candidates: they identify no one."""
    for part in value.split("\\"):
        whole = _key(part)
        if whole is None or not _long_enough(whole, min_length):
            continue
        if isinstance(whole, str) and whole.startswith(_STANDARD_UID_ROOT):
            continue
        yield whole, whole
        if vr == "PN":
            for component in re.split(r"[\^=]", part):
                key = _key(component)
                if key is not None and key != whole and _long_enough(key, min_length):
                    yield key, whole


def _pairs_of_row(fields: Iterable[dict[str, str | None]]) -> set[tuple[str, object]]:
    out = set()
    for f in fields or ():
        if f.get("value") and f.get("vr") in CANDIDATE_VRS:
            for part in str(f["value"]).split("\\"):
                key = _key(part)
                if key is not None:
                    out.add((str(f["path"]), key))
    return out


# ----------------------------------------------------------------------------- reading outputs
def _text(elem: DataElement) -> str | None:
    """Text of an element as the scan stage writes it (multi-values joined with a backslash)."""
    value = elem.value
    if value is None:
        return None
    if elem.VR in _BINARY_VRS or isinstance(value, (bytes, bytearray)):
        if not isinstance(value, (bytes, bytearray)):
            return None
        return bytes(value).decode("latin-1")
    if isinstance(value, (list, tuple)) or elem.VM > 1:
        return "\\".join(str(v) for v in value)
    return str(value)


def _elements(ds: Dataset, prefix: str = "") -> Iterator[tuple[str, DataElement]]:
    """(tag path, element) for every non-sequence element, sequence items included."""
    for elem in ds:
        path = prefix + (elem.keyword or str(elem.tag))
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value or ()):
                yield from _elements(item, f"{path}[{i}].")
        else:
            yield path, elem


def _read_output(path: str) -> list[tuple[str, str]] | None:
    """(tag path, text) of every element of an output file; None if it cannot be read."""
    try:
        ds = pydicom.dcmread(path)
        out = []
        for source in (getattr(ds, "file_meta", None) or Dataset(), ds):
            for tag_path, elem in _elements(source):
                if elem.tag in _NOT_SEARCHED:
                    continue
                text = _text(elem)
                if text:
                    out.append((tag_path, text))
        return out
    except Exception:  # any unreadable output is reported, never raised
        return None


# ---------------------------------------------------------------------------------- matching
def _found(text: str, cands: _Candidates) -> Iterator[object]:
    """Candidate keys occurring in ``text``."""
    for uid in _UID_RE.findall(text):
        if uid in cands.kinds:
            yield uid
    words = _WORD_RE.findall(text.lower())
    for i, word in enumerate(words):
        for key in cands.by_first.get(word, ()):
            if tuple(words[i : i + len(key)]) == key:
                yield key
        if len(word) > 8 and word.isdigit() and (word[:8],) in cands.kinds:
            yield (word[:8],)


_PLAIN_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9]*|\([0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\)|[0-9A-Fa-f]{8})$")


def recipe_keeps(recipe: Any) -> frozenset[str] | None:
    """The ``keep=`` list of a "remove everything" recipe (its KEEP fields), else ``None``.

    Strict verification only makes sense when the recipe removes everything it does not name
    (``REMOVE ALL``) and names what it keeps plainly (keywords or tags). For any other recipe
    (one that keeps what it does not mention, or KEEPs through expanders such as ``contains:``)
    this returns ``None``: verify then infers what was kept.
    """
    header = getattr(recipe, "header", ())
    if not any(a.action == "REMOVE" and str(a.field).lower() == "all" for a in header):
        return None
    keeps = [str(a.field) for a in header if a.action == "KEEP"]
    if not all(_PLAIN_FIELD.match(k) for k in keeps):
        return None
    return frozenset(keeps)


def _identifying(path: str) -> bool:
    """Is a table field worth searching for (not software, device or private-creator text)?"""
    last = path.rsplit(".", 1)[-1]
    return last not in NOT_IDENTIFYING and not _PRIVATE_CREATOR.search(last)


def _may_keep(tag_path: str, keep_names: set[str] | None) -> bool:
    """Can the element at ``tag_path`` hold a value kept on purpose?"""
    if keep_names is None:
        return True
    last = tag_path.rsplit(".", 1)[-1].lower()
    return last in keep_names or tag_path.lower() in keep_names


def _load_ids(ids: str | os.PathLike[str] | pa.Table) -> pa.Table:
    if isinstance(ids, pa.Table):
        return ids
    return pq.read_table(os.fspath(ids), columns=["source", "entity_id", "item_id", "fields"])


def _load_pairing(manifest: str | None) -> dict[str, str]:
    """output path -> source path, from the manifest (written rows only)."""
    if manifest is None:
        return {}
    from deid_batch.stages.manifest import read_manifest

    table = read_manifest(manifest).select(["source", "output"])
    return {
        os.path.abspath(out): src
        for src, out in zip(table["source"].to_pylist(), table["output"].to_pylist())
        if out
    }


def _output_files(output_folder: str) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(output_folder):
        dirs.sort()
        found.extend(os.path.join(folder, name) for name in sorted(files))
    return found


def verify(
    output_folder: str | os.PathLike[str],
    ids: str | os.PathLike[str] | pa.Table,
    *,
    manifest: str | None = None,
    min_length: int = 4,
    keep: Iterable[str] | None = None,
) -> list[Hit]:
    """Rescan every output for original identifier values that the recipe removed or replaced.

    Parameters
    ----------
    output_folder : path
        The de-identified output folder (every file under it is checked).
    ids : path or pyarrow.Table
        The identifiers table of the inputs (Parquet file or dataset folder, or a table).
    manifest : path, optional
        The run's manifest folder: pairs each output with its input, so a value counts as kept
        only when the output holds it where its *own* input did.
    min_length : int
        Shorter values are not searched for.
    keep : iterable of str, optional
        The fields the recipe keeps on purpose (keywords such as ``StudyDate``, or tags
        ``(0008,0020)``). Given, a value is exempt only where it sits at its own path in one of
        these fields (strict: a value the recipe failed to remove in place is a hit). Not given,
        keeping is inferred: any non-UID value at its own path is taken as kept, and original
        instance UIDs are never exempt (every recipe of this project replaces them).

    Returns
    -------
    list of Hit
        One per (file, tag path, kind) found; empty when the outputs are clean.
    """
    root = os.path.abspath(os.fspath(output_folder))
    pairing = _load_pairing(manifest)
    cands, per_source, global_pairs = _collect(_load_ids(ids), bool(pairing), min_length)
    files = _output_files(root)
    keep_names = None if keep is None else {k.lower() for k in keep}
    kept_global: set[object] = set()  # kept in an output with no manifest row: exempt everywhere
    kept_own: dict[str, set[object]] = {}  # kept in a paired output: exempt in that output only
    for path in files:  # first pass: what did the recipe keep at its own path?
        source = pairing.get(path)
        if source in per_source:
            _add_kept(path, per_source[source], keep_names, kept_own.setdefault(path, set()))
        else:
            _add_kept(path, global_pairs, keep_names, kept_global)
    logger.debug("verify: %d candidate values, %d output files", len(cands.kinds), len(files))
    hits: list[Hit] = []
    for path in files:  # second pass: search (files are read again: memory stays flat)
        hits.extend(_search(path, root, cands, kept_global, kept_own.pop(path, set())))
    for hit in hits:
        logger.info("%s", hit)
    return hits


def _collect(table: pa.Table, paired: bool, min_length: int
             ) -> tuple[_Candidates, dict[str, set[tuple[str, object]]], set[tuple[str, object]]]:
    """Candidates, (path, value) pairs per source (when paired) and over all sources."""
    cands = _Candidates()
    per_source: dict[str, set[tuple[str, object]]] = {}
    global_pairs: set[tuple[str, object]] = set()
    for row in table.to_pylist():
        fields = row.get("fields") or []
        for f in fields:
            if f.get("value") and f.get("vr") in CANDIDATE_VRS and _identifying(str(f["path"])):
                for key, origin in _field_keys(str(f["vr"]), str(f["value"]), min_length):
                    cands.add(key, str(f["vr"]), origin)
        for column in ("entity_id", "item_id"):
            if row.get(column):
                for key, origin in _field_keys("", str(row[column]), min_length):
                    cands.add(key, column, origin)
        pairs = _pairs_of_row(fields)
        if paired:
            per_source[str(row["source"])] = pairs
        global_pairs |= pairs
    cands.finish()
    return cands, per_source, global_pairs


def _add_kept(path: str, expected: set[tuple[str, object]], keep_names: set[str] | None,
              kept: set[object]) -> None:
    """Add to ``kept`` the values this output holds at the path where an input held them."""
    for tag_path, text in _read_output(path) or ():
        if not _may_keep(tag_path, keep_names):
            continue
        for part in text.split("\\"):
            key = _key(part)
            if key is None or (tag_path, key) not in expected:
                continue
            if keep_names is not None or not isinstance(key, str):  # UIDs: only if declared
                kept.add(key)


def _search(path: str, root: str, cands: _Candidates, kept_global: set[object],
            kept_own: set[object]) -> list[Hit]:
    """The hits of one output file (its name included)."""
    elems = _read_output(path)
    found: set[tuple[str, str]] = set()
    if elems is None:
        found.add(("<file>", "unreadable"))
    texts = [("<name>", os.path.relpath(path, root))] + (elems or [])
    for tag_path, text in texts:
        for key in _found(text, cands):
            if not (cands.exempt(key, kept_global) or cands.exempt(key, kept_own)):
                found.add((tag_path, cands.kinds[key]))
    return [Hit(path, tag_path, kind) for tag_path, kind in sorted(found)]

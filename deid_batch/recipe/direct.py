"""Direct path: a file de-identified straight from its raw elements, with no pydicom Dataset and no
field index built for it.

Takes the bytes of a file, a loaded :class:`~deid_batch.recipe.parse.Recipe`, the file's variables
and the :class:`~deid_batch.recipe.engine.EngineOptions`; returns the output file's bytes, the
warnings and the output's SOPInstanceUID (:class:`DirectResult`), or ``None`` when it cannot prove
the result equals the engine's (``engine.deidentify_dataset`` + ``rewrite.rewrite`` / ``encode``);
the caller then takes that path. Never raises for bad input.

**Which recipes**: those :func:`~deid_batch.recipe.direct_plan.direct_plan_of` compiles (see
:mod:`deid_batch.recipe.direct_plan`); deid's bundled ``dicom`` family is one.

**Which files**: explicit VR little endian (also its encapsulated syntaxes) and implicit VR
little endian, preamble + ``DICM``, file meta and data set walked exactly by
:mod:`deid_batch.dicom.raw` up to the last byte, no character set inside an item, the character
set kept, an image storage object with its pixel data, not a DICOMDIR. In explicit VR no ``UN``
element (pydicom may re-read it with the dictionary's VR); in implicit VR every element gets the VR
pydicom's ``raw_element_vr`` gives it (the dictionary's, LO for a private creator, the private
dictionary's under the element's creator, else UN; pixel data OW); ``US or SS`` (at the top level,
beside PixelRepresentation) and ``OB or OW`` elements are copied or removed but never converted
here (a recipe that changes one sends the file to the engine), and a file with another ambiguous
VR, an unknown public tag, an undefined length on anything but a sequence or a data set that looks
explicit is refused. Outputs keep the input's transfer syntax. Anything else: ``None``.

The semantics are the engine's, step by step: KEEP protects (through the skip list) the tags of
the top-level and file-meta elements it matches; the index is every element not skipped and not
below a skipped sequence; each run of plain REMOVE lines removes the indexed elements one of its
selectors matches; ADD sets an indexed top-level element's value, else adds (or replaces) the
element, and a missing ``var:`` removes the top-level element with a warning; private tags go
after the recipe (``remove_private``); elements are written as the byte-level writer writes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.charset import default_encoding
from pydicom.datadict import dictionary_VR, keyword_for_tag, private_dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.tag import BaseTag
from pydicom.uid import UID, SecondaryCaptureImageStorage
from pydicom.valuerep import VR as _VR

from deid_batch.dicom import elements, raw, values
from deid_batch.dicom.reading import DICOMDIR_SOP_CLASS, is_image_storage
from deid_batch.dicom.rewrite import (
    _BULK_VRS,
    _CHARSET,
    _ITEM_END,
    _ITEM_START,
    _PIXEL_DATA,
    _PREFIX,
    _SEQ_END,
    _TAG,
    _TEXT_VRS,
    _U32,
    _ascii,
    _canonical,
    _Out,
)
from deid_batch.dicom.writing import (
    _REBUILT,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    RAW_DATA_STORAGE,
    _seed_uid,
)
from deid_batch.recipe.direct_plan import (
    _KINDS,
    DirectPlan,
    _Add,
    _Change,
    _kind,
    _options_fit,
    direct_plan_of,
)
from deid_batch.recipe.fields import Selector, _keyword, _static, _tagstr, static_hit
from deid_batch.recipe.model import Recipe, RecipeAction
from deid_batch.recipe.plan import RemoveBatch

__all__ = ["DirectPlan", "DirectResult", "deidentify_direct", "direct_plan_of"]

_KNOWN_VRS = frozenset(v.value.encode() for v in _VR if len(v.value) == 2) - {b"UN"}
#: in implicit VR, UN is the VR pydicom gives a private element it has no dictionary entry for
#: (it stays UN: no VR is re-read from the dictionary)
_IMPLICIT_VRS = _KNOWN_VRS | {b"UN"}
_IMPLICIT_SYNTAX = "1.2.840.10008.1.2"
_PIXEL_TAGS = (_PIXEL_DATA, 0x7FE00008, 0x7FE00009)
_PIXEL_REPRESENTATION = 0x00280103
_SOP_CLASS, _SOP_INSTANCE = 0x00080016, 0x00080018
_DIRECTORY_RECORDS = 0x00041220
_NUMERIC_VRS = ("FL", "FD", "SL", "SS", "SV", "UL", "US", "UV", "OB", "OD", "OF", "OL", "OV", "OW", "UN")
_SYNTAXES: dict[bytes, tuple[bool, str, bool] | None] = {}
_CREATORS: dict[bytes, str | None] = {}


@dataclass
class DirectResult:
    """The output file (in pieces: large ones are views of the input, never copied here), the
    warnings (as the engine words them) and the output SOPInstanceUID."""

    parts: list[bytes | memoryview]
    warnings: list[str]
    sop_instance_uid: str | None

    @property
    def data(self) -> bytes:
        """The output file's bytes."""
        return b"".join(self.parts)


# ------------------------------------------------------------------------------------ the tree
class _Node:
    """One element of the file: its record, static part, whether indexed, removed, its items."""

    __slots__ = ("depth", "gone", "indexed", "items", "key", "name", "new", "rec", "static", "uid",
                 "vr")

    def __init__(self, rec: raw.RawRecord, vr: str, static: Any, indexed: bool, uid: str,
                 key: tuple[int, ...], depth: int, name: str) -> None:
        self.rec = rec
        self.vr = vr
        self.static = static
        self.indexed = indexed
        self.gone = False
        self.items: list[tuple[raw.RawItem, list[_Node]]] | None = None
        self.uid = uid
        self.key = key  # position: sorting by (len(key), key) gives the field index's order
        self.depth = depth
        self.new: DataElement | None = None  # the changed element (REPLACE, BLANK)
        self.name = name  # nested name, as the field index names it


def _ambiguous(tag: int) -> bool:
    """The dictionary gives ``tag`` more than one VR (``US or SS``, ``OB or OW``, ...)."""
    try:
        return len(dictionary_VR(tag)) != 2
    except KeyError:
        return False


class _Refused(Exception):
    """The direct path cannot prove it does what the engine does: take the engine's path."""


def _syntax(value: bytes) -> tuple[bool, str, bool] | None:
    """(compressed, uid, implicit) of an explicit or implicit VR little endian transfer syntax,
    else None (memoised)."""
    if value in _SYNTAXES:
        return _SYNTAXES[value]
    text = value.decode("ascii", "replace").rstrip("\0 ")
    uid = UID(text)
    ok = uid.is_transfer_syntax and not uid.is_private and not uid.is_deflated and \
        uid.is_little_endian and (not uid.is_implicit_VR or text == _IMPLICIT_SYNTAX)
    found = (bool(uid.is_compressed), text, bool(uid.is_implicit_VR)) if ok else None
    if len(_SYNTAXES) < 64:
        _SYNTAXES[value] = found
    return found


def _raw_element(data: bytes, rec: raw.RawRecord, vr: str) -> RawDataElement:
    return RawDataElement(BaseTag(rec.tag), vr, rec.length, data[rec.value_start:rec.end],
                          rec.value_start, False, True)


class _File:
    def __init__(self, data: bytes, plan: DirectPlan, skip: frozenset[str]) -> None:
        self.data = data
        self.plan = plan
        self.skip = skip
        self.protected: frozenset[str] = skip
        #: the character set the file was read with (pydicom converts every value with it, even
        #: after the recipe removed SpecificCharacterSet) and the element's value (for writing)
        self.encoding: Any = default_encoding
        self.charset_value: Any = "iso8859"
        #: implicit VR little endian: each record carries the VR pydicom gives it (typed)
        self.implicit = False

    # -------------------------------------------------------------- reading the structure
    def records(self) -> tuple[list[raw.RawRecord], list[raw.RawRecord], bool, str]:
        data = self.data
        meta, offset = raw.walk_file(data)
        if not meta or any(b.tag >= a.tag for a, b in zip(meta[1:], meta)) or \
                any(r.vr not in _KNOWN_VRS for r in meta):
            raise _Refused
        by_tag = {r.tag: r for r in meta}
        length = by_tag.get(0x00020000)
        if length is not None and (length.vr != b"UL" or length.length != 4 or
                                   _U32.unpack_from(data, length.value_start)[0] != offset - 144):
            raise _Refused
        syntax = by_tag.get(0x00020010)
        found = _syntax(data[syntax.value_start:syntax.end]) if syntax is not None else None
        if found is None:
            raise _Refused
        self.implicit = found[2]
        records = self.walk(offset, len(data), top=True)
        if not records or records[0].tag >> 16 <= 2 or records[-1].tag >> 16 == 0xFFFE:
            raise _Refused
        if all(r.tag == _CHARSET or r.tag & 0xFFFF == 0 for r in records):
            raise _Refused
        return meta, records, found[0], found[1]

    def walk(self, start: int, end: int, top: bool = False) -> list[raw.RawRecord]:
        """The records of one data set level; in implicit VR typed with pydicom's VRs."""
        if not self.implicit:
            return raw.walk_explicit(self.data, start, end)
        data = self.data
        if end - start >= 6 and 0x40 < data[start + 4] < 0x5B and 0x40 < data[start + 5] < 0x5B:
            raise _Refused  # looks explicit: pydicom would read this level as explicit VR
        typed: list[raw.RawRecord] = []
        creators: dict[int, raw.RawRecord] = {}
        pixel_representation = False  # (0028,0103) at the top level: pydicom resolves US or SS with it
        for rec in raw.walk(data, start, end, implicit=True):
            if top and rec.tag == _PIXEL_REPRESENTATION:
                pixel_representation = rec.length == 2
            vr = self.implicit_vr(rec, creators, pixel_representation)
            typed.append(raw.RawRecord(rec.tag, vr, rec.start, rec.value_start, rec.length, rec.end))
            if vr == b"LO" and rec.tag >> 16 & 1 and rec.tag & 0xFF00 == 0:
                creators[rec.tag] = typed[-1]
        return typed

    def private_vr(self, rec: raw.RawRecord, creators: dict[int, raw.RawRecord]) -> str:
        """``hooks._private_vr_for_tag``: LO for a creator, the private dictionary's VR under the
        element's creator, else UN."""
        tag = rec.tag
        element = tag & 0xFFFF
        if 0x10 <= element <= 0xFF:
            return "LO"  # a private creator
        if element < 0x1000:
            raise _Refused  # reserved, a private group length or an element with no creator slot
        creator_rec = creators.get((tag & 0xFFFF0000) | element >> 8)
        if creator_rec is None:
            return "UN"
        creator = self.creator(creator_rec)
        if creator is None:
            raise _Refused  # a creator that is not one str: let pydicom decide
        try:
            return private_dictionary_VR(tag, creator) if creator else "UN"
        except KeyError:
            return "UN"

    def implicit_vr(self, rec: raw.RawRecord, creators: dict[int, raw.RawRecord],
                    pixel_representation: bool = False) -> bytes:
        """The VR pydicom gives an implicit VR element (``hooks.raw_element_vr``); _Refused where
        pydicom would warn or guess.

        Ambiguous VRs whose candidates share the element-copy rule are typed with one of them:
        ``US or SS`` at the top level of a data set with PixelRepresentation (pydicom picks US or
        SS by it), ``OB or OW`` (overlay, waveform data). Such an element is only ever copied or
        removed: :meth:`convert` refuses it (the engine decides its VR and value)."""
        tag = rec.tag
        try:
            vr = dictionary_VR(tag)  # first, as pydicom does (repeater masks match odd groups too)
        except KeyError:
            vr = self.private_vr(rec, creators) if tag >> 16 & 1 else ""
            if not vr:
                if tag & 0xFFFF:
                    raise _Refused from None  # pydicom warns and reads UN
                vr = "UL"  # a group length
        if tag == _PIXEL_DATA:
            vr = "OW"  # 'OB or OW': pydicom gives implicit VR pixel data OW
        elif vr == "US or SS" and pixel_representation:
            vr = "US"  # 2-byte integers either way: copied as they are, never converted here
        elif vr == "OB or OW":
            vr = "OW"  # bulk bytes either way
        if len(vr) != 2:
            raise _Refused  # another ambiguous VR: pydicom picks one from other elements
        if rec.length == raw.UNDEFINED and vr != "SQ" and tag != _PIXEL_DATA:
            raise _Refused  # pydicom reads an undefined length as a sequence
        return vr.encode()

    def level(self, records: list[raw.RawRecord], prefix: str | None, uprefix: str,
              indexed: bool, depth: int, key: tuple[int, ...], descend: bool = True) -> list[_Node]:
        """The nodes of one data set level (and, with ``descend``, of its items)."""
        creators: dict[int, raw.RawRecord] | None = None
        nodes: list[_Node] = []
        append = nodes.append
        protected = self.protected
        uids = self.plan.uid_keys
        known, kinds = _IMPLICIT_VRS if self.implicit else _KNOWN_VRS, _KINDS
        for rec in records:
            tag, vr_bytes = rec[0], rec[1]
            if vr_bytes not in known:
                raise _Refused  # UN (pydicom may re-read it) or a VR it does not know
            creator = None
            if tag >> 16 & 1:
                if tag & 0xFFFF > 0xFF:
                    if creators is None:
                        creators = {r.tag: r for r in records if r.tag >> 16 & 1 and r.tag & 0xFF00 == 0}
                    creator_rec = creators.get((tag & 0xFFFF0000) | (tag & 0xFFFF) >> 8)
                    if creator_rec is not None:
                        creator = self.creator(creator_rec)
            elif depth and tag == _CHARSET:
                raise _Refused
            found = kinds.get((tag, vr_bytes, creator, prefix))
            vr, keyword, tagstr, name, static = found if found is not None else \
                _kind(tag, vr_bytes, creator, prefix)
            here = indexed and (not protected or keyword not in protected and tagstr not in protected)
            append(_Node(rec, vr, static, here, f"{uprefix}{tagstr}" if uids else "", (*key, tag),
                         depth, name))
        if descend:
            self.descend(nodes)
        return nodes

    def descend(self, nodes: list[_Node]) -> None:
        """Walk the items of the sequences among ``nodes`` (their nodes below them)."""
        data = self.data
        for node in nodes:
            if node.vr != "SQ":
                continue
            rec, key = node.rec, node.key
            node.items = []
            for i, item in enumerate(raw.items_of(data, rec, implicit=self.implicit)):
                sub = self.walk(item.value_start, item.value_end)
                node.items.append((item, self.level(sub, node.name, f"{node.uid}__{i}__", node.indexed,
                                                    node.depth + 1, (*key, i))))

    def creator(self, rec: raw.RawRecord) -> str | None:
        """The private creator pydicom gives the block (its converted value if a str)."""
        value = self.data[rec.value_start:rec.end]
        if value in _CREATORS:
            return _CREATORS[value]
        if rec.vr not in (b"LO", b"SH", b"CS", b"LT", b"ST", b"UT") or \
                value.translate(None, bytes(range(0x20, 0x7F))):
            raise _Refused  # decoding depends on the character set: let pydicom decide
        converted = self.convert(rec, rec.vr.decode(), 0).value
        found = converted if isinstance(converted, str) else None
        if len(_CREATORS) < 10_000:
            _CREATORS[value] = found
        return found

    def canonical(self, node: _Node) -> bool:
        """pydicom's convert-then-write gives back this element's bytes (rewrite's rule)."""
        rec = node.rec
        stop = rec.end - 8 if rec.length == raw.UNDEFINED else rec.end
        if node.vr in _BULK_VRS:
            return (stop - rec.value_start) % 2 == 0
        return _canonical(rec.tag, node.vr, self.data[rec.value_start:stop])

    def check(self, node: _Node, depth: int) -> None:
        """Convert ``node`` as the engine would before removing it, when that could fail."""
        if node.vr != "SQ" and not self.canonical(node):
            self.convert(node.rec, node.vr, depth)

    def convert(self, rec: raw.RawRecord, vr: str, depth: int) -> DataElement:
        """pydicom's conversion of one raw element, as ``Dataset.__getitem__`` does it for an
        explicit VR that is not UN (the encoding read, default for the character set itself and
        the file meta; no ambiguous VR to correct)."""
        del depth  # items hold no character set (refused): they were read with the data set's
        tag = rec.tag
        if self.implicit and tag != _PIXEL_DATA and _ambiguous(tag):
            raise _Refused  # an ambiguous VR typed for copying (implicit_vr): pydicom's choice
        encoding = default_encoding if tag == _CHARSET or tag >> 16 == 2 else self.encoding
        return convert_raw_data_element(_raw_element(self.data, rec, vr), encoding=encoding)


def deidentify_direct(data: bytes, recipe: Recipe, variables: Mapping[str, Any] | None,
                      options: Any, source: str,
                      functions: Mapping[str, Callable[..., Any]] | None = None
                      ) -> DirectResult | None:
    """De-identify the file in ``data`` without a pydicom Dataset, or None (use the engine).

    ``options`` is the run's :class:`~deid_batch.recipe.engine.EngineOptions`; ``source`` names the
    file in warnings, as ``deidentify_dataset(..., source=)`` does.
    """
    plan = direct_plan_of(recipe)
    if plan is None or not _options_fit(options, plan):
        return None
    try:
        return _run(data, plan, variables or {}, functions or {}, options, source)
    except Exception:  # noqa: BLE001 - anything unexpected: the engine decides
        return None


def _run(data: bytes, plan: DirectPlan, variables: Mapping[str, Any],
         functions: Mapping[str, Callable[..., Any]], options: Any, source: str) -> DirectResult | None:
    skip = frozenset(options.skip)
    f = _File(data, plan, skip)
    meta_records, records, compressed, syntax = f.records()
    by_tag = {r.tag: r for r in records}
    if _DIRECTORY_RECORDS in by_tag:
        return None
    charset_rec = by_tag.get(_CHARSET)
    if charset_rec is not None:
        if charset_rec.vr != b"CS" or not data[charset_rec.value_start:charset_rec.end].strip(b" \0"):
            return None
        f.charset_value, f.encoding = values.read_charset(data[charset_rec.value_start:charset_rec.end])
    sop_class = _uid_of(data, by_tag.get(_SOP_CLASS)) or \
        _uid_of(data, next((r for r in meta_records if r.tag == 0x00020002), None))
    if sop_class == DICOMDIR_SOP_CLASS:
        return None
    pixels = [by_tag[t] for t in _PIXEL_TAGS if t in by_tag]
    if is_image_storage(sop_class) and not pixels:
        return None  # the engine path says no-pixel-data (or writes it with its warning)
    for rec in pixels:
        if rec.tag == 0x7FE00010 and (rec.length == raw.UNDEFINED) != compressed:
            return None
    # KEEP: the tags of the top-level and file-meta elements a KEEP selector matches
    top_nodes = f.level(records, None, "", True, 0, (0,), descend=False)
    meta_nodes = f.level(meta_records, None, "", True, 0, (1,), descend=False)
    if plan.keeps:
        _protect(f, [*top_nodes, *meta_nodes])
    f.descend(top_nodes)
    state = _State(f, top_nodes, meta_nodes, variables, functions, source)
    state.uid_key = options.uid_key
    for step in plan.steps:
        if isinstance(step, RemoveBatch):
            state.remove(step)
        elif isinstance(step, _Change):
            state.change(step)
        else:
            state.add(step)
    if options.remove_private:
        state.remove_private(top_nodes, 0)
    charset_node = state.top.get(_CHARSET)
    if charset_node is not None and charset_node.new is not None or _CHARSET in state.added:
        return None  # a changed character set: the byte-level writer decides
    state.ascii_only = charset_node is not None and charset_node.gone
    return state.write(compressed, meta_nodes, sop_class, source, syntax)


def _protect(f: _File, nodes: list[_Node]) -> None:
    """KEEP: the tags of the top-level and file meta elements a KEEP selector matches join the
    skip list (at every depth), as the engine's KEEP uids do."""
    plan = f.plan
    kept = set()
    for node in nodes:
        static = node.static
        hit = static.hits.get(plan.keep_key)
        if hit is None:
            hit = static.hits[plan.keep_key] = any(static_hit(s, static, node.rec.tag) for s in plan.keeps)
        if hit:
            kept.add(_tagstr(node.rec.tag))
    if kept:
        f.protected = f.skip | kept
        for node in nodes:
            node.indexed = node.indexed and _tagstr(node.rec.tag) not in kept


def _uid_of(data: bytes, rec: raw.RawRecord | None) -> str | None:
    if rec is None:
        return None
    return data[rec.value_start:rec.end].rstrip(b"\0 ").decode("ascii", "replace")


class _State:
    """What the steps did: removed nodes (flagged), added or changed top-level elements."""

    def __init__(self, f: _File, top: list[_Node], meta: list[_Node], variables: Mapping[str, Any],
                 functions: Mapping[str, Callable[..., Any]], source: str) -> None:
        self.f = f
        self.top = {n.rec.tag: n for n in top}
        self.top_nodes = top
        self.meta = meta
        self.lookup: dict[str, Any] = dict(variables)
        self.lookup.update(functions)
        self.source = source
        self.warnings: list[str] = []
        #: tag -> (element, static, indexed) of ADDed top-level elements, in index order
        self.added: dict[int, tuple[DataElement, Any, bool]] = {}
        self.order: list[int] = []
        self.uid_key: bytes | None = None
        #: the character set was removed: what is re-encoded must be ASCII (as rewrite checks)
        self.ascii_only = False

    def warn(self, action: RecipeAction, message: str) -> None:
        self.warnings.append(f"{self.source}: {action.where}: {action.action} {action.field}: "
                             f"{message}")

    def top_gone(self, tag: int) -> bool:
        node = self.top.get(tag)
        return tag not in self.added and (node is None or node.gone)

    def remove(self, batch: RemoveBatch) -> None:
        key, selectors, uid_keys = batch.memo_key, batch.selectors, batch.uid_keys

        def hit(static: Any, tag: int, uid: str) -> bool:
            found = static.hits.get(key)  # memoised per field kind: runs for every element
            if found is None:
                found = static.hits[key] = any(static_hit(s, static, tag) for s in selectors)
            return bool(found) or bool(uid_keys) and uid.lower() in uid_keys

        stack: list[list[_Node]] = [self.top_nodes, self.meta]
        while stack:
            for node in stack.pop():
                if node.gone or not node.indexed:
                    continue
                static = node.static
                if hit(static, node.rec.tag, node.uid) and not self.shielded(static, node.rec.tag, node.uid):
                    node.gone = True
                elif node.items:
                    stack.extend(nodes for _item, nodes in node.items)
        for tag, (_element, static, indexed) in list(self.added.items()):
            if indexed and hit(static, tag, _tagstr(tag)) and \
                    not self.shielded(static, tag, _tagstr(tag)):
                self.drop(tag)

    def shielded(self, static: Any, tag: int, uid: str) -> bool:
        """REMOVE exclusion: the element is matched by a REPLACE/JITTER selector."""
        plan = self.f.plan
        if not plan.shields:
            return False
        found = static.hits.get(plan.shield_key)
        if found is None:
            found = static.hits[plan.shield_key] = any(static_hit(s, static, tag) for s in plan.shields)
        return bool(found) or plan.uid_keys and any(
            s.kind == "exact" and s.key == uid.lower() for s in plan.shields)

    def current(self) -> list[tuple[tuple[int, ...], _Node | int]]:
        """The index now: (position, node or added tag), in the field index's order."""
        out: list[tuple[tuple[int, ...], _Node | int]] = []
        stack: list[list[_Node]] = [self.top_nodes, self.meta]
        while stack:
            for node in stack.pop():
                if node.gone or not node.indexed:
                    continue
                out.append(((len(node.key), *node.key), node))
                if node.items:
                    stack.extend(nodes for _item, nodes in node.items)
        for n, tag in enumerate(self.order):
            out.append(((1 << 30, n), tag))
        return out

    def select(self, selector: Selector) -> list[_Node | int]:
        """The current entries ``selector`` matches, in the engine's order (exact: table by table)."""
        found: list[tuple[tuple[int, ...], _Node | int]] = []
        for key, entry in self.current():
            if isinstance(entry, _Node):
                static, tag, uid = entry.static, entry.rec.tag, entry.uid
            else:
                static, tag, uid = self.added[entry][1], entry, _tagstr(entry)
            if selector.kind == "exact":
                table = _exact_table(selector.key, static, uid)
                if table is not None:
                    found.append(((table, *key), entry))
            elif static_hit(selector, static, tag):
                found.append((key, entry))
        found.sort(key=lambda e: e[0])
        return [entry for _key, entry in found]

    def element_of(self, entry: _Node | int) -> DataElement:
        if isinstance(entry, int):
            return self.added[entry][0]
        if entry.new is None:
            if entry.vr == "SQ":
                raise _Refused  # a sequence's value changed: the engine's path
            entry.new = self.f.convert(entry.rec, entry.vr, entry.depth)
        return entry.new

    def change(self, step: _Change) -> None:  # noqa: C901 - the engine's replace_all, step by step
        from deid_batch.recipe.engine import _VALUE_RE, convert_value, invalid_for_vr
        from deid_batch.recipe.functions import hmac_uid

        action = step.action
        matches = self.select(step.selector)
        if action.action == "BLANK":
            for entry in matches:
                self.element_of(entry).value = None
            return
        missing = False
        invalid: dict[str, str] = {}
        for entry in matches:
            element = self.element_of(entry)
            if step.variable is not None:
                value = self.lookup.get(step.variable)
                if value is None:
                    missing = True
                    self.drop(entry)
                    continue
                if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                    raise _Refused
            elif step.hmac:
                if not self.uid_key:
                    raise _Refused  # the engine fails the dataset with its message
                value = hmac_uid(field=_Field(element), uid_key=self.uid_key)
            else:
                value = convert_value(element.VR, action.value or "")
            if value is None:
                if action.value and not _VALUE_RE.search(action.value):
                    self.warn(action, f"the value is not valid for VR {element.VR}; element left "
                              "unchanged (as deid does)")
                continue
            if invalid_for_vr(element.VR, value):
                invalid[element.keyword or str(element.tag)] = element.VR
            element.value = value
        if invalid:
            self._warn_invalid(action, ", ".join(f"{name} ({vr})" for name, vr in invalid.items()))
        if missing:
            self.warn(action, f"variable '{step.variable}' not provided; matched element(s) removed "
                      "as a precaution")

    def drop(self, entry: _Node | int) -> None:
        if isinstance(entry, int):
            del self.added[entry]
            self.order.remove(entry)
        else:
            entry.gone = True

    def add(self, step: _Add) -> None:  # noqa: C901 - the engine's add, step by step
        from deid_batch.recipe.engine import convert_value, invalid_for_vr

        action, tag = step.action, step.tag
        node = self.top.get(tag)
        if node is not None and node.gone:
            node = None
        # the index entry ADD would change: an added element, else an indexed top-level one
        entry: _Node | int | None = tag if tag in self.added else \
            node if node is not None and node.indexed else None
        if step.variable is not None:
            value = self.lookup.get(step.variable)
            if value is None:
                self.warn(action, f"variable '{step.variable}' not provided; the element is "
                          "removed as a precaution")
                present = tag in self.added or node is not None
                if present and _keyword(tag) not in self.f.skip and _tagstr(tag) not in self.f.skip:
                    if tag in self.added:
                        self.drop(tag)
                    if node is not None:
                        self.f.check(node, 0)  # the engine converts it first
                        node.gone = True
                return
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise _Refused
        else:
            value = action.value or ""
            if entry is not None:
                value = convert_value(self.element_of(entry).VR, value)
            elif node is not None:
                value = convert_value(self.f.convert(node.rec, node.vr, 0).VR, value)
        if value is None:
            return
        if entry is not None:
            element = self.element_of(entry)
            if invalid_for_vr(element.VR, value):
                self._warn_invalid(action, f"{element.keyword or _tagstr(tag)} ({element.VR})")
            element.value = value
            return
        vr = step.vr
        if invalid_for_vr(vr, value):
            self._warn_invalid(action, f"{keyword_for_tag(tag) or _tagstr(tag)} ({vr})")
        if isinstance(value, str) and step.variable is None and vr in _NUMERIC_VRS:
            value = convert_value(vr, value)
            if value is None:
                raise _Refused  # the engine fails the dataset with its message
        element = DataElement(BaseTag(tag), vr, value)
        self.added[tag] = (element, _static(tag, None, action.field, element), True)
        self.order.append(tag)
        if node is not None:
            node.gone = True

    def _warn_invalid(self, action: RecipeAction, names: str) -> None:
        self.warn(action, f"the value written into {names} is not valid for its VR; written as "
                  "deid does (some DICOM readers may refuse the file)")

    def remove_private(self, nodes: list[_Node], depth: int) -> None:
        if depth == 0:
            for tag in [t for t in self.added if t >> 16 & 1]:
                self.drop(tag)
        for node in nodes:
            if node.gone:
                continue
            rec = node.rec
            if rec.tag >> 16 & 1:
                self.f.check(node, depth)  # converted before deletion: fails as the engine fails
                node.gone = True
            elif node.items:
                for _item, sub in node.items:
                    self.remove_private(sub, depth + 1)

    # ---------------------------------------------------------------------------- writing
    def write(self, compressed: bool, meta_nodes: list[_Node], sop_class: str | None,
              instance_seed: str, syntax: str) -> DirectResult:
        f = self.f
        view = memoryview(f.data)
        encodings = "iso8859" if self.ascii_only else f.charset_value
        body = _Out(view)
        entries: list[tuple[int, _Node | DataElement]] = [
            (n.rec.tag, n) for n in self.top_nodes if not n.gone]
        entries.extend((tag, element) for tag, (element, _s, _i) in self.added.items())
        entries.sort(key=lambda e: e[0])
        for _tag, entry in entries:
            if isinstance(entry, DataElement):
                self.encode(body, entry, encodings)
            else:
                self.emit(body, entry, encodings, 0)
        chunks, _n = body.done()
        klass = self.uid_text(_SOP_CLASS)
        instance = self.uid_text(_SOP_INSTANCE)
        if klass is None:
            klass = sop_class
        if klass is None:
            has_pixels = any(t in self.added or t in self.top and not self.top[t].gone
                             for t in _PIXEL_TAGS)
            klass = SecondaryCaptureImageStorage if has_pixels else RAW_DATA_STORAGE
        extras = [n for n in meta_nodes if not n.gone and n.rec.tag not in _REBUILT]
        head = _meta_bytes(f, klass, instance or _seed_uid(instance_seed), syntax, extras)
        return DirectResult(elements.coalesce([_PREFIX, head, *chunks]), self.warnings, self.manifest_uid())

    def value_of(self, tag: int) -> tuple[bool, Any]:
        """(present, value) of a top-level element of the output: a str for a raw UI element
        (as pydicom converts it), the element's value when it changed."""
        if tag in self.added:
            return True, self.added[tag][0].value
        node = self.top.get(tag)
        if node is None or node.gone:
            return False, None
        if node.new is not None:
            return True, node.new.value
        text = self.f.data[node.rec.value_start:node.rec.end].decode("latin-1").rstrip("\0 ")
        if node.vr != "UI" or "\\" in text:
            raise _Refused  # a multi-valued UID or another VR: let pydicom say what it is
        return True, text

    def uid_text(self, tag: int) -> str | None:
        """``writing._uid_text`` of the output element."""
        present, value = self.value_of(tag)
        if not present or value is None:
            return None
        if not isinstance(value, str):
            raise _Refused
        text = value.strip("\0 ")
        return text or None

    def manifest_uid(self) -> str | None:
        """``apply._sop_instance_uid`` of the output."""
        present, value = self.value_of(_SOP_INSTANCE)
        if not present or value in (None, ""):
            return None
        if not isinstance(value, str):
            raise _Refused
        return value

    def emit(self, out: _Out, node: _Node, encodings: Any, depth: int) -> None:
        rec = node.rec
        if rec.tag & 0xFFFF == 0 and rec.tag >> 16 > 6:
            return  # group lengths: pydicom never writes them
        if node.items is not None:
            body = _Out(out.view)
            emit = self.emit
            for item, nodes in node.items:
                sub = _Out(out.view)
                for child in nodes:
                    if not child.gone:
                        emit(sub, child, encodings, depth + 1)
                chunks, n = sub.done()
                body.put(_ITEM_START + _U32.pack(raw.UNDEFINED if item.undefined else n))
                body.extend(chunks)
                if item.undefined:
                    body.put(_ITEM_END)
            chunks, n = body.done()
            undefined = rec.length == raw.UNDEFINED
            out.put(_TAG.pack(rec.tag >> 16, rec.tag & 0xFFFF) + (b"" if self.f.implicit else b"SQ\x00\x00") +
                    _U32.pack(raw.UNDEFINED if undefined else n))
            out.extend(chunks)
            if undefined:
                out.put(_SEQ_END)
            return
        if node.new is not None:
            self.encode(out, node.new, encodings)
            return
        if self.f.canonical(node):
            out.copy(rec.start, rec.end)
            return
        if rec.tag == 0x7FE00010:
            raise _Refused  # odd-length pixel data: the byte-level writer's own handling
        self.encode(out, self.f.convert(rec, node.vr, depth), encodings)

    def encode(self, out: _Out, element: DataElement, encodings: Any) -> None:
        if self.ascii_only and element.VR in _TEXT_VRS and not _ascii(element.value):
            raise _Refused  # non-ASCII text after the character set went: rewrite declines too
        elements.encode(out, element, encodings, self.f.implicit)


class _Field:
    """What ``deid_func:hmac_uid`` reads of a field: its element."""

    __slots__ = ("element",)

    def __init__(self, element: DataElement) -> None:
        self.element = element


_TABLES = ("name", "tag", "stripped_tag", "element_name", "element_keyword")


def _exact_table(key: str, static: Any, uid: str) -> int | None:
    """The first of the index's exact-match tables holding ``key`` for this field (None: no match)."""
    keys = static.keys
    for i, table in enumerate(_TABLES):
        if key in keys.get(table, ()):
            return i
    return len(_TABLES) if uid and key == uid.lower() else None


def _meta_bytes(f: _File, klass: str, instance: str, syntax: str, extras: list[_Node]) -> bytes:
    """The file meta ``writing._rebuild_file_meta`` + ``rewrite._file_meta`` write, built directly."""
    version = IMPLEMENTATION_VERSION_NAME.encode("ascii")
    parts = [
        (0x00020001, elements.long_element(0x00020001, b"OB", b"\x00\x01")),
        (0x00020002, elements.uid_element(0x00020002, klass)),
        (0x00020003, elements.uid_element(0x00020003, instance)),
        (0x00020010, elements.uid_element(0x00020010, syntax)),
        (0x00020012, elements.uid_element(0x00020012, IMPLEMENTATION_CLASS_UID)),
        (0x00020013, elements.short_element(0x00020013, b"SH", version + b" " * (len(version) % 2))),
    ]
    for node in extras:
        rec = node.rec
        if node.new is None and f.canonical(node):
            parts.append((rec.tag, f.data[rec.start:rec.end]))
            continue
        element = node.new if node.new is not None else f.convert(rec, node.vr, 0)
        parts.append((rec.tag, elements.pydicom_bytes(element)))
    parts.sort(key=lambda p: p[0])
    body = b"".join(p for _t, p in parts)
    return elements.group_length(2, body)

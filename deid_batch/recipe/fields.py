"""The flattened field index of one dataset and the recipe field selectors.

:func:`build_index` flattens a dataset exactly as deid 0.4.13's ``get_fields_with_lookup`` does:
breadth-first (top-level elements in tag order, then file meta, then sequence items level by
level), uids such as ``(0040,0275)__0__(0008,0050)``, nested names such as
``RequestAttributesSequence__AccessionNumber``, and a skip list of keywords / tag strings applied
at every depth. :func:`compile_selector` turns a recipe selector into a small frozen
:class:`Selector`; :meth:`FieldIndex.select` applies it to the current index.

Nothing here keeps a reference to a dataset beyond the index object the caller owns.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_has_tag, dictionary_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

__all__ = [
    "STATIC_KINDS",
    "DicomField",
    "FieldIndex",
    "Selector",
    "build_index",
    "compile_selector",
    "field_static",
    "selector_problem",
    "static_hit",
]

_EXPANDER_SPLIT_RE = re.compile(r'^([^:"]*(?:"[^"]*"[^:"]*)*):(.*)$')
_EXPANDERS = ("contains", "startswith", "endswith", "except", "select")
_IDENT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_HEX8_RE = re.compile(r"^[0-9A-Fa-f]{8}$")
_TAG = r"\([0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\)"
_UID_RE = re.compile(rf"^{_TAG}(__\d+__{_TAG})*$")
_CREATOR = r'[0-9A-Fa-f]{4},"[^"]*",[0-9A-Fa-f]{2}'
_PRIVATE_RE = re.compile(rf"^(\({_CREATOR}\)|{_CREATOR})$")
_TABLES = ("name", "tag", "stripped_tag", "element_name", "element_keyword", "uid")


class DicomField:
    """One index entry, shaped like deid's ``DicomField`` (``element``, ``name``, ``uid``).

    ``parents`` locates the element: ``((sequence tag, item index), ...)`` from the top-level
    dataset (or file meta when ``is_filemeta``). The element may still be raw in its dataset:
    ``element`` converts it on first access (pydicom's conversion, stored in the dataset), so a
    recipe that only removes elements never pays for converting their values.
    """

    __slots__ = ("_element", "container", "hits", "is_filemeta", "is_seq", "name",
                 "parents", "search", "static", "tag", "uid")

    def __init__(self, element: DataElement | RawDataElement, name: str, uid: str,
                 is_filemeta: bool = False, parents: tuple[tuple[int, int], ...] = (),
                 container: Dataset | None = None, static: _Static | None = None) -> None:
        self.tag = element.tag
        self.container = container
        self._element: DataElement | None = None if isinstance(element, RawDataElement) else element
        self.name = name
        self.uid = uid
        self.is_filemeta = is_filemeta
        self.parents = parents
        self.is_seq = self._element is not None and isinstance(self._element.value, Sequence)
        if static is None:
            conv = self.element
            creator = conv.private_creator if self.tag.is_private else None
            static = _static(int(self.tag), creator, name, conv)
        self.static = static
        self.search = static.search
        self.hits = static.hits

    @property
    def keys(self) -> dict[str, tuple[str, ...]]:
        """Exact-match keys per lookup table: the static ones plus the uid."""
        keys = dict(self.static.keys)
        if self.uid:
            keys["uid"] = (self.uid.lower(),)
        return keys

    @property
    def element(self) -> DataElement:
        if self._element is None:
            assert self.container is not None
            self._element = self.container[self.tag]
        return self._element

    @property
    def stripped_tag(self) -> str:
        return re.sub("([(]|[)]|,| )", "", str(self.tag))

    def snapshot(self) -> DicomField:
        """A deep copy handed to user functions (deid passes deep copies too)."""
        from copy import deepcopy

        return DicomField(deepcopy(self.element), self.name, self.uid, self.is_filemeta,
                          self.parents)

    def __repr__(self) -> str:  # no values: repr may end up in logs
        return f"DicomField(uid={self.uid!r}, name={self.name!r})"


class _Static:
    """What a field's selector keys depend on: tag, private creator and nested name - not the
    value, not the dataset. Shared between files through a bounded cache of strings (datasets
    are never cached), with the regex selector results computed so far (``hits``)."""

    __slots__ = ("hits", "keys", "search")

    def __init__(self, keys: dict[str, tuple[str, ...]], search: tuple[str, ...]) -> None:
        self.keys = keys
        self.search = search
        self.hits: dict[tuple[str, str] | str, bool] = {}  # str: a RemoveBatch memo key


_STATIC: dict[tuple[int, str | None, str], _Static] = {}
_STATIC_MAX = 50_000


def _static(tag: int, creator: str | None, name: str, element: DataElement) -> _Static:
    key = (tag, creator, name)
    found = _STATIC.get(key)
    if found is None:
        keys = _lookup_keys(element, name, "")
        found = _Static(keys, _search_strings(element, name))
        if len(_STATIC) >= _STATIC_MAX:
            _STATIC.clear()  # bounded: a run with more distinct fields than this starts over
        _STATIC[key] = found
    return found


def _private_forms(element: DataElement) -> tuple[str, str]:
    stripped = (f'{element.tag.group:04X},"{element.private_creator}",'
                f"{(element.tag.element & 0xFF):02X}")
    return stripped, f"({stripped})"


def _lookup_keys(element: DataElement, name: str, uid: str) -> dict[str, tuple[str, ...]]:
    """Exact-match keys per lookup table (deid ``FieldsWithLookups._get_field_lookup_keys``)."""
    keys: dict[str, tuple[str, ...]] = {}
    names = [name.lower()] if name else []
    if element.tag.is_private:
        names.extend(form.lower() for form in _private_forms(element))
    if names:
        keys["name"] = tuple(names)
    tag = str(element.tag)
    keys["tag"] = (tag.lower(),)
    keys["stripped_tag"] = (re.sub("([(]|[)]|,| )", "", tag).lower(),)
    if element.name:
        keys["element_name"] = (element.name.lower(),)
    if element.keyword:
        keys["element_keyword"] = (element.keyword.lower(),)
    if uid:
        keys["uid"] = (uid.lower(),)
    return keys


def _search_strings(element: DataElement, name: str) -> tuple[str, ...]:
    """Strings a contains:/startswith:/endswith:/except: regex is searched in (deid
    ``DicomField.name_contains``)."""
    tag = element.tag
    strings = [name.lower(), f"({tag.group:04X},{tag.element:04X})".lower(),
               re.sub("([(]|[)]|,| )", "", str(tag)), element.name, element.keyword]
    if tag.is_private and element.private_creator is not None:
        strings.extend(_private_forms(element))
    return tuple(strings)


# ----------------------------------------------------------------------------------- selectors
@dataclass(frozen=True)
class Selector:
    """A compiled recipe selector.

    ``kind`` is one of ``all``, ``exact``, ``regex``, ``except``, ``vr``, ``group``, ``values``,
    ``fields`` or ``none`` (an unknown expander: matches nothing, as in deid).
    """

    kind: str
    text: str
    key: str = ""
    group: int = -1

    def matches(self, entry: DicomField) -> bool:
        """Does one index entry match? (``values``/``fields`` never match here.)"""
        if self.kind == "all":
            return True
        if self.kind == "exact":
            return any(self.key in keys for keys in entry.static.keys.values()) or \
                bool(entry.uid) and self.key == entry.uid.lower()
        if self.kind in ("regex", "except"):
            hit = _regex_hit(self, entry)
            return hit if self.kind == "regex" else not hit
        if self.kind == "vr":
            return bool(entry.element.VR == self.key)
        if self.kind == "group":
            return bool(entry.tag.group == self.group)
        return False


def _regex_hit(selector: Selector, entry: DicomField) -> bool:
    """Does the selector's regex find any of the entry's search strings? (memoised per field kind)"""
    memo = (selector.kind, selector.key)
    hit = entry.hits.get(memo)
    if hit is None:
        rx = re.compile(selector.key, re.IGNORECASE)
        hit = entry.hits[memo] = any(rx.search(s) for s in entry.search)
    return hit


#: selector kinds whose result depends only on a field's tag, private creator, nested name and
#: uid (never on its value or VR): these can be decided from the shared :class:`_Static` part.
STATIC_KINDS = frozenset({"all", "exact", "regex", "except", "group", "none"})


def static_hit(selector: Selector, static: _Static, tag: int) -> bool:
    """:meth:`Selector.matches` for a field known by its static part (``selector.kind`` in
    :data:`STATIC_KINDS`); an exact key is compared with every static key, not with the uid
    (a top-level uid equals the tag key; nested uids are the caller's to compare)."""
    kind = selector.kind
    if kind == "all":
        return True
    if kind == "exact":
        return any(selector.key in keys for keys in static.keys.values())
    if kind in ("regex", "except"):
        memo = (kind, selector.key)
        hit = static.hits.get(memo)
        if hit is None:
            rx = re.compile(selector.key, re.IGNORECASE)
            hit = static.hits[memo] = any(rx.search(s) for s in static.search)
        return hit if kind == "regex" else not hit
    if kind == "group":
        return (tag >> 16) == selector.group
    return False


def field_static(dataset: Dataset, tag: BaseTag, name: str) -> _Static:
    """The :class:`_Static` of an element of ``dataset`` named ``name`` (as :func:`build_index`
    gets it: from the shared cache, else computed from the converted element)."""
    creator = _creator(dataset, tag) if tag.is_private else None
    static = _STATIC.get((int(tag), creator, name))
    if static is None:
        conv = dataset[tag]
        creator = conv.private_creator if tag.is_private else None
        static = _static(int(tag), creator, name, conv)
    return static


@functools.lru_cache(maxsize=4096)
def compile_selector(text: str) -> Selector:
    """Compile a selector as deid's ``perform_action``/``expand_field_expression`` read it."""
    if re.search("^values", text):
        return Selector("values", text, re.sub("^values:", "", text))
    if re.search("^fields", text):
        return Selector("fields", text, re.sub("^fields:", "", text))
    if text.lower() == "all":
        return Selector("all", text)
    m = _EXPANDER_SPLIT_RE.match(text)
    if not m:
        return Selector("exact", text, text.lower())
    expander, expression = m.group(1).lower(), m.group(2).lower()
    if expander == "endswith":
        return Selector("regex", text, f"({expression})$")
    if expander == "startswith":
        return Selector("regex", text, f"^({expression})")
    if expander == "contains":
        return Selector("regex", text, expression)
    if expander == "except":
        return Selector("except", text, expression)
    if expander == "select":
        attribute, _, value = expression.partition(":")
        if attribute.upper() == "VR":
            return Selector("vr", text, value[0:2].upper())
        if attribute.upper() == "GROUP":
            try:
                return Selector("group", text, value, int(value, 16))
            except ValueError:
                return Selector("none", text)
    return Selector("none", text)


def selector_problem(text: str, values_names: frozenset[str], fields_names: frozenset[str],
                     *, lists: bool = True) -> str | None:
    """Why a selector would crash or silently select nothing in deid (None when it is fine)."""
    if text.startswith(("values", "fields")):
        return _list_problem(text, fields_names, lists)
    if text.lower() == "all":
        return None
    m = _EXPANDER_SPLIT_RE.match(text)
    if not m:
        if any(rx.match(text) for rx in (_IDENT_RE, _HEX8_RE, _UID_RE, _PRIVATE_RE)):
            return None
        return (f"cannot read the field selector '{text}': use a keyword, (gggg,eeee), ggggeeee, "
                'a nested uid, (gggg,"creator",ee) or an expander such as contains:X')
    expander, expression = m.group(1), m.group(2)
    if expander.lower() not in _EXPANDERS:
        return (f"unknown expander '{expander}:' (deid selects nothing); use contains:, "
                "startswith:, endswith:, except:, select:, values: or fields:")
    if expander.lower() == "select":
        return _select_problem(expression)
    if expander.lower() == "except" and not expression:
        return "except: with an empty expression selects nothing"
    try:
        re.compile(compile_selector(text).key, re.IGNORECASE)
    except re.error as exc:
        return f"the expression of '{expander}:' is not a valid regular expression ({exc.msg})"
    return None


def _list_problem(text: str, fields_names: frozenset[str], lists: bool) -> str | None:
    kind = text[:6]
    if not lists:
        return f"'{kind}:' lists cannot be used here"
    if not text.startswith(kind + ":") or not text[7:]:
        return f"write '{kind}:NAME' (got '{text}')"
    if kind == "fields" and text[7:] not in fields_names:
        return f"'{text}' names no %fields section of the (first) recipe"
    return None


def _select_problem(expression: str) -> str | None:
    attribute, sep, value = expression.partition(":")
    if not sep:
        return "select: needs 'select:VR:XX' or 'select:group:GGGG'"
    if attribute.upper() == "VR":
        from pydicom.valuerep import VR

        if len(value) != 2 or value.upper() not in {v.value for v in VR}:
            return f"select:VR: needs a two-letter VR, not '{value}'"
        return None
    if attribute.upper() == "GROUP":
        if not re.fullmatch(r"[0-9A-Fa-f]{1,4}", value):
            return f"select:group: needs a hex group like 0010, not '{value}'"
        return None
    return f"select: supports VR and group, not '{attribute}'"


# --------------------------------------------------------------------------------------- index
class FieldIndex:
    """uid -> :class:`DicomField`, in deid's order, with deid's exact-match lookup tables."""

    def __init__(self) -> None:
        self.fields: dict[str, DicomField] = {}
        # The exact-match tables are built on the first exact lookup (many recipes never make
        # one) and maintained from then on; built from ``fields`` they have the same order.
        self._tables: dict[str, dict[str, dict[str, DicomField]]] | None = None
        # parent uid -> uids of the nested entries added below it (may list removed ones)
        self._children: dict[str, list[str]] = {}

    @property
    def tables(self) -> dict[str, dict[str, dict[str, DicomField]]]:
        if self._tables is None:
            tables: dict[str, dict[str, dict[str, DicomField]]] = {t: {} for t in _TABLES}
            for uid, entry in self.fields.items():
                for table, keys in entry.keys.items():
                    for key in keys:
                        tables[table].setdefault(key, {})[uid] = entry
            self._tables = tables
        return self._tables

    def __contains__(self, uid: object) -> bool:
        return uid in self.fields

    def __len__(self) -> int:
        return len(self.fields)

    def __getitem__(self, uid: str) -> DicomField:
        return self.fields[uid]

    def add(self, entry: DicomField) -> None:
        if entry.uid in self.fields:
            self.remove(entry.uid)
        self.fields[entry.uid] = entry
        if entry.parents:
            self._children.setdefault(entry.uid.rsplit("__", 2)[0], []).append(entry.uid)
        tables = self._tables
        if tables is not None:
            for table, keys in entry.keys.items():
                for key in keys:
                    tables[table].setdefault(key, {})[entry.uid] = entry

    def remove(self, uid: str) -> None:
        entry = self.fields.pop(uid, None)
        if entry is None:
            return
        tables = self._tables
        if tables is None:
            return
        for table, keys in entry.keys.items():
            for key in keys:
                bucket = tables[table].get(key)
                if bucket is not None:
                    bucket.pop(uid, None)
                    if not bucket:
                        del tables[table][key]

    def remove_children(self, uid: str) -> None:
        """Drop every entry below ``uid`` (uids starting with ``uid__``), in time proportional
        to the subtree rather than to the index."""
        stack = list(self._children.pop(uid, ()))
        while stack:
            child = stack.pop()
            stack.extend(self._children.pop(child, ()))
            self.remove(child)

    def remove_descendants(self, uids: Iterable[str]) -> None:
        """:meth:`remove_children` of each of ``uids``."""
        for uid in uids:
            self.remove_children(uid)

    def exact(self, key: str) -> list[DicomField]:
        """deid ``get_exact_matches``: the tables concatenated, de-duplicated by uid."""
        found: dict[str, DicomField] = {}
        tables = self.tables
        for table in _TABLES:
            bucket = tables[table].get(key)
            if bucket:
                for uid, entry in bucket.items():
                    found.setdefault(uid, entry)
        return list(found.values())

    def select(self, selector: Selector) -> list[DicomField]:
        """Current entries matched by an ``all``/exact/expander selector, in deid's order."""
        if selector.kind == "exact":
            return self.exact(selector.key)
        if selector.kind == "none":
            return []
        if selector.kind in ("regex", "except"):
            want = selector.kind == "regex"
            return [e for e in self.fields.values() if _regex_hit(selector, e) is want]
        return [e for e in self.fields.values() if selector.matches(e)]


def filter_index(full: FieldIndex, skip: Iterable[str]) -> FieldIndex:
    """The index :func:`build_index` would give with ``skip``, derived from an unskipped one.

    An entry is left out if its keyword or tag string is skipped, or if an enclosing sequence was
    left out (a skipped sequence is not descended), exactly as when building with the skip list.
    """
    skipped = frozenset(skip)
    index = FieldIndex()
    dropped: set[str] = set()
    for uid, entry in full.fields.items():
        if entry.parents:
            parent_uid = uid.rsplit("__", 2)[0]
            if parent_uid in dropped:
                dropped.add(uid)
                continue
        if _keyword(int(entry.tag)) in skipped or str(entry.tag) in skipped:
            dropped.add(uid)
            continue
        index.add(entry)
    return index


_KEYWORDS: dict[int, str] = {}
_TAGSTRS: dict[int, str] = {}


def _tagstr(tag: int) -> str:
    """``(GGGG,EEEE)`` (memoised: a bounded set of strings, never a dataset)."""
    found = _TAGSTRS.get(tag)
    if found is None:
        if len(_TAGSTRS) >= 100_000:
            _TAGSTRS.clear()
        found = _TAGSTRS[tag] = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    return found


def _keyword(tag: int) -> str:
    """pydicom's ``DataElement.keyword`` without building an element ('' for private/repeaters)."""
    found = _KEYWORDS.get(tag)
    if found is None:
        found = dictionary_keyword(tag) if dictionary_has_tag(tag) else ""
        if len(_KEYWORDS) >= 100_000:
            _KEYWORDS.clear()  # bounded: strings only
        _KEYWORDS[tag] = found
    return found


def _creator(dataset: Dataset, tag: BaseTag) -> str | None:
    """The private creator pydicom would give the element (same rule as ``Dataset.__getitem__``)."""
    creator_tag = BaseTag((tag.group << 16) | (tag.element >> 8))
    if tag.element > 0xFF and creator_tag in dataset:
        value = dataset[creator_tag].value
        return value if isinstance(value, str) else None
    return None


def build_index(ds: Dataset, skip: Iterable[str] = ()) -> FieldIndex:
    """Flatten ``ds`` (and its file meta) breadth-first into a :class:`FieldIndex`.

    Parameters
    ----------
    ds : pydicom.Dataset
    skip : iterable of str
        Keywords and ``(gggg,eeee)`` strings left out (a skipped sequence is not descended).
    """
    skipped = frozenset(skip)
    index = FieldIndex()
    queue: list[tuple[Dataset, str | None, str | None, tuple[tuple[int, int], ...]]] = []
    if ds:
        queue.append((ds, None, None, ()))
    file_meta = getattr(ds, "file_meta", None)
    if file_meta:
        queue.append((file_meta, None, None, ()))
    while queue:
        dataset, prefix, uprefix, parents = queue.pop(0)
        is_filemeta = isinstance(dataset, FileMetaDataset)
        for element in dataset.elements():
            tag = element.tag
            itag = int(tag)
            keyword = _keyword(itag)
            tagstr = _tagstr(itag)
            if keyword in skipped or tagstr in skipped:
                continue
            if isinstance(element, RawDataElement) and element.VR in (None, "SQ", "UN"):
                element = dataset[tag]  # may be a sequence: convert to find out
            name = keyword if prefix is None else f"{prefix}__{keyword}"
            uid = tagstr if uprefix is None else f"{uprefix}__{tagstr}"
            creator = _creator(dataset, tag) if tag.is_private else None
            static = _STATIC.get((itag, creator, name))
            entry = DicomField(element, name, uid, is_filemeta, parents, dataset, static)
            index.add(entry)
            if entry.is_seq:
                for idx, item in enumerate(entry.element.value):
                    if isinstance(item, Dataset):
                        queue.append((item, name, f"{uid}__{idx}",
                                      (*parents, (itag, idx))))
    return index


def locate_parent(ds: Dataset, entry: DicomField) -> Dataset | None:
    """The dataset (or sequence item) that holds ``entry`` now, or None if it is gone."""
    container: Any = ds.get("file_meta") if entry.is_filemeta else ds
    if container is None:
        return None
    for tag, idx in entry.parents:
        if tag not in container:
            return None
        value = container[tag].value
        if not isinstance(value, Sequence) or idx >= len(value):
            return None
        container = value[idx]
    return container  # type: ignore[no-any-return]

"""Header de-identification of one dataset: a pydicom dataset + a :class:`Recipe` in, the same
dataset (modified in place) + PHI-free warnings out.

This is deid 0.4.13's ``DicomParser.parse`` followed by its config "put" actions:

1. KEEP selectors are expanded against a full index; their uids join the skip list.
2. The field index is built (:func:`deid_batch.recipe.fields.build_index`).
3. ``%values`` / ``%fields`` lists are extracted once.
4. Header actions run in recipe order, each on the current index; REMOVE never deletes an
   element that any REPLACE/JITTER selector of the recipe matches; JITTER skips empty values.
5. ``options.put_actions`` run (default ``KEEP PixelData``).
6. Private tags are removed when ``options.remove_private`` (our default; deid's is off).

The recipe's compiled plan (:mod:`deid_batch.recipe.plan`, built once per Recipe object) shortens two
common shapes without changing any result: a "whitelist" (``REMOVE ALL`` after nothing but KEEP
lines) is decided per top-level element instead of flattening the whole dataset, and runs of
plain REMOVE lines (deid's bundled recipe) become one pass over the index.
:func:`deidentify_dataset_generic` runs the same recipe action by action; the tests compare both.

Deliberate deviations from deid are listed in the README; in short: a missing ``var:``/``func:``
removes the matched element with a warning; JITTER never uses today's date; a failure raises
:class:`~deid_batch.errors.DatasetError` for this dataset only.

:func:`deidentify_dataset` is pure apart from mutating the dataset it is given: no dataset is
ever cached (only bounded memos of strings and flags per field kind), no process-wide settings.
It is safe to call from several threads on different datasets.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom import config as pydicom_config
from pydicom.datadict import (  # type: ignore[attr-defined]
    DicomDictionary,
    dictionary_VR,
    keyword_dict,
    keyword_for_tag,
)
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as PydicomSequence
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import validate_value

from deid_batch.errors import DatasetError, RecipeError
from deid_batch.recipe.builtins import DEFAULT_BASE
from deid_batch.recipe.fields import (
    DicomField,
    FieldIndex,
    Selector,
    _creator,
    _keyword,
    _tagstr,
    build_index,
    compile_selector,
    field_static,
    filter_index,
    locate_parent,
    static_hit,
)
from deid_batch.recipe.functions import BUILTINS, jitter_days, jitter_element
from deid_batch.recipe.parse import HEADER_ACTIONS, Recipe, RecipeAction, load_recipe
from deid_batch.recipe.plan import KEEP, SHIELD, SKIP, Plan, RemoveBatch, Step, Whitelist, compile_plan
from deid_batch.recipe.private import (
    Creators,
    PrivateKey,
    kept_private_tags,
    private_keeps,
    record_creators,
)

__all__ = [
    "DEFAULT_PUT_ACTIONS",
    "DEFAULT_SKIP",
    "EngineOptions",
    "EngineResult",
    "deidentify_dataset",
    "deidentify_dataset_generic",
    "finish_dataset",
    "plan_of",
    "private_tags_warning",
]

logger = logging.getLogger(__name__)

#: deid ``config.json`` ``get.skip``: never indexed, so no action but ADD can touch them.
DEFAULT_SKIP: tuple[str, ...] = (
    "PixelData",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "VOILUTSequence",
    "FileMetaInformationGroupLength",
    "FileMetaInformationVersion",
    "TransferSyntaxUID",
    "ImplementationClassUID",
)
#: deid ``config.json`` ``put.actions``: run after the recipe.
DEFAULT_PUT_ACTIONS: tuple[RecipeAction, ...] = (
    RecipeAction("KEEP", "PixelData", None, "<config>", 0),
)

_VALUE_RE = re.compile("(^var:)|(^func:)|(^deid_func:)")
_FLOAT_VRS = ("FL", "FD")
_BYTES_VRS = ("OB", "OD", "OF", "OL", "OV", "OW", "UN")
_INT_VRS = ("SL", "SS", "SV", "UL", "US", "UV")
_HEX8_RE = re.compile(r"^[0-9A-Fa-f]{8}$")



def plan_of(recipe: Recipe) -> Plan:
    """``recipe``'s compiled plan, built on first use and kept on the object (not pickled: each
    worker compiles its own once)."""
    plan: Plan | None = recipe.__dict__.get("_plan")
    if plan is None:
        plan = compile_plan(recipe)
        object.__setattr__(recipe, "_plan", plan)
    return plan

@dataclass(frozen=True)
class EngineOptions:
    """How the recipe is applied (frozen, picklable; pass it to every worker).

    Attributes
    ----------
    remove_private : bool
        Remove private tags after the recipe (default). deid's own default is False.
    uid_key : bytes or None
        HMAC key of ``deid_func:hmac_uid`` (required only when the recipe uses it).
    skip : tuple of str
        deid's ``get.skip``: keywords / ``(gggg,eeee)`` never indexed.
    put_actions : tuple of RecipeAction
        deid's ``put.actions``, run after the recipe.
    disable_skip : bool
        Ignore ``skip`` (deid ``disable_skip=True``): REMOVE ALL then also removes pixels.
    """

    remove_private: bool = True
    uid_key: bytes | None = field(default=None, repr=False)
    skip: tuple[str, ...] = DEFAULT_SKIP
    put_actions: tuple[RecipeAction, ...] = DEFAULT_PUT_ACTIONS
    disable_skip: bool = False


@dataclass
class EngineResult:
    """The de-identified dataset (the object passed in) and PHI-free warnings."""

    dataset: pydicom.Dataset
    warnings: list[str] = field(default_factory=list)


def private_tags_warning() -> str:
    """The once-per-run warning shown when private tags are kept."""
    return ("private tags are kept (remove_private is off): vendors store names, IDs and dates "
            "in them and the recipe only touches the ones it names; review them or turn "
            "remove_private back on")


class _Missing:
    """A var:/func: named by the recipe that this item does not provide."""

    def __init__(self, what: str) -> None:
        self.what = what


def convert_value(vr: str, value: str) -> Any:
    """deid ``convert_value``: float for FL/FD, int for integer VRs, bytes for O*/UN.

    None when the text cannot be converted (deid then leaves the element unchanged).
    """
    if vr in _FLOAT_VRS:
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    if vr in _BYTES_VRS:
        try:
            return bytes(value, "utf-8")
        except (TypeError, ValueError):
            return None
    if vr in _INT_VRS:
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    return value


def invalid_for_vr(vr: str, value: Any) -> bool:
    """True if ``value`` (text) is not valid for ``vr``: pydicom writes it anyway, as deid does,
    with a warning that we silence (it quotes the value), so the engine warns instead."""
    if not isinstance(value, str) or not value or vr in ("SQ", "UN", "OB", "OW", "OF", "OD", "OL", "OV"):
        return False
    try:
        for part in value.split("\\"):
            validate_value(vr, part, pydicom_config.RAISE)
    except (ValueError, TypeError):
        return True
    return False


class _Run:
    """The state of one ``deidentify_dataset`` call (never shared between calls)."""

    def __init__(self, ds: Dataset, recipe: Recipe, variables: Mapping[str, Any],
                 functions: Mapping[str, Callable[..., Any]], options: EngineOptions,
                 source: str, fast: bool = True, finish: bool = True) -> None:
        self.ds = ds
        self.finish = finish
        self.recipe = recipe
        self.options = options
        self.source = source
        self.functions = dict(functions)
        self.lookup: dict[str, Any] = dict(variables)
        self.lookup.update(self.functions)
        self.warnings: list[str] = []
        self.config_skip = frozenset(() if options.disable_skip else options.skip)
        self.index = FieldIndex()
        self._full: FieldIndex | None = None
        self.action: RecipeAction | None = None
        self.fast = fast

    # ------------------------------------------------------------------------------ helpers
    def warn(self, action: RecipeAction, message: str) -> None:
        self.warnings.append(f"{self.source}: {action.where}: {action.action} {action.field}: "
                             f"{message}")

    def execute(self) -> None:
        # the creators of the private blocks the recipe KEEPs by creator, before any action
        keeps = private_keeps(self.recipe) if self.options.remove_private else frozenset()
        creators = record_creators(self.ds, keeps) if keeps else None
        plan = plan_of(self.recipe) if self.fast else None
        steps: tuple[Step, ...]
        if plan is not None and plan.whitelist is not None and \
                self._whitelist_remove_all(plan.whitelist):
            steps = plan.whitelist.after
        else:
            self._build()
            steps = plan.steps if plan is not None else self.recipe.header
        for step in steps:
            if isinstance(step, RemoveBatch):
                self.remove_batch(step)
            else:
                self.perform(step)
        for action in self.options.put_actions:
            self.perform(action)
        self.action = None
        if self.options.remove_private:
            # KEEP (gggg,"CREATOR",ee) lines survive the removal (deid_batch.recipe.private)
            _remove_private(self.ds, keeps, creators)
        if self.finish:
            _convert_survivors(self.ds)

    def _build(self) -> None:
        """KEEP uids, the field index and the %values/%fields lists (deid's parse start)."""
        keeps = self._keep_uids()
        if self._full is not None:
            self.index = filter_index(self._full, self.config_skip | keeps)
            self._full = None
        else:
            self.index = build_index(self.ds, self.config_skip | keeps)
        initial = self.index
        lists: dict[str, Any] = {}
        for name, entries in self.recipe.values:
            lists[name] = self._values_list(entries, initial)
        for name, entries in self.recipe.fields:
            lists[name] = self._fields_list(entries, initial)
        self.lookup.update(lists)

    def _whitelist_remove_all(self, plan: Whitelist) -> bool:
        """KEEP + index + ``REMOVE ALL`` of a whitelist recipe, decided per top-level element.

        Returns False, having changed nothing, when this dataset needs the generic path (a
        sequence that a REPLACE/JITTER selector shields, or group 0002 outside the file meta /
        other groups inside it). Otherwise the dataset and ``self.index`` are left exactly as
        the generic path leaves them after its ``REMOVE ALL``.
        """
        classified = self._whitelist_classify(plan)
        if classified is None:
            return False
        seen, kept = classified
        skip = self.config_skip
        # deid converts (to index them) the raw sequences / UN / unknown-VR elements it reaches
        # before any action; a malformed one fails the dataset there, so we convert them too
        reach_skip = frozenset() if plan.keeps else skip
        pending: list[Dataset] = []
        survivors: list[tuple[Dataset, bool, Any, int]] = []
        doomed: list[tuple[Dataset, BaseTag]] = []
        for container, is_meta, element, flag in seen:
            tag = element.tag
            protected = flag & SKIP or int(tag) in kept
            if isinstance(element, RawDataElement) and element.VR in (None, "SQ", "UN") and \
                    (plan.keeps or not protected):
                element = container[tag]
            if protected:
                if plan.keeps and isinstance(element.value, PydicomSequence):
                    pending.extend(i for i in element.value if isinstance(i, Dataset))
                continue
            if flag & SHIELD:
                if isinstance(element.value, PydicomSequence):
                    return False
                survivors.append((container, is_meta, element, flag))
            else:
                if isinstance(element.value, PydicomSequence):
                    pending.extend(i for i in element.value if isinstance(i, Dataset))
                doomed.append((container, tag))
        _reach(pending, reach_skip)
        for container, tag in doomed:
            del container[tag]
        index = self.index = FieldIndex()
        for container, is_meta, element, _ in survivors:
            tag = element.tag
            itag = int(tag)
            name = _keyword(itag)
            static = field_static(container, tag, name)
            index.add(DicomField(element, name, _tagstr(itag), is_meta, (), container, static))
        return True

    def _whitelist_classify(self, plan: Whitelist
                            ) -> tuple[list[tuple[Dataset, bool, Any, int]], set[int]] | None:
        """Top-level and file-meta elements with their KEEP/SHIELD/SKIP flags, and the kept tags
        (None: group 0002 outside the file meta or another group inside it)."""
        ds = self.ds
        flags = plan.flags_for(self.config_skip)
        containers: list[tuple[Dataset, bool]] = [(ds, False)] if ds else []
        meta = getattr(ds, "file_meta", None)
        if meta:
            containers.append((meta, isinstance(meta, FileMetaDataset)))
        seen: list[tuple[Dataset, bool, Any, int]] = []
        kept: set[int] = set()
        for container, is_meta in containers:
            for element in container.elements():
                tag = element.tag
                itag = int(tag)
                if ((itag >> 16) == 2) is not is_meta:
                    return None
                key = (itag, _creator(container, tag) if tag.is_private else None)
                flag = flags.get(key)
                if flag is None:
                    flag = flags[key] = _whitelist_flags(plan, container, tag, self.config_skip)
                if flag & KEEP:
                    kept.add(itag)
                seen.append((container, is_meta, element, flag))
        return seen, kept

    def remove_batch(self, batch: RemoveBatch) -> None:
        """A run of plain REMOVE lines in one pass (see :mod:`deid_batch.recipe.plan`)."""
        self.action = batch.actions[0]
        key, uid_keys, selectors = batch.memo_key, batch.uid_keys, batch.selectors
        matches = []
        for entry in self.index.fields.values():
            hit = entry.hits.get(key)
            if hit is None:
                hit = entry.hits[key] = any(static_hit(s, entry.static, entry.tag)
                                            for s in selectors)
            if hit or (uid_keys and entry.uid.lower() in uid_keys):
                matches.append(entry)
        removed: list[str] = []
        fields = self.index.fields
        for fld in matches:
            if fld.uid not in fields:
                continue
            # an entry below a sequence removed by this batch is still listed (its removal from
            # the index is deferred to one pass below): it has no parent any more
            parent = locate_parent(self.ds, fld)
            if parent is None or fld.tag not in parent or self.shielded(fld):
                continue
            del parent[fld.tag]
            self.index.remove(fld.uid)
            removed.append(fld.uid)
        self.index.remove_descendants(removed)

    def _keep_uids(self) -> frozenset[str]:
        keeps = [a for a in self.recipe.header if a.action == "KEEP" and a.field]
        if not keeps:
            return frozenset()
        full = self._full = build_index(self.ds)
        uids: set[str] = set()
        for action in keeps:
            self.action = action
            selector = compile_selector(action.field)
            if selector.kind in ("values", "fields"):
                continue  # deid's KEEP does not understand lists
            uids.update(e.uid for e in full.select(selector))
        return frozenset(uids)

    def _values_list(self, entries: tuple[RecipeAction, ...], index: FieldIndex) -> list[Any]:
        found: dict[Any, None] = {}
        for entry in entries:
            self.action = entry
            for fld in index.select(compile_selector(entry.field)):
                value = fld.element.value
                if entry.action == "FIELD":
                    if value in ("", None):
                        continue
                    items = list(value) if isinstance(value, pydicom.multival.MultiValue) \
                        else [value]
                    for item in items:
                        try:
                            found.setdefault(item, None)
                        except TypeError:
                            self.warn(entry, "a sequence cannot be a %values entry; ignored")
                else:
                    by, minlength = " ", 1
                    if entry.value is not None:
                        for param in entry.value.split(";"):
                            key, val = (p.strip() for p in param.split("="))
                            if key == "minlength":
                                minlength = int(val)
                            elif key == "by":
                                by = val.strip("'").strip('"')
                    for piece in (str(value) or "").split(by):
                        if len(piece) >= minlength:
                            found.setdefault(piece, None)
        return list(found)

    def _fields_list(self, entries: tuple[RecipeAction, ...], index: FieldIndex
                     ) -> dict[str, DicomField]:
        subset: dict[str, DicomField] = {}
        for entry in entries:
            self.action = entry
            for fld in index.select(compile_selector(entry.field)):
                subset.setdefault(fld.uid, fld)
        return subset

    # ------------------------------------------------------------------------------ selection
    def select(self, action: RecipeAction, selector: Selector) -> list[DicomField]:
        if selector.kind == "values":
            if selector.key not in self.lookup:
                self.warn(action, f"no %values list or variable named '{selector.key}'; "
                          "nothing selected")
                return []
            values = [str(x) for x in self.lookup.get(selector.key) or []]
            if not values:
                return []
            rx = re.compile("(" + "|".join(values) + ")", re.IGNORECASE)
            out = []
            for fld in self.index.fields.values():
                vals = fld.element.value
                if not isinstance(vals, list):
                    vals = [vals]
                if any(rx.search(str(v)) for v in vals):
                    out.append(fld)
            return out
        if selector.kind == "fields":
            listing: dict[str, DicomField] = {}
            for contender in (self.lookup.get(selector.key) or {}).values():
                for fld in self.index.exact(contender.stripped_tag.lower()):
                    listing.setdefault(fld.uid, fld)
            return list(listing.values())
        return self.index.select(selector)

    def shielded(self, fld: DicomField) -> bool:
        """REMOVE exclusion: a current entry matched by any REPLACE/JITTER selector (the static
        selectors decided once per field kind, see :class:`~deid_batch.recipe.plan.Shields`)."""
        current = self.index.fields.get(fld.uid)
        if current is None:
            return False
        shields = plan_of(self.recipe).shields
        hit = current.hits.get(shields.memo_key)
        if hit is None:
            tag = int(current.tag)
            hit = current.hits[shields.memo_key] = any(static_hit(s, current.static, tag)
                                                       for s in shields.static)
        return hit or any(s.matches(current) for s in shields.others)

    # ------------------------------------------------------------------------------ values
    def resolve(self, raw: str, target: DicomField | str) -> Any:
        """deid ``parse_value``: var:/func:/deid_func: or a VR-converted plain string.

        Returns the value, None (deid: do nothing) or a :class:`_Missing`.
        """
        if _VALUE_RE.search(raw):
            kind, option = raw.split(":", 1)
            if kind == "var":
                if self.lookup.get(option) is None:
                    return _Missing(f"variable '{option}'")
                return self.lookup[option]
            if kind == "deid_func":
                name, _, extras = option.partition(" ")
                fn = BUILTINS[name]
                # our built-ins only read the field: no defensive copy (user functions get one)
                fld = target
                if name == "jitter":
                    return self._jitter_builtin(fld, extras)
                return fn(dicom=self.ds, value=raw, field=fld, item=self.lookup, extras=extras,
                          uid_key=self.options.uid_key)
            func = self.functions.get(option, self.lookup.get(option))
            if func is None:
                return _Missing(f"function '{option}'")
            if not callable(func):
                raise DatasetError("deid-error", f"func:{option} is not callable")
            fld = target.snapshot() if isinstance(target, DicomField) else target
            return func(dicom=self.ds, value=raw, field=fld, item=self.lookup)
        if isinstance(target, DicomField):
            return convert_value(target.element.VR, raw)
        tag = _add_tag(target)[0]
        if tag in self.ds:
            return convert_value(self.ds[tag].VR, raw)
        return raw

    def _jitter_builtin(self, fld: Any, extras: str) -> Any:
        new, reasons = jitter_element(fld.element, jitter_days(extras))
        if reasons and self.action is not None:
            self.warn(self.action, f"left unchanged: {reasons[0]}")
        return new

    # ------------------------------------------------------------------------------ actions
    def perform(self, action: RecipeAction) -> None:
        self.action = action
        name = action.action
        if name not in HEADER_ACTIONS:
            self.warn(action, "not a valid action; blanking as deid does")
            name = "BLANK"
        selector = compile_selector(action.field)
        if name == "ADD":
            self.add(action)
            return
        matches = self.select(action, selector)
        if name == "BLANK":
            for fld in matches:
                self.blank(fld)
        elif name == "REPLACE":
            self.replace_all(action, matches)
        elif name == "JITTER":
            self.jitter_all(action, matches)
        elif name == "REMOVE":
            self.remove_all(action, matches)
        # KEEP: nothing at run time (it acted through the skip list)

    def delete(self, fld: DicomField) -> None:
        parent = locate_parent(self.ds, fld)
        if parent is not None and fld.tag in parent:
            raw = parent.get_item(fld.tag)
            is_sequence = fld.is_seq or isinstance(getattr(raw, "value", None), PydicomSequence)
            del parent[fld.tag]
            self.index.remove(fld.uid)
            if is_sequence:
                self.index.remove_children(fld.uid)

    def blank(self, fld: DicomField) -> None:
        parent = locate_parent(self.ds, fld)
        if parent is not None and fld.tag in parent:
            element = parent[fld.tag]
            is_sequence = isinstance(element.value, PydicomSequence)
            element.value = None
            if is_sequence:
                self.index.remove_children(fld.uid)

    def set_value(self, fld: DicomField, value: Any) -> None:
        current = self.index.fields.get(fld.uid)
        if current is not None:
            current.element.value = value

    def warn_invalid(self, action: RecipeAction, invalid: dict[str, str]) -> None:
        """One warning naming the elements that received a value invalid for their VR."""
        if invalid:
            names = ", ".join(f"{name} ({vr})" for name, vr in invalid.items())
            self.warn(action, f"the value written into {names} is not valid for its VR; written "
                      "as deid does (some DICOM readers may refuse the file)")

    def replace_all(self, action: RecipeAction, matches: list[DicomField]) -> None:
        missing = None
        invalid: dict[str, str] = {}
        for fld in matches:
            value = self.resolve(action.value or "", fld)
            if isinstance(value, _Missing):
                missing = value
                self.delete(fld)
            elif value is None:
                if action.value and not _VALUE_RE.search(action.value):
                    self.warn(action, f"the value is not valid for VR {fld.element.VR}; "
                              "element left unchanged (as deid does)")
            else:
                vr = fld.element.VR
                if invalid_for_vr(vr, value):
                    invalid[fld.element.keyword or str(fld.tag)] = vr
                self.set_value(fld, value)
        self.warn_invalid(action, invalid)
        if missing is not None:
            self.warn(action, f"{missing.what} not provided; matched element(s) removed as a "
                      "precaution")

    def jitter_all(self, action: RecipeAction, matches: list[DicomField]) -> None:
        missing = None
        for fld in matches:
            if not fld.element.value:
                continue
            value = self.resolve(action.value or "", fld)
            if isinstance(value, _Missing):
                missing = value
                self.delete(fld)
                continue
            if value is None:
                self.warn(action, "the value source gave no number of days; unchanged")
                continue
            new, reasons = jitter_element(fld.element, int(value))
            for reason in dict.fromkeys(reasons):
                self.warn(action, f"element {fld.uid} left unchanged: {reason}")
            if new not in (None, ""):
                converted = self.resolve(str(new), fld) if isinstance(new, str) else new
                if converted is not None:
                    self.set_value(fld, converted)
        if missing is not None:
            self.warn(action, f"{missing.what} not provided; matched element(s) removed as a "
                      "precaution")

    def remove_all(self, action: RecipeAction, matches: list[DicomField]) -> None:
        missing = None
        for fld in matches:
            do_removal: Any = True
            if action.value is not None:
                do_removal = self.resolve(action.value, fld)
                if isinstance(do_removal, _Missing):
                    missing = do_removal
                    do_removal = True
            if do_removal and not self.shielded(fld):
                self.delete(fld)
        if missing is not None:
            self.warn(action, f"{missing.what} not provided; matched element(s) removed as a "
                      "precaution")

    def add(self, action: RecipeAction) -> None:
        tag, vr = _add_tag(action.field)
        value = self.resolve(action.value or "", action.field)
        uid = str(tag)
        is_filemeta = uid.startswith("(0002")
        if isinstance(value, _Missing):
            self.warn(action, f"{value.what} not provided; the element is removed as a "
                      "precaution")
            self._drop_top_level(tag, is_filemeta)
            return
        if value is None:
            return
        current = self.index.fields.get(uid)
        if current is not None:
            if invalid_for_vr(current.element.VR, value):
                self.warn_invalid(action, {current.element.keyword or uid: current.element.VR})
            current.element.value = value
            return
        if invalid_for_vr(vr, value):
            self.warn_invalid(action, {keyword_for_tag(tag) or uid: vr})
        if isinstance(value, str) and not _VALUE_RE.search(action.value or ""):
            if vr in (*_FLOAT_VRS, *_INT_VRS, *_BYTES_VRS):
                converted = convert_value(vr, value)
                if converted is None:
                    raise DatasetError("deid-error", f"{self.source}: {action.where}: ADD "
                                       f"{action.field}: the value is not valid for VR {vr}")
                value = converted
        element = DataElement(tag, vr, value)
        if is_filemeta:
            if getattr(self.ds, "file_meta", None) is None:
                self.ds.file_meta = FileMetaDataset()
            self.ds.file_meta.add(element)
        else:
            self.ds.add(element)
        self.index.add(DicomField(element, action.field, uid, is_filemeta))

    def _drop_top_level(self, tag: BaseTag, is_filemeta: bool) -> None:
        container = self.ds.get("file_meta") if is_filemeta else self.ds
        if container is None or tag not in container:
            return
        keyword = container[tag].keyword
        if keyword in self.config_skip or str(tag) in self.config_skip:
            return
        del container[tag]
        self.index.remove(str(tag))
        self.index.remove_children(str(tag))


def _whitelist_flags(plan: Whitelist, container: Dataset, tag: BaseTag, skip: frozenset[str]
                     ) -> int:
    """KEEP/SHIELD/SKIP flags of a top-level element (name = keyword, uid = tag string)."""
    itag = int(tag)
    name = _keyword(itag)
    flag = SKIP if name in skip or _tagstr(itag) in skip else 0
    static = field_static(container, tag, name)
    if any(static_hit(s, static, itag) for s in plan.keeps):
        flag |= KEEP
    if any(static_hit(s, static, itag) for s in plan.shields):
        flag |= SHIELD
    return flag


def _may_hold_items(element: RawDataElement) -> bool:
    """A raw element pydicom could turn into a sequence (so private tags may sit below it)."""
    vr = element.VR
    if vr is None:
        if element.length == 0xFFFFFFFF:
            return True
        try:
            vr = dictionary_VR(element.tag)
        except KeyError:
            return True
    return vr in ("SQ", "UN") or len(vr) != 2


def _remove_private(ds: Dataset, keeps: frozenset[PrivateKey] = frozenset(),
                    creators: Creators | None = None) -> None:
    """pydicom's ``remove_private_tags`` without converting the public elements it keeps.

    ``keeps``: the private elements the recipe KEEPs by creator; they (and their creator
    elements) stay, and private tags inside a kept sequence are removed the same way.

    Like pydicom's walk, each private element is converted before it is deleted (a value pydicom
    cannot convert fails the dataset as it does there); public elements stay raw unless they may
    hold items. The elements left raw are converted later (or copied by the byte-level writer).
    """
    spared = kept_private_tags(ds, keeps, creators)
    for tag in sorted(ds.keys()):
        element = ds.get_item(tag)
        if tag.is_private and tag not in spared:
            ds[tag]  # noqa: B018 - convert first, as pydicom's walk does
            del ds[tag]
            continue
        if isinstance(element, RawDataElement) and not _may_hold_items(element):
            continue
        converted = ds[tag]
        if converted.VR == "SQ":
            for item in converted.value:
                _remove_private(item, keeps, creators)


def _convert_survivors(ds: Dataset) -> None:
    """deid converts every element while indexing; we convert only what survived the recipe
    (elements removed while still raw never cost a conversion), so the written bytes match."""
    for _ in ds.iterall():
        pass
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for _ in meta:
            pass


def finish_dataset(ds: pydicom.Dataset, source: str | None = None) -> None:
    """Convert what ``deidentify_dataset(..., finish=False)`` left raw, failing exactly as
    :func:`deidentify_dataset` fails on a value pydicom cannot convert."""
    try:
        _convert_survivors(ds)
    except Exception as exc:  # noqa: BLE001 - any failure is this dataset's failure
        raise DatasetError("deid-error", f"{source or '<dataset>'}: removing private tags: failed "
                           f"with {type(exc).__name__} (the value is not shown)") from None


def _reach(items: list[Dataset], skip: frozenset[str]) -> None:
    """Convert what :func:`build_index` converts below ``items`` (breadth-first, same order)."""
    queue = list(items)
    while queue:
        dataset = queue.pop(0)
        for element in dataset.elements():
            itag = int(element.tag)
            if skip and (_keyword(itag) in skip or _tagstr(itag) in skip):
                continue
            if isinstance(element, RawDataElement):
                if element.VR not in (None, "SQ", "UN"):
                    continue
                element = dataset[element.tag]
            if isinstance(element.value, PydicomSequence):
                queue.extend(i for i in element.value if isinstance(i, Dataset))


def _add_tag(name: str) -> tuple[BaseTag, str]:
    """ADD's target: a dictionary keyword (its tag and VR) or a bare 8-hex tag (VR ST)."""
    if name in keyword_dict:
        tag = keyword_dict[name]
        return Tag(tag), DicomDictionary[tag][0]
    if _HEX8_RE.match(name):
        return Tag(int(name, 16)), "ST"
    raise RecipeError(f"ADD needs a keyword or an 8-hex-digit tag, not '{name}'")


def deidentify_dataset(ds: pydicom.Dataset, recipe: Recipe | str | None = None,
                       variables: Mapping[str, Any] | None = None, *,
                       functions: Mapping[str, Callable[..., Any]] | None = None,
                       options: EngineOptions | None = None,
                       source: str | None = None, base: Any = DEFAULT_BASE,
                       finish: bool = True) -> EngineResult:
    """Apply the header recipe to ``ds`` in place, as deid 0.4.13 does (with our deviations).

    Parameters
    ----------
    ds : pydicom.Dataset
        Modified in place and returned in the result.
    recipe : Recipe, str or None
        A loaded recipe (load it once per run), or anything :func:`load_recipe` accepts.
    base : str or None
        Put under ``recipe`` unless it was loaded with ``load_recipe(..., base=...)`` (default
        ``remove-everything``; ``"none"`` runs the recipe alone, as deid does).
    variables : mapping, optional
        This item's variables for ``var:NAME`` (callables there also serve ``func:NAME``).
    functions : mapping, optional
        Callables for ``func:NAME``, called with ``dicom=, value=, field=, item=``.
    options : EngineOptions, optional
    source : str, optional
        The file name used in warnings and errors.
    finish : bool
        Convert every surviving element (as deid does, so a value pydicom cannot convert fails
        here). ``False`` leaves untouched elements raw for the byte-level writer
        (:mod:`deid_batch.dicom.rewrite`); :func:`finish_dataset` does the rest if it declines.

    Returns
    -------
    EngineResult

    Raises
    ------
    RecipeError
        If ``recipe`` is not a :class:`Recipe` and cannot be loaded.
    DatasetError
        ``reason="deid-error"`` when this dataset cannot be de-identified; the message names the
        source, the recipe line and the action, never a header value.
    """
    return _deidentify(ds, recipe, variables, functions, options, source, fast=True, base=base,
                       finish=finish)


def deidentify_dataset_generic(ds: pydicom.Dataset, recipe: Recipe | str | None = None,
                               variables: Mapping[str, Any] | None = None, *,
                               functions: Mapping[str, Callable[..., Any]] | None = None,
                               options: EngineOptions | None = None,
                               source: str | None = None, base: Any = DEFAULT_BASE) -> EngineResult:
    """:func:`deidentify_dataset` without the compiled plan (no whitelist shortcut, no batched
    REMOVE): every header action runs on its own, as deid runs it. The reference the plan is
    tested against; same results, slower."""
    return _deidentify(ds, recipe, variables, functions, options, source, fast=False, base=base)


def _resolved(recipe: Recipe | str | None, base: Any) -> Recipe:
    """``recipe`` on ``base`` (a Recipe object keeps the result: loaded once, not per dataset)."""
    if not isinstance(recipe, Recipe):
        return load_recipe(recipe, base=base)
    if recipe.resolved:
        return recipe
    if not isinstance(base, (str, type(None))):
        return load_recipe(recipe, base=base)
    cache: dict[str | None, Recipe] = recipe.__dict__.setdefault("_resolved_on", {})
    found = cache.get(base)
    if found is None:
        found = cache[base] = load_recipe(recipe, base=base)
    return found


def _deidentify(ds: pydicom.Dataset, recipe: Recipe | str | None,
                variables: Mapping[str, Any] | None,
                functions: Mapping[str, Callable[..., Any]] | None,
                options: EngineOptions | None, source: str | None, *, fast: bool,
                base: Any = DEFAULT_BASE, finish: bool = True) -> EngineResult:
    rec = _resolved(recipe, base)
    run = _Run(ds, rec, variables or {}, functions or {}, options or EngineOptions(),
               source or "<dataset>", fast, finish)
    try:
        run.execute()
    except DatasetError as exc:
        act = run.action
        where = f"{act.where}: {act.action} {act.field}: " if act else ""
        msg = str(exc)
        if not msg.startswith(run.source):
            msg = f"{run.source}: {where}{msg}"
        raise DatasetError(exc.reason, msg) from None
    except Exception as exc:  # noqa: BLE001 - any failure is this dataset's failure
        action = run.action
        where = (f"recipe {action.where}: {action.action} {action.field}" if action
                 else "removing private tags")
        raise DatasetError("deid-error", f"{run.source}: {where}: failed with "
                           f"{type(exc).__name__} (the value is not shown)") from None
    logger.debug("%s: %d warnings", run.source, len(run.warnings))
    return EngineResult(ds, run.warnings)

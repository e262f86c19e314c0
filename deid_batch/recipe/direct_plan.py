"""Direct plan: a recipe compiled for the direct path (:mod:`deid_batch.recipe.direct`, which runs
it over a file's bytes), or ``None`` when the recipe needs the engine.

**Which recipes** (:func:`direct_plan_of`, compiled once per Recipe object and kept on it, like
``engine.plan_of``): no ``%values``/``%fields``, no JITTER, only KEEP, REMOVE, ADD, BLANK and
REPLACE; every selector static (keywords, tags, uids, ``contains:``/``startswith:``/
``endswith:``/``except:``, ``select:group:``, ``ALL``); REPLACE and BLANK with a literal, a
``var:`` value or ``deid_func:hmac_uid`` (a REPLACE's selector shields the REMOVEs, as in the
engine); ADD with a literal or a ``var:`` value on a data set keyword of a single VR; put actions
that are static KEEPs; and the skip list on. deid's bundled ``dicom`` family is such a recipe.
Everything is then decided per element from its static part (tag, private creator, nested name)
through the same memoised ``_Static`` keys the engine uses; only the ADD values and the elements a change touches are
converted, with pydicom's own conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.tag import BaseTag

from deid_batch.dicom.rewrite import _CHARSET
from deid_batch.recipe.fields import (
    _STATIC,
    STATIC_KINDS,
    Selector,
    _keyword,
    _static,
    _tagstr,
    compile_selector,
)
from deid_batch.recipe.model import Recipe, RecipeAction
from deid_batch.recipe.plan import RemoveBatch

__all__ = ["DirectPlan", "direct_plan_of"]

_VALUE_PREFIXES = ("var:", "func:", "deid_func:")


@dataclass(frozen=True)
class _Add:
    action: RecipeAction
    tag: int
    vr: str
    variable: str | None  # var:NAME, else the literal action.value


@dataclass(frozen=True)
class _Change:
    """REPLACE (a literal, ``var:`` or ``deid_func:hmac_uid``) or BLANK of the selected elements."""

    action: RecipeAction
    selector: Selector
    variable: str | None = None
    hmac: bool = False


@dataclass(frozen=True)
class DirectPlan:
    """A recipe the direct path runs: KEEP selectors, then the steps in recipe order."""

    keeps: tuple[Selector, ...]
    steps: tuple[RemoveBatch | _Add | _Change, ...]
    uid_keys: bool  # some selector names a nested uid: nodes carry their uid
    #: REPLACE/JITTER selectors (a REMOVE never deletes what they match) and their memo key
    shields: tuple[Selector, ...] = ()
    shield_key: str = ""
    keep_key: str = ""  # memo key of "a KEEP selector matches" (in ``_Static.hits``)


def _static_selector(text: str) -> Selector | None:
    selector = compile_selector(text)
    return selector if selector.kind in STATIC_KINDS and selector.kind not in ("regex", "except") \
        or selector.kind in ("regex", "except") and _compiles(selector.key) else None


def _compiles(expression: str) -> bool:
    import re

    try:
        re.compile(expression, re.IGNORECASE)
    except re.error:
        return False
    return True


def _change(action: RecipeAction) -> _Change | None:
    selector = _static_selector(action.field)
    if selector is None:
        return None
    value = action.value or ""
    if action.action == "BLANK":
        return _Change(action, selector)
    if value.startswith("var:"):
        return _Change(action, selector, variable=value[4:])
    if value == "deid_func:hmac_uid":
        return _Change(action, selector, hmac=True)
    if value.startswith(_VALUE_PREFIXES):
        return None  # func: and the other deid_func: read the dataset: the engine runs them
    return _Change(action, selector)


def _compile(recipe: Recipe) -> DirectPlan | None:  # noqa: C901 - one check per action kind
    from deid_batch.recipe.engine import _add_tag, plan_of

    if recipe.values or recipe.fields:
        return None
    keeps: list[Selector] = []
    shields: list[Selector] = []
    for action in recipe.header:
        if action.action not in ("KEEP", "REMOVE", "ADD", "REPLACE", "BLANK") or not action.field:
            return None
        if action.action in ("KEEP", "REPLACE"):
            selector = _static_selector(action.field)
            if selector is None:
                return None
            (keeps if action.action == "KEEP" else shields).append(selector)
    steps: list[RemoveBatch | _Add | _Change] = []
    uid_keys = any(s.kind == "exact" and "__" in s.key for s in shields)
    for step in plan_of(recipe).steps:
        if isinstance(step, RemoveBatch):
            steps.append(step)
            uid_keys = uid_keys or bool(step.uid_keys)
            continue
        if step.action in ("REPLACE", "BLANK"):
            change = _change(step)
            if change is None:
                return None
            uid_keys = uid_keys or change.selector.kind == "exact" and "__" in change.selector.key
            steps.append(change)
            continue
        if step.action != "ADD":
            return None  # a REMOVE with a value, or a KEEP the plan could not drop
        try:
            tag, vr = _add_tag(step.field)
        except Exception:  # noqa: BLE001 - the engine reports it
            return None
        value = step.value or ""
        if int(tag) >> 16 in (0, 2) or int(tag) == _CHARSET or len(vr) != 2 or vr == "SQ" or \
                (value.startswith(_VALUE_PREFIXES) and not value.startswith("var:")):
            return None
        steps.append(_Add(step, int(tag), vr, value[4:] if value.startswith("var:") else None))
    return DirectPlan(tuple(keeps), tuple(steps), uid_keys, tuple(shields), _memo_key("shield", shields),
                      _memo_key("keep", keeps))


def _memo_key(what: str, selectors: list[Selector]) -> str:
    return f"{what}\x00" + "\x00".join(f"{s.kind}\x01{s.key}\x01{s.group}" for s in selectors)


#: (tag, VR, private creator, parent name) -> (VR, keyword, tag string, nested name, _Static):
#: strings of the dictionary and the recipe's field kinds only (never a value), bounded
_KINDS: dict[tuple[int, bytes, str | None, str | None], tuple[str, str, str, str, Any]] = {}


def _kind(tag: int, vr_bytes: bytes, creator: str | None, prefix: str | None
          ) -> tuple[str, str, str, str, Any]:
    key = (tag, vr_bytes, creator, prefix)
    found = _KINDS.get(key)
    if found is None:
        vr = vr_bytes.decode()
        keyword = _keyword(tag)
        name = keyword if prefix is None else f"{prefix}__{keyword}"
        static = _STATIC.get((tag, creator, name))
        if static is None:
            element = DataElement(BaseTag(tag), vr, None)
            if creator is not None:
                element.private_creator = creator
            static = _static(tag, creator, name, element)
        found = (vr, keyword, _tagstr(tag), name, static)
        if len(_KINDS) >= 50_000:
            _KINDS.clear()
        _KINDS[key] = found
    return found


def direct_plan_of(recipe: Recipe) -> DirectPlan | None:
    """``recipe``'s direct plan (None: the recipe needs the engine), built once per Recipe object.

    An unresolved recipe is first put on the default base, as ``deidentify_dataset`` does."""
    found = recipe.__dict__.get("_direct", False)
    if found is False:
        from deid_batch.recipe.builtins import DEFAULT_BASE
        from deid_batch.recipe.parse import load_recipe

        try:
            resolved = recipe if recipe.resolved else load_recipe(recipe, base=DEFAULT_BASE)
            found = _compile(resolved)
        except Exception:  # noqa: BLE001 - the engine reports it
            found = None
        object.__setattr__(recipe, "_direct", found)
    return found  # type: ignore[no-any-return]


def _options_fit(options: Any, plan: DirectPlan) -> bool:
    if options.disable_skip:
        return False
    if options.remove_private and any('"' in s.key for s in plan.keeps):
        return False  # a KEEP of a private creator's element: remove_private's own rules
    for action in options.put_actions:
        if action.action != "KEEP" or _static_selector(action.field) is None:
            return False
    return True

"""Compiled execution plan of a :class:`~deid_batch.recipe.parse.Recipe`: a recipe in, the steps the
engine runs out. Computed once per Recipe object (:func:`deid_batch.recipe.engine.plan_of`), never per dataset.

Three rewrites; each gives exactly the result of running the header actions one by one
(:mod:`deid_batch.recipe.engine` keeps that generic path, and the tests compare the two):

* **KEEP lines** with a static selector (below) are dropped from the steps: KEEP acts before
  any action, through the skip list; at its own turn it only selects, with no effect.
* **Batched REMOVE**: consecutive ``REMOVE <selector>`` lines without a value whose selector does
  not read values (exact, ``contains:``/``startswith:``/``endswith:``/``except:``,
  ``select:group:``, ``ALL``) become one :class:`RemoveBatch`. Inside such a run the order does not
  matter: an element goes iff some selector of the run matches it while it is still there, and
  the selectors do not depend on what was removed before them (deid's REPLACE/JITTER exclusion is
  checked per element, as before). One pass over the index replaces one pass per line.
* **Whitelist** (:class:`Whitelist`): ``REMOVE ALL`` preceded by nothing but KEEP lines, no
  ``%values``/``%fields``, every KEEP/REPLACE/JITTER selector static (as above). ``REMOVE ALL``
  then leaves exactly the top-level (and file-meta) elements whose tag is protected (skip list
  or KEEP, which protects a tag at every depth) or whose field a REPLACE/JITTER selector matches,
  and no nested field can survive except inside a protected element (which is never indexed) or
  a shielded sequence (the engine falls back to the generic path for those). The engine decides
  this per top-level element from its tag and private creator, without flattening the dataset,
  and runs the actions after ``REMOVE ALL`` generically on the few surviving fields.

The per-field-kind decisions of a :class:`Whitelist` are memoised in a bounded dict of ints keyed
by (tag, private creator) (strings and numbers only: datasets are never cached).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Union

from deid_batch.recipe.fields import STATIC_KINDS, Selector, compile_selector
from deid_batch.recipe.model import Recipe, RecipeAction

__all__ = ["Plan", "RemoveBatch", "Whitelist", "compile_plan"]

#: whitelist memo flags per (tag, creator)
KEEP, SHIELD, SKIP = 1, 2, 4
_MEMO_MAX = 50_000


@dataclass(frozen=True)
class RemoveBatch:
    """A run of plain REMOVE lines executed as one pass over the index."""

    actions: tuple[RecipeAction, ...]
    selectors: tuple[Selector, ...]
    #: key of the per-field-kind memo (``_Static.hits``): does any selector match statically?
    memo_key: str
    #: exact keys that may equal a nested uid (they contain ``__``): compared per field
    uid_keys: frozenset[str]


Step = Union["RecipeAction", RemoveBatch]


@dataclass
class Whitelist:
    """``[KEEP...] REMOVE ALL <anything>`` with static KEEP/REPLACE/JITTER selectors."""

    keeps: tuple[Selector, ...]
    shields: tuple[Selector, ...]
    #: the steps after REMOVE ALL (run generically on the surviving fields)
    after: tuple[Step, ...]
    #: config skip list -> {(tag, creator): KEEP|SHIELD|SKIP flags}; bounded (see module doc)
    memo: dict[frozenset[str], dict[tuple[int, str | None], int]] = field(
        default_factory=dict, compare=False, repr=False)

    def flags_for(self, skip: frozenset[str]) -> dict[tuple[int, str | None], int]:
        found = self.memo.get(skip)
        if found is None or len(found) >= _MEMO_MAX:
            if len(self.memo) >= 8:
                self.memo.clear()
            found = self.memo[skip] = {}
        return found


@dataclass(frozen=True)
class Plan:
    """What the engine runs: ``steps`` (all header actions, plain REMOVE runs batched) and, when
    the recipe is a whitelist, the :class:`Whitelist` shortcut for its ``REMOVE ALL``."""

    steps: tuple[Step, ...]
    whitelist: Whitelist | None
    #: the REPLACE/JITTER selectors that shield elements from REMOVE (:class:`Shields`)
    shields: Shields = field(default_factory=lambda: Shields((), (), "shield"))


@dataclass(frozen=True)
class Shields:
    """REMOVE's exclusion, split so that most of it is decided once per field kind: ``static``
    selectors (memoised in ``_Static.hits`` under ``memo_key``) and the ``others`` (``select:VR``,
    exact nested uids), which read the entry itself."""

    static: tuple[Selector, ...]
    others: tuple[Selector, ...]
    memo_key: str


def _shields(recipe: Recipe) -> Shields:
    static: list[Selector] = []
    others: list[Selector] = []
    for action in recipe.header:
        if action.action not in ("REPLACE", "JITTER") or not action.field:
            continue
        selector = compile_selector(action.field)
        if selector.kind in ("values", "fields"):
            continue
        if _static(selector):
            static.append(selector)
        if not _static(selector) or selector.kind == "exact" and "__" in selector.key:
            others.append(selector)  # read per entry (its VR, its uid)
    key = "shield\x00" + "\x00".join(f"{s.kind}\x01{s.key}\x01{s.group}" for s in static)
    return Shields(tuple(static), tuple(others), key)

def _static(selector: Selector) -> bool:
    """Decidable from a field's static part, and cannot fail while deciding (a recipe that went
    through load_recipe has valid expressions; a hand-built one keeps its errors where deid has
    them, on the generic path)."""
    if selector.kind not in STATIC_KINDS:
        return False
    if selector.kind in ("regex", "except"):
        try:
            re.compile(selector.key, re.IGNORECASE)
        except re.error:
            return False
    return True


def _plain_remove(action: RecipeAction) -> Selector | None:
    if action.action != "REMOVE" or action.value is not None or not action.field:
        return None
    selector = compile_selector(action.field)
    return selector if _static(selector) else None


def _steps(actions: tuple[RecipeAction, ...], batch: bool) -> tuple[Step, ...]:
    if not batch:
        return actions
    out: list[Step] = []
    run: list[tuple[RecipeAction, Selector]] = []

    def flush() -> None:
        if run:
            selectors = tuple(s for _, s in run)
            key = "batch\x00" + "\x00".join(f"{s.kind}\x01{s.key}\x01{s.group}" for s in selectors)
            uid_keys = frozenset(s.key for s in selectors if s.kind == "exact" and "__" in s.key)
            out.append(RemoveBatch(tuple(a for a, _ in run), selectors, key, uid_keys))
            run.clear()

    for action in actions:
        if action.action == "KEEP" and _static(compile_selector(action.field)):
            continue  # acted through the skip list; at its turn it only selects (no effect)
        selector = _plain_remove(action)
        if selector is None:
            flush()
            out.append(action)
        else:
            run.append((action, selector))
    flush()
    return tuple(out)


def _whitelist(recipe: Recipe) -> Whitelist | None:
    if recipe.values or recipe.fields:
        return None
    header = recipe.header
    at = next((i for i, a in enumerate(header) if a.action != "KEEP"), None)
    if at is None:
        return None
    first = header[at]
    if first.action != "REMOVE" or first.value is not None or \
            compile_selector(first.field).kind != "all":
        return None
    keeps: list[Selector] = []
    shields: list[Selector] = []
    for i, action in enumerate(header):
        if action.action not in ("KEEP", "REPLACE", "JITTER") or not action.field:
            continue
        selector = compile_selector(action.field)
        if selector.kind in ("values", "fields") and i > at:
            continue  # protects nothing, shields nothing; runs (generically) after REMOVE ALL
        if not _static(selector):
            return None  # select:VR reads the element; a list KEEP before REMOVE ALL reads values
        (keeps if action.action == "KEEP" else shields).append(selector)
    return Whitelist(tuple(keeps), tuple(shields), _steps(header[at + 1:], True))


def compile_plan(recipe: Recipe) -> Plan:
    """The plan of ``recipe`` (pure: the same recipe always gives an equal plan)."""
    # a select:VR REPLACE/JITTER reads (converts) each element a REMOVE is about to delete: keep
    # those conversions, and any error they raise, under the REMOVE line that deid blames
    batch = not any(a.action in ("REPLACE", "JITTER") and a.field
                    and compile_selector(a.field).kind == "vr" for a in recipe.header)
    return Plan(_steps(recipe.header, batch), _whitelist(recipe), _shields(recipe))

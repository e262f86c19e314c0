"""The recipe's data types: frozen, picklable, hashable values shared by the parser, the plan
compiler and the engine (this module imports none of them)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FilterCriterion", "FilterLabel", "Recipe", "RecipeAction"]


# ------------------------------------------------------------------------------------ data types
@dataclass(frozen=True)
class RecipeAction:
    """One recipe line: ``ACTION FIELD [VALUE]`` (also FIELD/SPLIT lines of %values/%fields)."""

    action: str
    field: str
    value: str | None
    source: str
    line: int

    def as_dict(self) -> dict[str, Any]:
        """deid's dict for this entry: ``value`` only when the line had one."""
        entry: dict[str, Any] = {"action": self.action, "field": self.field}
        if self.value is not None:
            entry["value"] = self.value
        return entry

    @property
    def where(self) -> str:
        """``file:line`` of the entry (or the source name alone for dict recipes)."""
        return f"{self.source}:{self.line}" if self.line else self.source


@dataclass(frozen=True)
class FilterCriterion:
    """One criteria line of a %filter LABEL (deid ``parse_member``)."""

    action: tuple[str, ...]
    field: tuple[str, ...]
    operator: str | None
    inner_operators: tuple[str, ...]
    value: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"action": list(self.action), "field": list(self.field), "operator": self.operator,
                "InnerOperators": list(self.inner_operators), "value": list(self.value)}


@dataclass(frozen=True)
class FilterLabel:
    """One LABEL block of a %filter group; kept for the pixel phase, ignored by header work."""

    name: str
    filters: tuple[FilterCriterion, ...]
    coordinates: tuple[tuple[int, str], ...]
    source: str = ""
    line: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "filters": [f.as_dict() for f in self.filters],
                "coordinates": [[m, c] for m, c in self.coordinates]}


@dataclass(frozen=True)
class Recipe:
    """A parsed, validated (possibly combined) recipe. Frozen, picklable, hashable."""

    format: str
    header: tuple[RecipeAction, ...]
    values: tuple[tuple[str, tuple[RecipeAction, ...]], ...] = ()
    fields: tuple[tuple[str, tuple[RecipeAction, ...]], ...] = ()
    filters: tuple[tuple[str, tuple[FilterLabel, ...]], ...] = ()
    labels: tuple[RecipeAction, ...] = ()
    sources: tuple[str, ...] = ()
    #: sections present in the text (so that ``as_dict`` shows empty ones as deid does)
    sections: tuple[str, ...] = field(default=(), compare=False)
    #: the recipe stack, in order, base first (e.g. ``("remove-everything (base)", "my.recipe")``);
    #: empty for a recipe loaded as it is (whose base a runner may still put under it)
    stack: tuple[str, ...] = field(default=(), compare=False)
    #: True once the base question is settled (loaded with ``base=``): runners use it as it is
    resolved: bool = field(default=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """deid's inspectable shape (``DeidRecipe().deid``)."""
        out: dict[str, Any] = {"format": self.format}
        present = set(self.sections)
        if self.header or "header" in present:
            out["header"] = [a.as_dict() for a in self.header]
        if self.labels or "labels" in present:
            out["labels"] = [a.as_dict() for a in self.labels]
        if self.values or "values" in present:
            out["values"] = {name: [a.as_dict() for a in acts] for name, acts in self.values}
        if self.fields or "fields" in present:
            out["fields"] = {name: [a.as_dict() for a in acts] for name, acts in self.fields}
        if self.filters or "filter" in present:
            out["filter"] = {name: [lab.as_dict() for lab in labs] for name, labs in self.filters}
        return out

    @property
    def digest(self) -> str:
        """sha256 (hex) of the canonical content: equal recipes give equal digests."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def values_names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.values)

    def __getstate__(self) -> dict[str, Any]:
        # the compiled plans (engine.plan_of, direct_plan.direct_plan_of) and the recipe resolved on its
        # base (engine) are not pickled: each worker computes its own once
        state = dict(self.__dict__)
        for cached in ("_plan", "_direct", "_resolved_on"):
            state.pop(cached, None)
        return state

    def fields_names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.fields)

"""``%filter`` evaluation: which LABELs of a recipe flag a header, and the regions they give.

deid 0.4.13's ``has_burned_pixels`` (``deid/dicom/pixels/detect.py``, ``deid/dicom/filter.py``),
reproduced on a pydicom Dataset read from the *original* file (before any header action or
private-tag removal, so a filter can read private tags):

* criteria ``contains``/``notcontains`` (case-insensitive ``re.search`` on ``str()`` of the value),
  ``equals``/``notequals`` (plain text equality after lower/strip), ``missing``, ``present``,
  ``empty``; a field given as ``0x...`` is read by tag, so its ``str()`` is the DataElement's;
* the criteria of one line are folded left to right (``a + b || c`` is ``(a and b) or c``); the
  lines of one LABEL are always ANDed, whatever their leading ``+``/``||`` (deid's code);
* a LABEL with coordinates and no criteria always flags; every LABEL of every group is
  evaluated, in recipe order, and each one that flags is a :class:`FilterHit`;
* values are matched to criteria by position, as deid does (``missing A || contains B x`` gives
  ``contains`` no value: it searches for ``none``).

Deviations (README, Deviations from deid): ``from:Sequence`` regions are resolved per file (deid
writes the first file's regions back into the shared recipe); the first LABEL of a recipe may have
no criteria (deid raises ``UnboundLocalError``); bad coordinates, bad ``0x`` tags and invalid
regular expressions are a :class:`~deid_batch.errors.RecipeError` at load time (deid crashes on
the first file that reaches them); regions are clipped to the image (deid's negative numbers
wrap around to the other side of the image).

Pure: nothing here reads files; :func:`compile_filters` checks a recipe once, :func:`detect`
runs per dataset.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from deid_batch.errors import Problem, RecipeError
from deid_batch.recipe.model import FilterCriterion, FilterLabel, Recipe

__all__ = ["Detection", "FilterHit", "Filters", "Region", "compile_filters", "detect"]

#: the group whose hits mean "clean as it is" (deid's convention; its code flags them too)
WHITELIST = "whitelist"


@dataclass(frozen=True)
class Region:
    """A rectangle of every frame: columns ``x0:x1``, rows ``y0:y1`` (end-exclusive)."""

    x0: int
    y0: int
    x1: int
    y1: int
    keep: bool = False  #: ``keepcoordinates``: restores what earlier regions blanked

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]


@dataclass(frozen=True)
class FilterHit:
    """One LABEL that flagged the dataset: deid's ``{"reason", "group", "coordinates"}``."""

    group: str
    label: str
    reason: str
    #: ``(mask, coordinate)`` as deid's results hold them, ``from:`` resolved for this file
    #: (mask 0 = blank, 1 = keep; coordinate ``x0,y0,x1,y1`` or ``all``)
    coordinates: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class Detection:
    """The verdict for one dataset (deid's ``{"flagged": ..., "results": [...]}``)."""

    flagged: bool
    hits: tuple[FilterHit, ...]

    @property
    def group(self) -> str | None:
        """The group of the first hit (deid's first result), or ``None``."""
        return self.hits[0].group if self.hits else None

    @property
    def label(self) -> str | None:
        return self.hits[0].label if self.hits else None

    @property
    def needs_review(self) -> bool:
        """Flagged, yet no LABEL says what to blank and none whitelists it.

        deid's documented group order: a whitelist hit means clean; LABELs with regions (the
        graylist) say what to blank; a file only flagged by LABELs without regions (the
        blacklist, the graylist catch-alls) needs a person to look at it.
        """
        if not self.flagged or any(h.group == WHITELIST for h in self.hits):
            return False
        return not any(h.coordinates for h in self.hits)

    @property
    def review_label(self) -> str | None:
        """The first LABEL that flagged a file needing review."""
        return self.hits[0].label if self.needs_review else None

    def regions(self, rows: int, columns: int) -> list[Region]:
        """The regions in the order cleaning applies them, clipped to a ``rows`` x ``columns`` frame.

        Empty rectangles (after clipping) are left out; ``all`` is the whole frame.
        """
        out: list[Region] = []
        for hit in self.hits:
            for mask, coordinate in hit.coordinates:
                if coordinate.strip().lower() == "all":
                    x0, y0, x1, y1 = 0, 0, columns, rows
                else:
                    x0, y0, x1, y1 = (int(v) for v in coordinate.split(","))
                x0, x1 = max(0, min(x0, columns)), max(0, min(x1, columns))
                y0, y1 = max(0, min(y0, rows)), max(0, min(y1, rows))
                if x0 < x1 and y0 < y1:
                    out.append(Region(x0, y0, x1, y1, keep=bool(mask)))
        return out


@dataclass(frozen=True)
class Filters:
    """The checked ``%filter`` groups of a recipe, in recipe order."""

    groups: tuple[tuple[str, tuple[FilterLabel, ...]], ...]

    def __bool__(self) -> bool:
        return any(labels for _, labels in self.groups)

    def fields(self) -> frozenset[str]:
        """Every field a criterion or a ``from:`` coordinate reads."""
        out: set[str] = set()
        for _, labels in self.groups:
            for lab in labels:
                for crit in lab.filters:
                    out.update(crit.field)
                out.update(c.replace("from:", "", 1) for _, c in lab.coordinates if "from:" in c)
        return frozenset(out)

    def reads_pixels(self) -> bool:
        """True when a criterion reads PixelData or a tag after it (the header read must include it)."""
        for name in self.fields():
            if name in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
                return True
            if "0x" in name and _tag_of(name) is not None and (_tag_of(name) or 0) >= 0x7FE00008:
                return True
        return False


# ---------------------------------------------------------------------------- checking
def compile_filters(recipe: Recipe) -> Filters:
    """Check every LABEL of ``recipe``; raise :class:`RecipeError` listing every problem."""
    problems: list[Problem] = []
    for _, labels in recipe.filters:
        for lab in labels:
            problems.extend(_check_label(lab))
    if problems:
        raise RecipeError(problems)
    return Filters(recipe.filters)


def _tag_of(name: str) -> int | None:
    try:
        return int(name, 0)
    except ValueError:
        return None


def _check_label(lab: FilterLabel) -> Iterator[Problem]:
    where = lab.source or "<recipe>"
    name_ = display_name(lab)
    for crit in lab.filters:
        for a, (action, name) in enumerate(zip(crit.action, crit.field)):
            if "0x" in name and _tag_of(name) is None:
                yield Problem(where, lab.line, f"LABEL {name_}: field '{name}' is not a tag: write "
                              "0xGGGGEEEE (8 hex digits) or a keyword (deid would crash)")
            if action in ("contains", "notcontains") and a < len(crit.value):
                try:
                    re.compile(crit.value[a].lower().strip())
                except re.error as exc:
                    yield Problem(where, lab.line, f"LABEL {name_}: '{action} {name}' is not a valid "
                                  f"regular expression ({exc.msg}); escape special characters with \\")
    for _, coordinate in lab.coordinates:
        text = coordinate.strip()
        if text.lower() == "all" or text.startswith("from:"):
            if text.startswith("from:") and not text[5:].strip():
                yield Problem(where, lab.line, f"LABEL {name_}: 'from:' needs a sequence keyword, "
                              "e.g. from:SequenceOfUltrasoundRegions")
            continue
        parts = text.split(",")
        if len(parts) != 4 or not all(_is_int(p) for p in parts):
            yield Problem(where, lab.line, f"LABEL {name_}: coordinates '{text}' must be four integers "
                          "x0,y0,x1,y1, 'all' or from:SequenceKeyword (deid would crash when cleaning)")


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------- criteria (deid filter.py)
def _get(ds: Dataset, name: str) -> Any:
    key: Any = int(name, 0) if "0x" in name else name
    return ds.get(key)


def _contenders(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _compare(ds: Dataset, name: str, expression: Any) -> bool:
    """deid ``compareBase`` with ``re.search``."""
    found = False
    for contender in _contenders(_get(ds, name)):
        if contender is not None:
            text, expr = str(contender).lower().strip(), str(expression).lower().strip()
            if re.search(expr, text):
                found = True
    return found


def _equals(ds: Dataset, name: str, term: Any) -> bool:
    """deid ``equalsBase``."""
    found = False
    for contender in _contenders(_get(ds, name)):
        if contender is not None and str(contender).lower().strip() == str(term).lower().strip():
            found = True
    return found


def _empty(ds: Dataset, name: str) -> bool:
    key: Any = int(name, 0) if "0x" in name else name
    if key not in ds:
        return False
    content = ds.get(key)
    if not content:
        return True
    if hasattr(content, "_list"):
        return len(content) == 0
    if isinstance(content, DataElement):
        content = content.value
    return bool(content == "")


def _criterion(ds: Dataset, action: str, name: str, value: str | None) -> bool:
    """deid ``apply_filter``."""
    if action == "contains":
        return _compare(ds, name, value)
    if action == "notcontains":
        return not _compare(ds, name, value)
    if action == "equals":
        return _equals(ds, name, value)
    if action == "notequals":
        return not _equals(ds, name, value)
    if action == "missing":
        return _get(ds, name) is None
    if action == "present":
        return _get(ds, name) is not None
    if action == "empty":
        return _empty(ds, name)
    return False


def _fold(flags: list[Any]) -> bool:
    """deid ``evaluate_group``: ``[True, "and", False, "or", True]`` folded left to right."""
    flags = list(flags)
    flagged: Any = False
    first = True
    if flags and flags[0] in ("and", "or"):
        flags.pop(0)
    while flags:
        flag = flags.pop(0)
        if flag == "and":
            flagged = flags.pop(0) and flagged
        elif flag == "or":
            flagged = flags.pop(0) or flagged
        else:
            flagged = flag if first else (flagged and flag)
        first = False
    return bool(flagged)


def _line(ds: Dataset, crit: FilterCriterion, descriptions: list[str]) -> bool:
    flags: list[Any] = []
    for a, (action, name) in enumerate(zip(crit.action, crit.field)):
        value = crit.value[a] if len(crit.value) > a else ""
        flags.append(_criterion(ds, action, name, value or None))
        description = f"{name} {action} {value}"
        if len(crit.inner_operators) > a:
            flags.append(crit.inner_operators[a])
            description = f"{description} {crit.inner_operators[a]}"
        descriptions.append(description)
    return _fold(flags)


def display_name(lab: FilterLabel) -> str:
    """The LABEL text without deid's kept ``LABEL`` prefix."""
    return re.sub(r"^label\s*", "", lab.name, flags=re.IGNORECASE)


# ---------------------------------------------------------------------------- regions (detect.py)
def _from_coordinates(ds: Dataset, coordinate: str) -> list[str]:
    """deid ``extract_coordinates``: ``RegionLocation*`` of each item of the named sequence."""
    name = coordinate.replace("from:", "", 1)
    if name not in ds:
        return []
    value = ds.get(name)
    items = list(value) if isinstance(value, Sequence) else [value]
    out = []
    keys = ("RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1", "RegionLocationMaxY1")
    for item in items:
        if isinstance(item, Dataset) and all(k in item for k in keys):
            out.append(",".join(str(item.get(k)) for k in keys))
    return out


def _resolve(ds: Dataset, coordinates: tuple[tuple[int, str], ...]) -> tuple[tuple[int, str], ...]:
    out: list[tuple[int, str]] = []
    for mask, coordinate in coordinates:
        if "from:" in coordinate:
            out.extend((mask, c) for c in _from_coordinates(ds, coordinate))
        else:
            out.append((mask, coordinate))
    return tuple(out)


def detect(ds: Dataset, filters: Filters) -> Detection:
    """Evaluate every LABEL of ``filters`` on ``ds`` (the original header), as deid does."""
    hits: list[FilterHit] = []
    last: FilterCriterion | None = None  # deid's loop variable ``group`` leaks from label to label
    for group_name, labels in filters.groups:
        for lab in labels:
            descriptions: list[str] = []
            if not lab.filters and lab.coordinates:
                flagged = True
                descriptions = [lab.name]
            else:
                flagged = _fold([_line(ds, crit, descriptions) for crit in lab.filters])
                if lab.filters:
                    last = lab.filters[-1]
            operator = last.operator if last is not None and last.operator is not None else ""
            if flagged:
                reason = f"{operator} {' '.join(descriptions)}".replace("\n", " ")
                hits.append(FilterHit(group_name, display_name(lab), reason,
                                      _resolve(ds, lab.coordinates)))
    return Detection(bool(hits), tuple(hits))

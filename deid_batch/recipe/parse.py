"""Recipe loading: deid recipe text (or deid's dict shape) in, a frozen :class:`Recipe` out.

The grammar and the combining rules are those of deid 0.4.13 (``deid/config/utils.py``): a
``FORMAT dicom`` line, ``#`` comments, ``%header``, ``%labels``, ``%values NAME``,
``%fields NAME`` and ``%filter NAME`` sections, action lines tokenised with deid's regex
(quotes kept, ``#`` cuts the value). Where deid silently drops, misreads or crashes on a
line, we refuse the recipe instead: every problem is collected with its file and line and
raised together as one :class:`~deid_batch.errors.RecipeError`, before any dataset is touched.

A :class:`Recipe` is frozen, picklable and hashable; build it once per run and pass it to workers.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deid_batch.errors import Problem, RecipeError
from deid_batch.recipe import keyed
from deid_batch.recipe.builtins import BUILTINS, DEFAULT_BASE, builtin, builtin_path
from deid_batch.recipe.fields import selector_problem
from deid_batch.recipe.functions import BUILTINS as FUNCTIONS
from deid_batch.recipe.functions import parse_keyvalues
from deid_batch.recipe.model import FilterCriterion, FilterLabel, Recipe, RecipeAction

__all__ = [
    "BUILTIN_FUNCTIONS",
    "FilterCriterion",
    "FilterLabel",
    "Recipe",
    "RecipeAction",
    "UNSET",
    "default_recipe_path",
    "load_deid",
    "load_recipe",
    "resolve_base",
]

logger = logging.getLogger(__name__)

#: Header actions (deid ``config/standards.py``); LABEL only means something in ``%filter``.
ACTIONS = ("ADD", "BLANK", "JITTER", "KEEP", "REPLACE", "REMOVE", "LABEL")
HEADER_ACTIONS = ("ADD", "BLANK", "JITTER", "KEEP", "REPLACE", "REMOVE")
SECTIONS = ("header", "labels", "filter", "values", "fields")
FILTER_CRITERIA = ("contains", "notcontains", "equals", "notequals", "missing", "present", "empty")
#: ``deid_func:`` names: deid's five built-ins, our ``hmac_uid`` and the PS3.15 recipes' functions.
BUILTIN_FUNCTIONS = tuple(FUNCTIONS)
#: Built-ins that read the original value of a field, so they cannot serve ADD (deid crashes).
_NEEDS_FIELD = ("jitter", "pydicom_uuid", "hmac_uid", *keyed.NEEDS_FIELD)

_TOKEN_RE = re.compile(r"""(?:[^\s"']+|"(?:\\.|[^"])*"|'(?:\\.|[^'])*')+""")
_HEX8_RE = re.compile(r"^[0-9A-Fa-f]{8}$")
_VALUE_PREFIX_RE = re.compile(r"^(var|func|deid_func):", re.IGNORECASE)


# ------------------------------------------------------------------------------- the text parser
@dataclass
class _Parsed:
    """Mutable result of parsing one recipe text (before validation and combining)."""

    source: str
    format: str | None = None
    format_line: int = 0
    header: list[RecipeAction] = field(default_factory=list)
    labels: list[RecipeAction] = field(default_factory=list)
    values: dict[str, list[RecipeAction]] = field(default_factory=dict)
    fields: dict[str, list[RecipeAction]] = field(default_factory=dict)
    filters: dict[str, list[FilterLabel]] = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def problem(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.source, line, message))


def _value_of(parts: list[str]) -> str:
    """deid ``_remove_comments``: tokens joined by one space, cut at the first ``#``."""
    return " ".join(parts).split("#")[0]


def _parse_text(text: str, source: str) -> _Parsed:
    """Parse recipe text line by line exactly as deid's ``load_deid`` classifies lines."""
    out = _Parsed(source)
    lines = [(n, raw.strip()) for n, raw in enumerate(text.splitlines(), start=1)]
    lines = [(n, line) for n, line in lines if line]
    section: str | None = None
    name: str | None = None
    named_ok = True
    i = 0
    while i < len(lines):
        lineno, line = lines[i]
        i += 1
        if line.startswith("#"):
            continue
        if re.match("^format", line, re.I):
            _parse_format(out, lineno, line)
        elif line.startswith("%"):
            section, name, named_ok = _parse_section(out, lineno, line)
        elif line.upper().startswith(("FIELD", "SPLIT")) and section in ("values", "fields"):
            _parse_group_line(out, lineno, line, section, name)
        elif line.upper().startswith(ACTIONS):
            if line.upper().startswith("LABEL") and section == "filter":
                members = []
                while i < len(lines) and not lines[i][1].upper().startswith(("LABEL", "%")):
                    members.append(lines[i])
                    i += 1
                _parse_label(out, lineno, line, name or "", members)
            else:
                _parse_action_line(out, lineno, line, section, named_ok)
        else:
            out.problem(lineno, "line not recognised (not a comment, FORMAT, %section or action); "
                        "deid would skip it silently")
    if out.format is None:
        out.problem(0, "missing 'FORMAT dicom' line (deid cannot use a recipe without it)")
    return out


def _parse_format(out: _Parsed, lineno: int, line: str) -> None:
    fmt = re.sub(r"FORMAT|(\s+)", "", line).lower()
    if fmt != "dicom":
        out.problem(lineno, f"invalid FORMAT line: write exactly 'FORMAT dicom' "
                    f"(upper-case FORMAT, no comment); got format '{fmt}'")
        return
    out.format = fmt
    out.format_line = lineno


def _parse_section(out: _Parsed, lineno: int, line: str) -> tuple[str | None, str | None, bool]:
    line = line.split("#", 1)[0].strip()
    parts = line.split(" ")
    name = " ".join(parts[1:]) if len(parts) > 1 else None
    section = re.sub(r"[%]|(\s+)", "", parts[0]).lower()
    if section not in SECTIONS:
        out.problem(lineno, f"unknown section '%{section}' (valid: %header, %labels, "
                    "%values NAME, %fields NAME, %filter NAME)")
        return None, None, False
    if section in ("filter", "values", "fields") and name is None:
        out.problem(lineno, f"%{section} needs a name, e.g. '%{section} mylist'")
        return None, None, False
    if section in ("header", "labels") and name is not None:
        out.problem(lineno, f"%{section} takes no name (deid crashes on the first action after it)")
        return section, None, False
    if section not in out.sections:
        out.sections.append(section)
    if section == "values":
        out.values.setdefault(name or "", [])
    elif section == "fields":
        out.fields.setdefault(name or "", [])
    elif section == "filter":
        out.filters.setdefault(name or "", [])
    return section, name, True


def _parse_group_line(out: _Parsed, lineno: int, line: str, section: str, name: str | None) -> None:
    parts = _TOKEN_RE.findall(line)
    action = parts.pop(0).replace(" ", "")
    if action not in ("FIELD", "SPLIT"):
        out.problem(lineno, f"'{action}' must be written in upper case (FIELD or SPLIT); "
                    "deid would ignore the line")
        return
    if section == "fields" and action != "FIELD":
        out.problem(lineno, "%fields only supports FIELD lines (SPLIT is for %values)")
        return
    if not parts:
        out.problem(lineno, f"{action} needs a field selector")
        return
    fld = parts.pop(0)
    value = _value_of(parts) if parts else None
    if section == "fields":
        value = None
        if parts and _value_of(parts).strip():
            out.problem(lineno, "FIELD takes only a selector; the rest of the line would be "
                        "ignored")
    target = out.values if section == "values" else out.fields
    target.setdefault(name or "", []).append(RecipeAction(action, fld, value, out.source, lineno))


def _parse_action_line(out: _Parsed, lineno: int, line: str, section: str | None,
                       named_ok: bool) -> None:
    parts = _TOKEN_RE.findall(line)
    action = parts.pop(0).replace(" ", "")
    if section is None:
        out.problem(lineno, "action before any section: start with '%header'")
        return
    if section not in ("header", "labels"):
        out.problem(lineno, f"header actions are not allowed in %{section} "
                    "(deid crashes on this line)")
        return
    if not named_ok:
        return  # the %header NAME line has been reported already
    if action not in ACTIONS:
        out.problem(lineno, f"unknown action '{action}': actions are upper case, one of "
                    f"{', '.join(HEADER_ACTIONS)} (deid would drop this line silently)")
        return
    if action == "LABEL":
        out.problem(lineno, "LABEL is only meaningful in a %filter section (deid drops it here)")
        return
    if not parts:
        out.problem(lineno, f"{action} needs a field selector")
        return
    fld = parts.pop(0)
    value: str | None = None
    if parts:
        value = _value_of(parts)
        first = next((tok for tok in parts if "#" in tok), None)
        if first is not None and not first.startswith("#"):
            out.problem(lineno, "'#' inside a value starts a comment: deid would cut the value "
                        "there; values cannot contain '#'")
    if action in ("BLANK", "KEEP"):
        if value is not None and value.strip():
            out.problem(lineno, f"{action} takes no value; the rest of the line would be ignored")
        value = None
    entry = RecipeAction(action, fld, value, out.source, lineno)
    (out.header if section == "header" else out.labels).append(entry)


def _parse_label(out: _Parsed, lineno: int, label: str, group: str,
                 members: list[tuple[int, str]]) -> None:
    """A %filter LABEL block (deid ``parse_label`` / ``parse_member``)."""
    name = label.replace("label", "", 1).split("#")[0].strip()
    filters: list[FilterCriterion] = []
    coords: list[tuple[int, str]] = []
    for mline, member in members:
        member = member.strip()
        low = member.lower()
        if low.startswith("ctpcoordinates") or low.startswith("ctpkeepcoordinates"):
            keep = low.startswith("ctpkeepcoordinates")
            raw = member.replace("ctpkeepcoordinates" if keep else "ctpcoordinates", "").strip()
            coord = _ctp_coordinate(out, mline, raw)
            if coord is not None:
                coords.append((1 if keep else 0, coord))
            continue
        if low.startswith("coordinates"):
            coords.append((0, member.replace("coordinates", "").strip()))
            continue
        if low.startswith("keepcoordinates"):
            coords.append((1, member.replace("keepcoordinates", "").strip()))
            continue
        operator = None
        if member.startswith("+"):
            operator = "and"
            member = member.replace("+", "", 1).strip()
        elif member.startswith("||"):
            operator = "or"
            member = member.replace("||", "", 1).strip()
        if member.startswith("#"):
            continue
        if not member.lower().startswith(FILTER_CRITERIA):
            out.problem(mline, f"not a valid filter criterion (expected one of "
                        f"{', '.join(FILTER_CRITERIA)}); deid would skip it")
            continue
        crit = _parse_member(out, mline, member, operator)
        if crit is not None:
            filters.append(crit)
    out.filters.setdefault(group, []).append(
        FilterLabel(name, tuple(filters), tuple(coords), out.source, lineno))


def _ctp_coordinate(out: _Parsed, lineno: int, raw: str) -> str | None:
    if raw == "all":
        return raw
    try:
        xs = [int(x) for x in raw.split(",") if x]
    except ValueError:
        xs = []
    if len(xs) != 4:
        out.problem(lineno, "ctp coordinates must be four integers x,y,width,height")
        return None
    xmin, ymin, width, height = xs
    return ",".join(str(v) for v in (xmin, ymin, xmin + width, ymin + height))


def _parse_member(out: _Parsed, lineno: int, text: str, main_operator: str | None
                  ) -> FilterCriterion | None:
    actions: list[str] = []
    fields: list[str] = []
    values: list[str] = []
    operators: list[str] = []
    pending = [text]
    while pending:
        member = pending.pop(0).strip()
        operator = None
        match_or = re.search(r"\|\|", member)
        match_and = re.search(r"\+", member)
        if match_or is not None:
            operator = "||"
        if match_and is not None and (match_or is None or match_or.start() >= match_and.start()):
            operator = "+"
        if operator is not None:
            member, rest = member.split(operator, 1)
            if any(word in rest for word in FILTER_CRITERIA):
                pending.append(rest.strip())
                operators.append(operator.replace("||", "or").replace("+", "and"))
            else:
                member = operator.join([member, rest])
        if " " not in member:
            out.problem(lineno, f"filter criterion '{member.split(' ')[0]}' needs a field")
            return None
        action, member = member.split(" ", 1)
        action = action.lower().strip()
        value = None
        if action in ("contains", "notcontains", "equals", "notequals"):
            if " " not in member.strip():
                out.problem(lineno, f"'{action}' needs a field and a value")
                return None
            fld, value = member.split(" ", 1)
        elif action in ("missing", "empty", "present"):
            fld = member.strip()
        else:
            out.problem(lineno, f"'{action}' is not a valid filter criterion")
            return None
        actions.append(action)
        fields.append(fld.strip())
        if value is not None:
            values.append(value.strip())
    return FilterCriterion(tuple(actions), tuple(fields), main_operator, tuple(operators),
                           tuple(values))


# -------------------------------------------------------------------------------- validation
def _validate_value_source(entry: RecipeAction, problems: list[Problem]) -> None:
    """Check a value: var:/func:/deid_func: forms and the built-in function arguments."""
    value = entry.value
    if value is None:
        return
    where = (entry.source, entry.line)
    m = _VALUE_PREFIX_RE.match(value)
    if m and m.group(1) not in ("var", "func", "deid_func"):
        problems.append(Problem(*where, f"'{m.group(1)}:' must be lower case "
                                f"('{m.group(1).lower()}:'); deid would use the text literally"))
        return
    if value.startswith(("var:", "func:")):
        kind, _, name = value.partition(":")
        if not name.strip() or re.search(r"\s", name.strip()):
            problems.append(Problem(*where, f"'{kind}:' needs one name without spaces"))
        return
    if value.startswith("deid_func:"):
        name, _, extras = value[len("deid_func:"):].partition(" ")
        if name not in BUILTIN_FUNCTIONS:
            problems.append(Problem(*where, f"unknown deid_func '{name}' (known: "
                                    f"{', '.join(BUILTIN_FUNCTIONS)})"))
            return
        if entry.action == "ADD" and name in _NEEDS_FIELD:
            problems.append(Problem(*where, f"deid_func:{name} needs an existing field's value "
                                    "and cannot be used with ADD (use REPLACE)"))
        opts = parse_keyvalues(extras)
        if name == "jitter":
            for key in ("days", "years"):
                if key in opts and not _is_int(opts[key]):
                    problems.append(Problem(*where, f"deid_func:jitter {key}= must be an integer"))
        if name == "pydicom_uuid" and isinstance(opts.get("prefix"), str):
            if not re.match(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\.$", opts["prefix"]):
                problems.append(Problem(*where, "deid_func:pydicom_uuid prefix= must be a valid "
                                        "UID prefix ending in '.'"))
        return
    if entry.action == "JITTER" and not _is_int(value):
        problems.append(Problem(*where, "JITTER needs a whole number of days (e.g. 'JITTER "
                                "StudyDate -30') or var:/func:/deid_func:"))


def _is_int(value: Any) -> bool:
    try:
        int(value)
    except (TypeError, ValueError):
        return False
    return True


def _add_field_problem(fld: str, value: str | None = None) -> str | None:
    from pydicom.datadict import DicomDictionary, keyword_dict  # type: ignore[attr-defined]

    if fld in keyword_dict or _HEX8_RE.match(fld):
        builds = (value or "").startswith(tuple(f"deid_func:{n}" for n in keyed.BUILDS_SEQUENCE))
        if fld in keyword_dict and DicomDictionary[keyword_dict[fld]][0] == "SQ" and not builds:
            return f"ADD cannot create the sequence '{fld}' from text"
        return None
    return (f"ADD needs a DICOM keyword (case-sensitive) or a bare 8-hex-digit tag like "
            f"00100021, not '{fld}' (deid crashes on it)")


def _validate_header_entry(entry: RecipeAction, values_names: frozenset[str],
                           fields_names: frozenset[str], problems: list[Problem]) -> None:
    where = (entry.source, entry.line)
    if entry.action not in HEADER_ACTIONS:
        problems.append(Problem(*where, f"unknown action '{entry.action}'"))
        return
    if entry.action == "ADD":
        msg = _add_field_problem(entry.field, entry.value)
    else:
        msg = selector_problem(entry.field, values_names, fields_names)
    if msg:
        problems.append(Problem(*where, msg))
    if entry.action in ("ADD", "REPLACE", "JITTER") and (entry.value is None
                                                          or not entry.value.strip()):
        problems.append(Problem(*where, f"{entry.action} needs a value"))
        return
    if entry.action == "REMOVE" and entry.value is not None and not entry.value.strip():
        problems.append(Problem(*where, "REMOVE with an empty condition (a trailing '# comment'"
                                "?): deid would silently NOT remove the field; move the "
                                "comment to its own line"))
        return
    if entry.action in ("ADD", "REPLACE", "JITTER", "REMOVE"):
        _validate_value_source(entry, problems)


def _validate_group_entry(entry: RecipeAction, kind: str, problems: list[Problem]) -> None:
    where = (entry.source, entry.line)
    allowed = ("FIELD", "SPLIT") if kind == "values" else ("FIELD",)
    if entry.action not in allowed:
        problems.append(Problem(*where, f"'{entry.action}' in %{kind}: use "
                                f"{' or '.join(allowed)}"))
        return
    msg = selector_problem(entry.field, frozenset(), frozenset(), lists=False)
    if msg:
        problems.append(Problem(*where, msg))
    if entry.action == "SPLIT" and entry.value is not None:
        problems.extend(Problem(*where, m) for m in _split_problems(entry.value))


def _validate(recipe: Recipe) -> list[Problem]:
    """Semantic checks of a (combined) recipe; every problem, with file and line."""
    problems: list[Problem] = []
    values_names = recipe.values_names()
    fields_names = recipe.fields_names()
    for entry in (*recipe.header, *recipe.labels):
        _validate_header_entry(entry, values_names, fields_names, problems)
    for kind, groups in (("values", recipe.values), ("fields", recipe.fields)):
        for _name, entries in groups:
            for entry in entries:
                _validate_group_entry(entry, kind, problems)
    return problems


def _split_problems(value: str) -> list[str]:
    problems = []
    for param in value.split(";"):
        pieces = param.split("=")
        if len(pieces) != 2:
            problems.append("SPLIT parameters are 'by=X;minlength=N' (each exactly one '=')")
            continue
        key, val = pieces[0].strip(), pieces[1].strip()
        if key == "minlength" and not re.fullmatch(r"[+-]?\d+", val):
            problems.append("SPLIT minlength= must be a bare integer (no quotes)")
        elif key == "by" and not val.strip("'").strip('"'):
            problems.append("SPLIT by= must not be empty")
        elif key not in ("by", "minlength"):
            problems.append(f"unknown SPLIT parameter '{key}' (use by= and minlength=)")
    return problems


# ---------------------------------------------------------------------------- dict recipes
def _from_dict(data: Mapping[str, Any], source: str) -> _Parsed:
    out = _Parsed(source)
    fmt = data.get("format")
    if fmt is None:
        out.problem(0, "missing 'format' key (must be 'dicom')")
    elif str(fmt).lower() != "dicom":
        out.problem(0, f"format must be 'dicom', not '{fmt}'")
    else:
        out.format = "dicom"

    def entries(items: Any, what: str) -> list[RecipeAction]:
        result = []
        for n, item in enumerate(items or [], start=1):
            if not isinstance(item, Mapping) or "action" not in item or "field" not in item:
                out.problem(0, f"{what} entry {n} must be a dict with 'action' and 'field'")
                continue
            value = item.get("value")
            result.append(RecipeAction(str(item["action"]), str(item["field"]),
                                       None if value is None else str(value), source, 0))
        return result

    for key in data:
        if key not in ("format", *SECTIONS):
            out.problem(0, f"unknown section key '{key}'")
    for sec in SECTIONS:
        if sec in data:
            out.sections.append(sec)
    out.header = entries(data.get("header"), "header")
    out.labels = entries(data.get("labels"), "labels")
    for key, target in (("values", out.values), ("fields", out.fields)):
        for name, items in (data.get(key) or {}).items():
            target[str(name)] = entries(items, f"{key} {name}")
    for name, labels in (data.get("filter") or {}).items():
        out.filters[str(name)] = [_filter_from_dict(lab) for lab in labels or []]
    return out


def _filter_from_dict(lab: Any) -> FilterLabel:
    if isinstance(lab, FilterLabel):
        return lab
    crits = tuple(
        FilterCriterion(tuple(f.get("action", ())), tuple(f.get("field", ())), f.get("operator"),
                        tuple(f.get("InnerOperators", ())), tuple(f.get("value", ())))
        for f in lab.get("filters", ()))
    coords = tuple((int(m), str(c)) for m, c in lab.get("coordinates", ()))
    return FilterLabel(str(lab.get("name", "")), crits, coords)


def _from_recipe(recipe: Recipe) -> _Parsed:
    out = _Parsed(recipe.sources[0] if recipe.sources else "<recipe>")
    out.format = recipe.format
    out.header = list(recipe.header)
    out.labels = list(recipe.labels)
    out.values = {n: list(a) for n, a in recipe.values}
    out.fields = {n: list(a) for n, a in recipe.fields}
    out.filters = {n: list(a) for n, a in recipe.filters}
    out.sections = list(recipe.sections)
    return out


# ---------------------------------------------------------------------------------- locating
def default_recipe_path() -> Path:
    """Our built-in default recipe ("remove everything but the pixels", ``remove-everything``)."""
    path = builtin_path(BUILTINS[DEFAULT_BASE])
    assert path is not None
    return path


def _locate(item: str | os.PathLike[str]) -> tuple[Path | None, str | None]:
    """Resolve a path, folder or built-in recipe name to a file; (None, why) on failure.

    A path that exists wins over a built-in of the same name (the user's file is what they meant).
    """
    text = os.fspath(item)
    path = Path(text)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.name.startswith("deid") and p.is_file())
        if not found:
            return None, f"folder {text} contains no recipe file (a name starting with 'deid')"
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            return None, (f"folder {text} contains several recipe files ({names}); "
                          "name the file to use")
        return found[0], None
    if path.exists():
        return path, None
    entry = builtin(text)
    if entry is not None:
        found_path = builtin_path(entry)
        if found_path is None:
            return None, (f"'{text}' names a recipe bundled with deid, which is not installed: "
                          "pip install 'deid_batch[deid]'")
        if found_path.exists():
            return found_path, None
    names = ", ".join(BUILTINS)
    return None, f"recipe {text} does not exist (not a file, folder or built-in recipe name: {names})"


def _load_one(item: Any) -> _Parsed:
    if isinstance(item, Recipe):
        return _from_recipe(item)
    if isinstance(item, Mapping):
        return _from_dict(item, "<dict>")
    if not isinstance(item, (str, os.PathLike)):
        out = _Parsed("<recipe>")
        out.problem(0, f"cannot load a recipe from a {type(item).__name__}")
        return out
    path, why = _locate(item)
    if path is None:
        out = _Parsed(os.fspath(item))
        out.problem(0, why or "cannot load")
        return out
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except (OSError, UnicodeDecodeError) as exc:
        out = _Parsed(source)
        out.problem(0, f"cannot read the recipe ({type(exc).__name__})")
        return out
    return _parse_text(text, source)


def _combine(parts: list[_Parsed]) -> tuple[Recipe, list[Problem]]:
    """deid ``load_combined_deid``: the first supplies format/values/fields/labels; headers append;
    a later filter group replaces a same-named one (deid's ``get("name")`` quirk)."""
    problems = [p for part in parts for p in part.problems]
    first = parts[0]
    header = [a for part in parts for a in part.header]
    filters = {k: list(v) for k, v in first.filters.items()}
    sections = list(first.sections)
    for part in parts[1:]:
        for name, group in part.filters.items():
            filters[name] = filters.get("name", []) + group if "name" in filters else list(group)
        if part.header and "header" not in sections:
            sections.append("header")
        if part.filters and "filter" not in sections:
            sections.append("filter")
        for kind in ("values", "fields", "labels"):
            if getattr(part, kind):
                problems.append(Problem(part.source, 0, f"%{kind} of a recipe other than the first "
                                        "are ignored when combining (deid drops them); move them "
                                        "to the first recipe"))
    recipe = Recipe(
        format=first.format or "dicom",
        header=tuple(header),
        values=tuple((n, tuple(a)) for n, a in first.values.items()),
        fields=tuple((n, tuple(a)) for n, a in first.fields.items()),
        filters=tuple((n, tuple(labs)) for n, labs in filters.items()),
        labels=tuple(first.labels),
        sources=tuple(part.source for part in parts),
        sections=tuple(sections),
    )
    return recipe, problems


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


#: ``base=`` not given: :func:`load_recipe` loads the recipe as it is and leaves the base to the
#: runner (``replace_identifiers``, ``deidentify_dataset``, the CLI), which puts its default under it.
UNSET: Any = _Unset()


def _is_complete_builtin(item: Any) -> bool:
    if isinstance(item, Recipe):
        if item.resolved or not item.sources:
            return False
        first = os.path.realpath(item.sources[0])
        return any(entry.complete and (path := builtin_path(entry)) is not None and os.path.realpath(path) == first
                   for entry in BUILTINS.values())
    if not isinstance(item, (str, os.PathLike)):
        return False
    text = os.fspath(item)
    entry = builtin(text)
    return entry is not None and entry.complete and not Path(text).exists()


def _label(item: Any) -> str:
    if isinstance(item, Recipe):
        return " + ".join(item.stack) if item.stack else ", ".join(item.sources) or "<recipe>"
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    return "<dict>"


def resolve_base(recipe: Any, base: Any) -> tuple[list[Any], Any, tuple[str, ...]]:
    """The recipe items and the base to load under them, with the stack's labels.

    ``base`` is a built-in name (default :data:`DEFAULT_BASE`), a recipe path, ``"none"``/``None``
    for no base, or ``True`` for deid's ``DeidRecipe(base=True)`` (deid's ``dicom`` appended).
    When the first recipe is a complete built-in (``dicom``, ``remove-everything``, ...), it is
    the base and nothing is put under it.
    """
    items: list[Any]
    if recipe is None:
        items = []
    elif isinstance(recipe, (list, tuple)):
        items = list(recipe)
    else:
        items = [recipe]
    if base is True:
        items = items + ["dicom"]
        return items, None, tuple(_label(i) for i in items)
    if base is False or base is None or (isinstance(base, str) and base.lower() == "none"):
        return items, None, tuple(_label(i) for i in items)
    if items and _is_complete_builtin(items[0]):
        return items, None, tuple(_label(i) for i in items)
    return items, base, (f"{_label(base)} (base)", *(_label(i) for i in items))


def load_recipe(recipe: Any = None, *, base: Any = UNSET) -> Recipe:
    """Load, combine and validate a recipe.

    Parameters
    ----------
    recipe : None, Recipe, dict, str, os.PathLike, or a list of those
        ``None``: deid_batch's built-in default (``remove-everything``). A :class:`Recipe` is
        returned as is (unless combined or given a base). A dict in deid's shape. A file path. A
        folder: the one file in it whose name starts with ``deid`` (several or none is an error;
        deid would pick by file-system order or fall back to its default). A built-in name:
        ``remove-everything``, or a recipe bundled with an installed ``deid``: ``dicom``,
        ``dicom.ultrasound``, ``dicom.xray.chest`` (also spelled ``deid.dicom``...). A list is
        combined like deid's ``load_combined_deid``.
    base : str, None or bool, optional
        Not given: the recipe is loaded as it is (deid's ``DeidRecipe(recipe, base=False)``) and
        a runner puts its own base under it. A name or path: that recipe is layered *under* the
        given ones (its header actions run first, so a later ``ADD`` or a ``REPLACE`` shows
        through a ``REMOVE ALL`` base), unless the first recipe is a complete built-in itself.
        ``"none"`` or ``None``: no base. ``True``: deid's bundled ``dicom`` recipe appended, like
        ``DeidRecipe(base=True)``.

    Returns
    -------
    Recipe

    Raises
    ------
    RecipeError
        Listing every problem found, with file and line.
    """
    if base is UNSET:
        if isinstance(recipe, Recipe):
            return recipe
        if recipe is None:
            recipe = DEFAULT_BASE
        items: list[Any] = list(recipe) if isinstance(recipe, (list, tuple)) else [recipe]
        base_item, stack, resolved = None, tuple(_label(i) for i in items), False
    else:
        if isinstance(recipe, Recipe) and recipe.resolved:
            return recipe
        items, base_item, stack = resolve_base(recipe, base)
        resolved = True
        if not items and base_item is None:
            raise RecipeError("no recipe to apply: give a recipe, or a base other than 'none'")
    if not items and base_item is None:
        raise RecipeError("an empty list of recipes was given")
    parts = [_load_one(item) for item in items]
    _refine(items, parts)
    base_part = _load_one(base_item) if base_item is not None else None
    if parts:
        combined, problems = _combine(parts)
        if base_part is not None:
            combined, more = _layer(base_part, combined)
            problems = more + problems
    else:
        assert base_part is not None
        combined, problems = _combine([base_part])
    combined = dataclasses.replace(combined, stack=stack, resolved=resolved)
    if not problems:
        problems = _validate(combined)
    else:
        problems.extend(_validate(combined))
    if problems:
        raise RecipeError(_dedupe(problems))
    logger.debug("loaded recipe from %s (%d header actions)", ", ".join(combined.sources),
                 len(combined.header))
    return combined


def _refine(items: list[Any], parts: list[_Parsed]) -> None:
    """Refining built-ins (the PS3.15 options): each one's header lines replace, in the earlier
    recipes of its family (the profile it refines and the options before it), the lines of the
    fields it covers (its non-ADD lines' fields). A refining built-in without its profile
    before it is a problem."""
    families: dict[str, list[int]] = {}
    for i, (item, part) in enumerate(zip(items, parts)):
        if not isinstance(item, (str, os.PathLike)) or Path(os.fspath(item)).exists():
            continue
        entry = builtin(os.fspath(item))
        if entry is None:
            continue
        if not entry.refines:
            families[entry.name] = [i]
            continue
        family = families.get(entry.refines)
        if family is None:
            part.problem(0, f"{entry.name} refines {entry.refines}: give --recipe {entry.refines} "
                         "before it (e.g. --recipe ps3.15-basic --recipe " + entry.name + ")")
            continue
        covered = {a.field for a in part.header if a.action != "ADD"}
        for j in family:
            parts[j].header = [a for a in parts[j].header
                               if a.action == "ADD" or a.field not in covered]
        family.append(i)


def _layer(base: _Parsed, top: Recipe) -> tuple[Recipe, list[Problem]]:
    """``top`` on ``base``: the base's header actions first; sections of ``top`` win by name."""
    values = dict(base.values)
    values.update({n: list(a) for n, a in top.values})
    fields = dict(base.fields)
    fields.update({n: list(a) for n, a in top.fields})
    filters = dict(base.filters)
    filters.update({n: list(a) for n, a in top.filters})
    sections = list(dict.fromkeys([*base.sections, *top.sections]))
    recipe = Recipe(
        format=top.format,
        header=tuple(base.header) + top.header,
        values=tuple((n, tuple(a)) for n, a in values.items()),
        fields=tuple((n, tuple(a)) for n, a in fields.items()),
        filters=tuple((n, tuple(labs)) for n, labs in filters.items()),
        labels=tuple(base.labels) + top.labels,
        sources=(base.source, *top.sources),
        sections=tuple(sections),
    )
    return recipe, list(base.problems)


def _dedupe(problems: Iterable[Problem]) -> list[Problem]:
    seen: dict[Problem, None] = {}
    for p in problems:
        seen.setdefault(p, None)
    return sorted(seen, key=lambda p: (p.source, p.line))


def load_deid(path: Any = None) -> dict[str, Any]:
    """deid-compatible name: ``load_recipe(path).as_dict()``."""
    return load_recipe(path).as_dict()

"""Built-in recipes by name: ours (``remove-everything``) and deid's bundled ``dicom`` family.

A built-in is *complete* when it is a whole de-identification profile on its own: given first in a
recipe stack, it is the base and nothing is layered under it (see
:func:`deid_batch.recipe.parse.load_recipe`). ``deid-batch recipes`` lists them.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BUILTINS", "Builtin", "DEFAULT_BASE", "builtin", "builtin_path"]

_DATA = Path(__file__).parent.parent / "data"

#: The base under a user's recipe when no other is asked for (``--base``, ``base=``).
DEFAULT_BASE = "remove-everything"


@dataclass(frozen=True)
class Builtin:
    """One built-in recipe: its name, where its text lives, whether it is a complete profile."""

    name: str
    description: str
    complete: bool = True
    #: file name under ``deid_batch/data`` (ours) or under deid's ``deid/data`` (``deid.NAME``)
    file: str = ""
    bundled_with_deid: bool = False
    #: the complete built-in this one refines (a PS3.15 option refines ``ps3.15-basic``): given
    #: after it, its header lines replace that profile's lines for the same fields
    refines: str = ""


_PS315 = "ps3.15-basic"
_PS315_OPTIONS = (
    ("ps3.15-retain-uids", "Retain UIDs (113110): every UID kept"),
    ("ps3.15-retain-device-identity", "Retain Device Identity (113109): device names, serial "
     "numbers, AE titles kept or cleaned"),
    ("ps3.15-retain-institution-identity", "Retain Institution Identity (113112): institution "
     "name, address, department kept"),
    ("ps3.15-retain-patient-characteristics", "Retain Patient Characteristics (113108): sex, age, "
     "size, weight, ethnic group... kept"),
    ("ps3.15-retain-modified-dates", "Retain Longitudinal Temporal Information Modified Dates "
     "(113107): dates shifted by a keyed per-patient offset"),
    ("ps3.15-clean-descriptors", "Clean Descriptors (113105): descriptions kept, this file's "
     "identifying values removed from them"),
    ("ps3.15-retain-safe-private", "Retain Safe Private (113111): the safe private attributes of "
     "Table E.3.10-1 kept, by creator"),
)


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin("remove-everything", "every element removed but SOPClassUID and the Image Pixel module; "
                "study/series/instance UIDs replaced by keyed UIDs (the default base)", file="deid.default"),
        Builtin("dicom", "deid's bundled default recipe (deid.dicom): its header actions and pixel filters",
                bundled_with_deid=True),
        Builtin("dicom.ultrasound", "deid's bundled ultrasound recipe: pixel filters only (no header actions, "
                "so it gets the base under it)", complete=False, bundled_with_deid=True),
        Builtin("dicom.xray.chest", "deid's bundled chest x-ray recipe: pixel filters only (no header actions, "
                "so it gets the base under it)", complete=False, bundled_with_deid=True),
        Builtin(_PS315, "DICOM PS3.15 Basic Application Level Confidentiality Profile (113100), "
                "Table E.1-1 at every depth, keyed UIDs and patient pseudonyms", file=f"deid.{_PS315}"),
        *(Builtin(name, f"PS3.15 option, after {_PS315}: {text}", complete=False,
                  file=f"deid.{name}", refines=_PS315) for name, text in _PS315_OPTIONS),
    )
}


def builtin(name: str) -> Builtin | None:
    """The built-in called ``name`` (deid's ``deid.dicom`` spelling accepted), or None."""
    found = BUILTINS.get(name)
    if found is None and name.startswith("deid."):
        candidate = BUILTINS.get(name[len("deid."):])
        found = candidate if candidate is not None and candidate.bundled_with_deid else None
    return found


def builtin_path(entry: Builtin) -> Path | None:
    """The file holding ``entry``'s text; None when it ships with deid and deid is not installed."""
    if not entry.bundled_with_deid:
        return _DATA / entry.file
    spec = importlib.util.find_spec("deid")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data" / f"deid.{entry.name}"

"""Built-in ``deid_func:`` functions, the JITTER date arithmetic and our ``hmac_uid``.

deid 0.4.13's five built-ins (``jitter``, ``dicom_uuid``, ``suffix_uuid``, ``basic_uuid``,
``pydicom_uuid``) behave as in deid, except that jittering never reads today's date: a value
that deid would complete from the current date (TM values, bare numbers, ``2023``...) or cannot
parse is left unchanged and reported (deviation 3). ``hmac_uid`` is our extension: a keyed,
deterministic UID remapping.

Every function takes keyword arguments ``dicom``, ``value``, ``field``, ``item`` and ``extras``
(the ``k=v`` text after the function name), like deid's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import dateutil.parser
from pydicom.multival import MultiValue
from pydicom.uid import generate_uid

from deid_batch.errors import DatasetError
from deid_batch.recipe.keyed import KEYED_FUNCTIONS, keyed_uid_value

__all__ = [
    "BUILTINS",
    "basic_uuid",
    "dicom_uuid",
    "hmac_uid",
    "jitter_element",
    "jitter_func",
    "parse_keyvalues",
    "pydicom_uuid",
    "suffix_uuid",
]

_DEFAULTS = (datetime(2000, 1, 1), datetime(2001, 2, 2))  # differ in year, month and day
_DT_FORMATS = ("%Y%m%d%H%M%S.%f%z", "%Y%m%d%H%M%S.%f")


def parse_keyvalues(extras: str | None) -> dict[str, Any]:
    """deid ``parse_keyvalue_pairs``: ``k=v`` pairs split on single spaces; ``true``/``false``
    become booleans and ``none``/``null`` None."""
    values: dict[str, Any] = {}
    for pair in (extras or "").split(" "):
        if "=" not in pair:
            continue
        key, val = pair.split("=", 1)
        typed: Any = val.strip()
        if typed == "true":
            typed = True
        elif typed == "false":
            typed = False
        elif typed in ("none", "null"):
            typed = None
        values[key.strip()] = typed
    return values


# ------------------------------------------------------------------------------------- jitter
class _TodayDependent(Exception):
    """dateutil completed the value from today's date."""


def _dateutil(text: str) -> datetime:
    """``dateutil.parser.parse`` as deid calls it, but refusing today-dependent results."""
    first: datetime = dateutil.parser.parse(text, default=_DEFAULTS[0])
    second = dateutil.parser.parse(text, default=_DEFAULTS[1])
    if first != second:
        raise _TodayDependent
    return first


def _timestamp(text: str, days: int, fmt: str) -> str:
    """deid ``get_timestamp`` for one value: dateutil, then ``strptime(fmt)``; plus days."""
    try:
        stamp = _dateutil(text)
    except (dateutil.parser.ParserError, OverflowError):
        stamp = datetime.strptime(text, fmt)
    return (stamp + timedelta(days=days)).strftime(fmt)


def _jitter_one(value: Any, vr: str, days: int) -> tuple[str | None, str | None]:
    """Jitter one value; returns (new text, None) or (None, reason it was left unchanged)."""
    text = f"{value}"
    if value in ("", None):
        return None, None
    formats: tuple[str, ...]
    if vr == "DA":
        formats = ("%Y%m%d",)
    elif vr == "DT":
        formats = _DT_FORMATS
    else:
        formats = ("%Y%m%d", *_DT_FORMATS)
    for fmt in formats:
        try:
            return _timestamp(text, days, fmt), None
        except _TodayDependent:
            return None, "the value is not a complete date (deid would fill it from today's date)"
        except Exception:  # noqa: BLE001 - deid tries the next format on any error
            continue
    return None, f"the value cannot be read as a date for VR {vr}"


def jitter_element(element: Any, days: int) -> tuple[Any, list[str]]:
    """Shift a DA/DT (or date-like) element value by ``days`` (deid ``jitter_timestamp``).

    Returns
    -------
    (new value or None, reasons)
        ``None`` when nothing changes; multi-valued elements give a backslash-joined string,
        values that cannot be jittered deterministically stay as they were (one reason each).
    """
    original = element.value
    if not original:
        return None, []
    if element.VR == "SQ":
        return None, ["a sequence cannot be jittered"]
    multi = isinstance(original, (list, tuple, MultiValue))
    values = list(original) if multi else [original]
    out: list[Any] = []
    reasons: list[str] = []
    changed = False
    for val in values:
        new, why = _jitter_one(val, element.VR, days)
        if new is None:
            out.append(val)
            if why:
                reasons.append(why)
        else:
            out.append(new)
            changed = True
    if not changed:
        return None, reasons
    if multi:
        return "\\".join(str(v) for v in out), reasons
    return out[0], reasons


def jitter_days(extras: str | None) -> int:
    """Days for ``deid_func:jitter days=D years=Y`` (D default 1, plus 365*Y)."""
    opts = parse_keyvalues(extras)
    days = int(opts.get("days", 1))
    if "years" in opts:
        days = int(opts["years"]) * 365 + days
    return days


def jitter_func(*, field: Any, extras: str | None = None, **_: Any) -> Any:
    """``deid_func:jitter``: the jittered value (reasons are reported by the engine)."""
    return jitter_element(field.element, jitter_days(extras))[0]


# --------------------------------------------------------------------------------------- uids
def basic_uuid(**_: Any) -> str:
    """``deid_func:basic_uuid``: a random uuid4 string (not deterministic, as in deid)."""
    return str(uuid.uuid4())


def suffix_uuid(*, field: Any, **_: Any) -> str:
    """``deid_func:suffix_uuid``: ``<field name lowercased>-<uuid4>`` (not deterministic)."""
    name = field.name if hasattr(field, "name") else field
    return f"{str(name).lower()}-{uuid.uuid4()}"


def dicom_uuid(*, extras: str | None = None, **_: Any) -> str:
    """``deid_func:dicom_uuid org_root=R``: ``R.<uuid4 int>`` cut to 64 chars (random)."""
    org_root = parse_keyvalues(extras).get("org_root", "anonymous-organization")
    return f"{org_root}.{uuid.uuid4().int}"[0:64]


def pydicom_uuid(*, field: Any, extras: str | None = None, **_: Any) -> str:
    """``deid_func:pydicom_uuid [prefix=P] [stable_remapping=true]``: pydicom ``generate_uid``
    seeded with the original value (deterministic); ``stable_remapping=false`` gives deid's one
    constant UID."""
    opts = parse_keyvalues(extras)
    prefix = opts.get("prefix", "2.25.")
    entropy = [str(field.element.value)] if opts.get("stable_remapping", True) is True else []
    return str(generate_uid(prefix=prefix, entropy_srcs=entropy))


def _hmac_one(key: bytes, value: Any) -> Any:
    return keyed_uid_value(key, value)


def hmac_uid(*, field: Any, uid_key: bytes | None = None, **_: Any) -> Any:
    """``deid_func:hmac_uid``: ``2.25.`` + int(HMAC-SHA256(key, original UID)) cut to 64 chars.

    Deterministic for a given key: the same original UID maps to the same new UID in every
    file, worker and run. Multi-valued elements are mapped value by value; empty values stay.

    Raises
    ------
    DatasetError
        When no key was configured (``EngineOptions.uid_key``).
    """
    if not uid_key:
        raise DatasetError("deid-error", "deid_func:hmac_uid needs a key (EngineOptions.uid_key)")
    original = field.element.value
    if isinstance(original, (list, tuple, MultiValue)):
        return [_hmac_one(uid_key, v) for v in original]
    return _hmac_one(uid_key, original)


#: ``deid_func:`` name -> function
BUILTINS: dict[str, Callable[..., Any]] = {
    "jitter": jitter_func,
    "dicom_uuid": dicom_uuid,
    "suffix_uuid": suffix_uuid,
    "basic_uuid": basic_uuid,
    "pydicom_uuid": pydicom_uuid,
    "hmac_uid": hmac_uid,
    **KEYED_FUNCTIONS,  # the PS3.15 recipes' functions (deid_batch.recipe.keyed)
}

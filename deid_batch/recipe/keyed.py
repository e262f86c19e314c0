"""``deid_func:`` built-ins of the PS3.15 recipes: keyed pseudonyms, dummies, cleaned text and the
de-identification method attributes.

Every keyed value is an HMAC-SHA256 under the run key (``EngineOptions.uid_key``), so it is the
same in every file, worker and run with the same key and cannot be reversed without it:

- ``keyed_uid``: a UI value -> ``2.25.<int(HMAC(key, uid))>`` (the same derivation as
  ``hmac_uid``); DICOM-defined UIDs (``1.2.840.10008.*``) and the values of class, transfer
  syntax and coding scheme attributes are left as they are.
- ``keyed_id`` / ``keyed_name``: PatientID / PatientName pseudonyms from the file's original
  patient (the first value of the ``%values ps315_patient`` list: the original PatientID, else
  the PatientName), so all of a patient's files get the same pseudonyms.
- ``date_offset``: a whole number of days (-1 to -3652) per patient, for ``JITTER``.
- ``clean_descriptor``: the text with every occurrence of this file's own identifying values
  (``%values ps315_identifiers``) removed.
- ``dummy``: a dummy value valid for the element's VR; ``deid_method`` and
  ``deid_method_code``: DeidentificationMethod and DeidentificationMethodCodeSequence with the
  CID 7050 code of ``code=`` appended.

Like every built-in they take ``dicom``, ``value``, ``field``, ``item``, ``extras`` and
``uid_key`` keyword arguments; none of them logs or reports a header value.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from deid_batch.errors import DatasetError

__all__ = ["CID_7050", "DUMMY", "KEYED_FUNCTIONS", "WELL_KNOWN_UID_KEYWORDS", "keyed_uid_value"]

#: PS3.16 CID 7050 De-identification Method: code value -> code meaning (scheme DCM)
CID_7050: dict[str, str] = {
    "113100": "Basic Application Confidentiality Profile",
    "113101": "Clean Pixel Data Option",
    "113102": "Clean Recognizable Visual Features Option",
    "113103": "Clean Graphics Option",
    "113104": "Clean Structured Content Option",
    "113105": "Clean Descriptors Option",
    "113106": "Retain Longitudinal Temporal Information Full Dates Option",
    "113107": "Retain Longitudinal Temporal Information Modified Dates Option",
    "113108": "Retain Patient Characteristics Option",
    "113109": "Retain Device Identity Option",
    "113110": "Retain UIDs Option",
    "113111": "Retain Safe Private Option",
    "113112": "Retain Institution Identity Option",
}
#: dummy values per VR (valid for the VR, carrying no information)
DUMMY: dict[str, Any] = {
    "AE": "ANONYMOUS", "AS": "000Y", "CS": "ANONYMOUS", "DA": "19000101", "DT": "19000101000000",
    "LO": "ANONYMOUS", "LT": "ANONYMOUS", "PN": "ANONYMOUS", "SH": "ANONYMOUS", "ST": "ANONYMOUS",
    "TM": "000000", "UC": "ANONYMOUS", "UR": "ANONYMOUS", "UT": "ANONYMOUS",
    "DS": "0", "IS": "0", "FL": 0.0, "FD": 0.0, "SL": 0, "SS": 0, "UL": 0, "US": 0, "SV": 0, "UV": 0,
}
_BINARY_DUMMY = b"\x00\x00"
#: attributes whose UI values name classes, transfer syntaxes or coding schemes: never keyed
WELL_KNOWN_UID_KEYWORDS = frozenset({
    "SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "AffectedSOPClassUID",
    "RequestedSOPClassUID", "ReferencedSOPClassUIDInFile", "RelatedGeneralSOPClassUID",
    "OriginalSpecializedSOPClassUID", "SOPClassesInStudy", "SOPClassesSupported",
    "PertinentSOPClassesInStudy", "PertinentSOPClassesInSeries", "RTVCommunicationSOPClassUID",
    "ReferencedRelatedGeneralSOPClassUIDInFile", "TransferSyntaxUID",
    "ReferencedTransferSyntaxUIDInFile", "StoredInstanceTransferSyntaxUID",
    "AvailableTransferSyntaxUID", "MACCalculationTransferSyntaxUID",
    "EncryptedContentTransferSyntaxUID", "FlowTransferSyntaxUID", "CodingSchemeUID",
    "ContextUID", "MappingResourceUID", "PrivateInformationCreatorUID",
    "ContextGroupExtensionCreatorUID", "CreatorVersionUID", "ImplementationClassUID",
})
DICOM_ROOT = "1.2.840.10008."
_MAX_OFFSET_DAYS = 3652


def _key(uid_key: bytes | None, name: str) -> bytes:
    if not uid_key:
        raise DatasetError("deid-error", f"deid_func:{name} needs a key (EngineOptions.uid_key)")
    return uid_key


def _digest(key: bytes, domain: str, text: str) -> bytes:
    return hmac.new(key, f"{domain}\0{text}".encode(), hashlib.sha256).digest()


def keyed_uid_value(key: bytes, value: Any) -> Any:
    """``2.25.`` + int(HMAC-SHA256(key, uid)) cut to 64 characters (empty values stay)."""
    text = str(value)
    if not text:
        return value
    digest = hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest, 'big')}"[:64]


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return list(value)
    return [value]


def keyed_uid(*, field: Any, uid_key: bytes | None = None, **_: Any) -> Any:
    """``deid_func:keyed_uid``: keyed UIDs for every value but DICOM-defined and class UIDs."""
    key = _key(uid_key, "keyed_uid")
    element = field.element
    if element.VR != "UI" or element.keyword in WELL_KNOWN_UID_KEYWORDS:
        return element.value
    original = element.value

    def one(uid: Any) -> Any:
        text = str(uid).strip("\0 ")
        return uid if not text or text.startswith(DICOM_ROOT) else keyed_uid_value(key, text)

    if isinstance(original, (list, tuple, MultiValue)):
        return [one(v) for v in original]
    return one(original)


def _patient(item: Any, dicom: Any) -> str:
    """The file's original patient: first value of ``%values ps315_patient``, else PatientID."""
    harvested = item.get("ps315_patient") if isinstance(item, dict) else None
    if harvested:
        return str(harvested[0])
    return str(getattr(dicom, "PatientID", "") or "") if dicom is not None else ""


def keyed_id(*, item: Any = None, dicom: Any = None, uid_key: bytes | None = None, **_: Any) -> str:
    """``deid_func:keyed_id``: ``ID`` + 16 hex digits of HMAC(key, patient)."""
    digest = _digest(_key(uid_key, "keyed_id"), "ps3.15 patient id", _patient(item, dicom))
    return "ID" + digest.hex()[:16].upper()


def keyed_name(*, item: Any = None, dicom: Any = None, uid_key: bytes | None = None, **_: Any) -> str:
    """``deid_func:keyed_name``: ``ANONYMOUS^`` + 12 hex digits of HMAC(key, patient)."""
    digest = _digest(_key(uid_key, "keyed_name"), "ps3.15 patient name", _patient(item, dicom))
    return "ANONYMOUS^" + digest.hex()[:12].upper()


def date_offset(*, item: Any = None, dicom: Any = None, uid_key: bytes | None = None, **_: Any) -> int:
    """``deid_func:date_offset``: days to shift this patient's dates by (-1 .. -3652), for JITTER."""
    digest = _digest(_key(uid_key, "date_offset"), "ps3.15 date offset", _patient(item, dicom))
    return -(1 + int.from_bytes(digest[:8], "big") % _MAX_OFFSET_DAYS)


def dummy(*, field: Any, **_: Any) -> Any:
    """``deid_func:dummy``: a dummy value valid for the element's VR (binary VRs: two zero bytes)."""
    return DUMMY.get(field.element.VR, _BINARY_DUMMY)


_DATE_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})")
_SPLIT_RE = re.compile(r"[\^=,\s]+")


def _tokens(values: Iterable[Any]) -> list[str]:
    """Whole values, their name components and the usual spellings of dates, longest first."""
    found: dict[str, None] = {}
    for value in values:
        text = str(value).strip()
        if len(text) < 2:
            continue
        found.setdefault(text, None)
        for part in _SPLIT_RE.split(text):
            if len(part) >= 2:
                found.setdefault(part, None)
        m = _DATE_RE.match(text)
        if m:
            y, mo, d = m.groups()
            for form in (f"{y}-{mo}-{d}", f"{y}/{mo}/{d}", f"{y}.{mo}.{d}", f"{d}/{mo}/{y}",
                         f"{mo}/{d}/{y}", f"{d}.{mo}.{y}", f"{d}-{mo}-{y}"):
                found.setdefault(form, None)
    return sorted(found, key=len, reverse=True)


def clean_text(text: str, identifiers: Iterable[Any]) -> str:
    """``text`` without any occurrence of the identifying values (case-insensitive; tokens
    shorter than 4 characters only as whole words)."""
    out = text
    for token in _tokens(identifiers):
        pattern = re.escape(token)
        if len(token) < 4:
            pattern = rf"(?<![A-Za-z0-9]){pattern}(?![A-Za-z0-9])"
        out = re.sub(pattern, " ", out, flags=re.IGNORECASE)
    if out == text:
        return text
    return re.sub(r"[ \t]{2,}", " ", out).strip(" \t")


def clean_descriptor(*, field: Any, item: Any = None, **_: Any) -> Any:
    """``deid_func:clean_descriptor``: the value with this file's identifying values removed."""
    identifiers = (item.get("ps315_identifiers") if isinstance(item, dict) else None) or []
    original = field.element.value
    if not identifiers or original in (None, ""):
        return original
    if isinstance(original, (list, tuple, MultiValue)):
        return [clean_text(str(v), identifiers) for v in original]
    return clean_text(str(original), identifiers)


def _code(extras: str | None, name: str) -> str:
    from deid_batch.recipe.functions import parse_keyvalues

    code = str(parse_keyvalues(extras).get("code", ""))
    if code not in CID_7050:
        raise DatasetError("deid-error", f"deid_func:{name} needs code= one of the CID 7050 codes")
    return code


def deid_method(*, dicom: Any = None, extras: str | None = None, **_: Any) -> Any:
    """``deid_func:deid_method code=C``: DeidentificationMethod with C's meaning appended."""
    meaning = CID_7050[_code(extras, "deid_method")]
    current = [str(v) for v in _values(dicom.get("DeidentificationMethod") if dicom is not None
                                       else None) if str(v)]
    if meaning not in current:
        current.append(meaning)
    return current[0] if len(current) == 1 else current


def deid_method_code(*, dicom: Any = None, extras: str | None = None, **_: Any) -> Sequence:
    """``deid_func:deid_method_code code=C``: DeidentificationMethodCodeSequence + a (C, DCM) item."""
    code = _code(extras, "deid_method_code")
    current = dicom.get("DeidentificationMethodCodeSequence") if dicom is not None else None
    items = [i for i in (current or []) if isinstance(i, Dataset)]
    if not any(getattr(i, "CodeValue", None) == code and
               getattr(i, "CodingSchemeDesignator", None) == "DCM" for i in items):
        new = Dataset()
        new.CodeValue = code
        new.CodingSchemeDesignator = "DCM"
        new.CodeMeaning = CID_7050[code]
        items.append(new)
    return Sequence(items)


#: ``deid_func:`` name -> function (merged into :data:`deid_batch.recipe.functions.BUILTINS`)
KEYED_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "keyed_uid": keyed_uid,
    "keyed_id": keyed_id,
    "keyed_name": keyed_name,
    "date_offset": date_offset,
    "dummy": dummy,
    "clean_descriptor": clean_descriptor,
    "deid_method": deid_method,
    "deid_method_code": deid_method_code,
}
#: functions that read an existing field (cannot serve ADD)
NEEDS_FIELD = ("keyed_uid", "dummy", "clean_descriptor")
#: functions that build a sequence (allowed for ADD of a sequence keyword)
BUILDS_SEQUENCE = ("deid_method_code",)

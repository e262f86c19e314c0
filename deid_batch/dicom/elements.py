"""Element bytes built directly: what pydicom's ``write_data_element`` writes (little endian,
explicit or implicit VR) for the elements the direct path adds or changes, without a ``DicomBytesIO`` where
the value is one ASCII string, and the output's pieces joined for few writes.

Every function here gives exactly pydicom's bytes or defers to pydicom's writer (``encode``) or to
the caller (``None`` / :class:`Unencodable`); ``tests/test_byte_writer.py`` checks them against
pydicom over every text VR and character set.
"""

from __future__ import annotations

import struct
from typing import Any

from pydicom.charset import convert_encodings, custom_encoders, encode_string, need_tail_escape_sequence_encodings
from pydicom.dataelem import DataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import UID

from deid_batch.dicom.rewrite import _PRINTABLE, _Out

__all__ = ["LARGE", "Unencodable", "ascii_encodings", "coalesce", "encode", "encode_str",
           "group_length", "long_element", "pydicom_bytes", "short_element", "uid_element"]


class Unencodable(Exception):
    """A value these builders do not write as pydicom would (the caller takes pydicom's path)."""


#: pieces at least this long are written as they are (views of the input: pixel data); the
#: ones between them are joined, so a file is written in a few system calls and copied once
LARGE = 1 << 16


def coalesce(chunks: list[bytes | memoryview]) -> list[bytes | memoryview]:
    out: list[bytes | memoryview] = []
    small: list[bytes | memoryview] = []
    for chunk in chunks:
        if len(chunk) >= LARGE:
            if small:
                out.append(b"".join(small))
                small = []
            out.append(chunk)
        else:
            small.append(chunk)
    if small:
        out.append(b"".join(small))
    return out


_UL_HEADER = struct.Struct("<HH2sHL")
_SHORT = struct.Struct("<HH2sH")
_LONG = struct.Struct("<HH2sHL")
_IMPLICIT_HEADER = struct.Struct("<HHL")


def short_element(tag: int, vr: bytes, value: bytes) -> bytes:
    """An element of a VR with a 2-byte length (the value already padded to even length)."""
    return _SHORT.pack(tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def long_element(tag: int, vr: bytes, value: bytes) -> bytes:
    """An element of a VR with a 4-byte length (OB, UT, ...; the value already padded)."""
    return _LONG.pack(tag >> 16, tag & 0xFFFF, vr, 0, len(value)) + value


def group_length(group: int, body: bytes) -> bytes:
    """``body`` behind its group length element (gggg,0000) UL."""
    return _UL_HEADER.pack(group, 0, b"UL", 4, len(body)) + body


def uid_element(tag: int, text: str) -> bytes:
    """A UI element as pydicom writes a str UID (NUL-padded); :class:`Unencodable` if not printable."""
    value = text.encode("ascii")  # a UID pydicom writes as it is, NUL-padded to even length
    if not value or value.translate(None, _PRINTABLE) or len(value) > 0xFFFE:
        raise Unencodable
    return short_element(tag, b"UI", value + b"\0" * (len(value) % 2))


#: VR -> padding of the text VRs pydicom writes as the str it holds (write_string / write_text)
_STRING_PADS = {vr: b" " for vr in ("AE", "AS", "CS", "DA", "DT", "TM", "UR")} | {"UI": b"\0"}
_TEXT_PADS = {vr: b" " for vr in ("LO", "LT", "SH", "ST", "UC", "UT")}
_LONG_TEXT_VRS = frozenset({"UC", "UR", "UT"})
_ALL_ASCII = bytes(range(0x80))
#: str(encodings) -> whether pydicom's encode_string gives an ASCII str's ASCII bytes (bounded)
_ASCII_ENCODINGS: dict[str, bool] = {}


def ascii_encodings(encodings: Any) -> bool:
    key = str(encodings)
    found = _ASCII_ENCODINGS.get(key)
    if found is None:
        try:
            python = convert_encodings(encodings)
            text = _ALL_ASCII.decode("ascii")
            found = python[0] not in custom_encoders and \
                python[0] not in need_tail_escape_sequence_encodings and \
                text.encode(python[0]) == _ALL_ASCII and encode_string(text, python) == _ALL_ASCII
        except Exception:  # noqa: BLE001 - an unknown or odd character set: pydicom's writer decides
            found = False
        if len(_ASCII_ENCODINGS) < 256:
            _ASCII_ENCODINGS[key] = found
    return found


def encode_str(element: DataElement, encodings: Any, implicit: bool = False) -> bytes | None:
    """``write_data_element``'s bytes (little endian, explicit or implicit VR) of an element whose
    value is one ASCII str of a text VR, built directly; None: anything else (pydicom's writer)."""
    value, vr = element.value, element.VR
    if type(value) not in (str, UID) or not value.isascii():
        return None
    pad = _STRING_PADS.get(vr)
    if pad is None:
        pad = _TEXT_PADS.get(vr)
        if pad is None or not ascii_encodings(encodings):
            return None
    data: bytes = value.encode("ascii")
    if len(data) % 2:
        data += pad
    tag = int(element.tag)
    if len(data) > 0xFFFF and vr not in _LONG_TEXT_VRS:
        return None  # explicit VR: pydicom writes it as UN, with its warning (implicit: its writer)
    if implicit:
        header: bytes = _IMPLICIT_HEADER.pack(tag >> 16, tag & 0xFFFF, len(data))
    elif vr in _LONG_TEXT_VRS:
        header = _LONG.pack(tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(data))
    else:
        header = _SHORT.pack(tag >> 16, tag & 0xFFFF, vr.encode(), len(data))
    return header + data


def pydicom_bytes(element: DataElement, encodings: Any = None, implicit: bool = False) -> bytes:
    """pydicom's ``write_data_element`` bytes of ``element`` (little endian; explicit VR unless
    ``implicit``)."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    write_data_element(fp, element, encodings)
    return fp.getvalue()


def encode(out: _Out, element: DataElement, encodings: Any, implicit: bool = False) -> None:
    """Put ``element``'s bytes on ``out``: built directly where :func:`encode_str` can, else pydicom's."""
    direct = encode_str(element, encodings, implicit)
    out.put(direct if direct is not None else pydicom_bytes(element, encodings, implicit))

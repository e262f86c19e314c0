"""Header values straight from the bytes, as pydicom decodes them (the raw scan path).

Takes the bytes of a Part 10 file (:func:`read_header` reads only the first 64 KiB when the
header fits in them) and returns its flattened header: one ``(path, tag, vr, value)`` row per
element, in the order and text form :mod:`deid_batch.stages.scan` gives from a pydicom read, for
the data set (elements before the pixel data, as ``stop_before_pixels``), its sequence items
(paths such as ``RequestAttributesSequence[0].AccessionNumber``) and then the file meta.

How: the elements are walked with :mod:`deid_batch.dicom.raw`; a value is decoded only when its
row is written, and cheaply where the bytes prove the result: printable ASCII text without the
padding pydicom's per-VR rules strip, binary numbers, bulk data. Anything else (other character
sets, AT, SV/UV, text with inner padding) is converted by pydicom's own
``convert_raw_data_element`` with the character set of its level (SpecificCharacterSet, inherited
into sequence items, overridden by an item's own), so the text is pydicom's.

:func:`flatten_file` raises :class:`~deid_batch.dicom.raw.Unsupported` for every file it cannot
prove it reads exactly as pydicom does; the caller then takes the pydicom path. Refused: no
preamble or file meta, a transfer syntax other than implicit / explicit VR little endian (big
endian, deflated, encapsulated), a data set encoded otherwise than its transfer syntax says, UN
elements (pydicom may give them the dictionary VR), ambiguous VRs in implicit VR (pydicom picks
one from other elements), undefined lengths on anything but a sequence, DICOMDIRs, and every file
:func:`deid_batch.dicom.reading.read_dataset` would refuse or report (truncated values, meta or
pixel data, a data set of only SpecificCharacterSet, ...).

Pure functions; no state between calls.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, MutableSequence
from typing import Any, NamedTuple, Union

from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR, keyword_for_tag, private_dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.tag import BaseTag
from pydicom.uid import UID, PrivateTransferSyntaxes

from deid_batch.dicom import raw
from deid_batch.dicom.raw import RawRecord, Unsupported

__all__ = ["BINARY_VRS", "NEEDS_PYDICOM", "NUMBER_FORMATS", "TEXT_VRS", "Rows", "binary_text",
           "element_text", "flatten_file", "read_header", "tag_info", "text_of", "number_text"]

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM",
                      "UC", "UI", "UR", "UT"})
NUMBER_FORMATS = {"US": "H", "UL": "I", "SS": "h", "SL": "i", "FL": "f", "FD": "d"}
#: returned by the fast decoders when pydicom's conversion must decide
NEEDS_PYDICOM: Any = object()

_CHARSET = 0x00080005
_NUMBER_TEXT_VRS = frozenset({"DS", "IS"})
_TRANSFER_SYNTAX, _SOP_CLASS, _META_LENGTH = 0x00020010, 0x00020002, 0x00020000
_DIRECTORY_RECORDS = 0x00041220
_IMPLICIT = b"1.2.840.10008.1.2\x00"
_EXPLICIT = b"1.2.840.10008.1.2.1\x00"
_DICOMDIR = b"1.2.840.10008.1.3.10"
_CHUNK = 1 << 16
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
                       b"UT", b"UV"})
_U16, _U32, _TAG_LEN = struct.Struct("<H"), struct.Struct("<L"), struct.Struct("<HHL")
_ITEM, _SEQ_END = 0xFFFEE000, 0xFFFEE0DD
_STRUCTS = {(vr, little): struct.Struct(("<" if little else ">") + code)
            for vr, code in NUMBER_FORMATS.items() for little in (True, False)}

#: ``(path, tag, vr, value)`` lists the rows are appended to
Rows = tuple[list[str], list[str], list[str], list[str | None]]
Encoding = Union[str, MutableSequence[str]]  # noqa: UP007 - a runtime alias

_NAMES: dict[int, tuple[str, str]] = {}  # tag -> (keyword, "(GGGG,EEEE)"): bounded by the dictionary


def tag_info(tag: int) -> tuple[str, str]:
    """``(keyword, "(GGGG,EEEE)")`` of a tag; no keyword for private (odd) groups."""
    found = _NAMES.get(tag)
    if found is None:
        tagstr = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        keyword = "" if (tag >> 16) & 1 else (keyword_for_tag(tag) or "")
        found = (keyword, tagstr)
        if len(_NAMES) < 100_000:
            _NAMES[tag] = found
    return found


def element_text(elem: DataElement) -> str | None:
    """Text form of a converted element's value; ``None`` for binary data that is not text."""
    value = elem.value
    if value is None:
        return None
    if elem.VR in BINARY_VRS or elem.VR == "UN" or isinstance(value, (bytes, bytearray)):
        if not isinstance(value, (bytes, bytearray)):
            return None
        return binary_text(bytes(value))
    if elem.VM > 1 or isinstance(value, (list, tuple)):
        return "\\".join(str(v) for v in value)
    return str(value)


def binary_text(value: bytes) -> str | None:
    """Bulk data shown as text when it is printable ASCII (padding stripped), else ``None``."""
    stripped = value.rstrip(b"\x00 ")
    try:
        text = stripped.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() and text else None


def text_of(value: bytes) -> str:
    """Text of a raw text value that is plain printable ASCII with only trailing padding;
    :data:`NEEDS_PYDICOM` when pydicom's character set and per-VR rules must decide."""
    if not value:
        return ""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return NEEDS_PYDICOM  # type: ignore[no-any-return]
    text = text.rstrip("\x00 ")
    if not text.isprintable() or text[:1].isspace() or " \\" in text or "\\ " in text:
        return NEEDS_PYDICOM  # type: ignore[no-any-return]  # leading or inner padding
    return text


def number_text(value: bytes, vr: str, little: bool = True) -> str:
    """Text of a raw binary number value, as ``str()`` of pydicom's values gives it."""
    unpack = _STRUCTS[vr, little]
    size = unpack.size
    if not value or len(value) % size:
        return NEEDS_PYDICOM  # type: ignore[no-any-return]
    if len(value) == size:
        return str(unpack.unpack(value)[0])
    return "\\".join(str(n) for (n,) in unpack.iter_unpack(value))


def read_header(path: str, data: bytes | None) -> tuple[bytes, int]:
    """``(bytes, file size)``: the first 64 KiB of ``path`` (enough for most headers), or ``data``."""
    if data is not None:
        return data, len(data)
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        return f.read(min(size, _CHUNK)), size


class _Level(NamedTuple):
    """What decoding one data set (the top level or an item) needs."""

    data: bytes
    implicit: bool
    encoding: Callable[[], Encoding]


def flatten_file(path: str, data: bytes, size: int, rows: Rows, skip: frozenset[str],
                 expand_sequences: bool, rollback: Callable[[], None]) -> None:
    """Append the rows of the file whose first ``len(data)`` of ``size`` bytes are ``data``.

    Reads the whole of ``path`` itself (after ``rollback()``) when the header does not end within
    ``data``. Raises :class:`Unsupported` (rows may then hold part of the file: roll back).
    """
    try:
        _flatten(path, data, size, rows, skip, expand_sequences)
    except Unsupported:
        if len(data) >= size:
            raise
        rollback()
        with open(path, "rb", buffering=0) as f:
            data = f.read()
        if len(data) != size:
            raise Unsupported("the file changed while it was read") from None
        _flatten(path, data, size, rows, skip, expand_sequences)


def _flatten(path: str, data: bytes, size: int, rows: Rows, skip: frozenset[str], expand: bool) -> None:
    meta, start = raw.walk_file(data)
    by_tag = {r.tag: r for r in meta}
    implicit = _transfer_syntax(data, by_tag, size)
    if start + 6 <= len(data):
        b0, b1 = data[start + 4], data[start + 5]
        if (not (0x40 < b0 < 0x5B and 0x40 < b1 < 0x5B)) != implicit:
            raise Unsupported("the data set is not encoded as its transfer syntax says")
    records, pixel = raw.walk_header(data, start, len(data), implicit=implicit)
    if pixel is None:
        if len(data) < size:
            raise Unsupported("the header does not end within the bytes read")
    else:
        _check_pixels(path, data, pixel, size, implicit)
    if not records or all(r.tag == _CHARSET or r.tag & 0xFFFF == 0 for r in records):
        raise Unsupported("no data set, or only its character set")
    if any(r.tag == _DIRECTORY_RECORDS for r in records):
        raise Unsupported("a DICOMDIR")
    _walk(records, _Level(data, implicit, _encodings(data, records, lambda: default_encoding)),
          "", rows, skip, expand)
    _walk(meta, _Level(data, False, lambda: default_encoding), "", rows, skip, expand)


def _value(data: bytes, record: RawRecord) -> bytes:
    return data[record.value_start:record.value_start + record.length]


def _transfer_syntax(data: bytes, meta: dict[int, RawRecord], size: int) -> bool:
    """True for implicit VR little endian, False for explicit VR little endian (native or
    encapsulated pixel data, as pydicom reads every syntax it does not know otherwise);
    Unsupported for anything else."""
    ts = meta.get(_TRANSFER_SYNTAX)
    if ts is None:
        raise Unsupported("no transfer syntax: pydicom guesses the encoding")
    syntax = _value(data, ts)
    if syntax not in (_IMPLICIT, _EXPLICIT):
        text = syntax[:-1] if syntax.endswith(b"\x00") and not len(syntax) % 2 else syntax
        try:
            uid = UID(text.decode("ascii"))
        except UnicodeDecodeError:
            raise Unsupported("a transfer syntax that is not ASCII") from None
        if (not uid.is_valid or not uid.is_transfer_syntax or uid.is_implicit_VR or not uid.is_little_endian
                or uid.is_deflated or uid in PrivateTransferSyntaxes):
            raise Unsupported("a transfer syntax the raw walker does not read")
    sop = meta.get(_SOP_CLASS)
    if sop is not None and _value(data, sop).rstrip(b"\x00 ") == _DICOMDIR:
        raise Unsupported("a DICOMDIR")
    length = meta.get(_META_LENGTH)
    if length is not None and length.length == 4:
        (n,) = _U32.unpack(_value(data, length))
        if 132 + 12 + n > size:
            raise Unsupported("the file meta claims more bytes than the file has")
    return syntax == _IMPLICIT


def _check_pixels(path: str, data: bytes, pos: int, size: int, implicit: bool) -> None:
    """Pixel data that fits in the file (as reading.py checks it: native by its length,
    encapsulated by its item headers, read from the file); else Unsupported."""
    if pos + 8 > len(data):
        raise Unsupported("the pixel data header is not within the bytes read")
    if implicit:
        (length,), start = _U32.unpack_from(data, pos + 4), pos + 8
    else:
        vr = data[pos + 4:pos + 6]
        if not (vr.isalpha() and vr.isupper()):
            raise Unsupported("pixel data in another encoding")
        if vr in _LONG_VRS:
            if pos + 12 > len(data):
                raise Unsupported("the pixel data header is not within the bytes read")
            (length,), start = _U32.unpack_from(data, pos + 8), pos + 12
        else:
            (length,), start = _U16.unpack_from(data, pos + 6), pos + 8
    if length != raw.UNDEFINED:
        if start + length > size:
            raise Unsupported("truncated pixel data")
        return
    if len(data) >= size:
        _fragments(lambda at: data[at:at + 8], start, size)
        return
    with open(path, "rb", buffering=0) as f:
        def header(at: int) -> bytes:
            f.seek(at)
            return f.read(8)
        _fragments(header, start, size)


def _fragments(header: Callable[[int], bytes], pos: int, size: int) -> None:
    """Item headers of encapsulated pixel data up to its delimiter, all within the file."""
    while True:
        item = header(pos)
        if len(item) < 8:
            raise Unsupported("the file ends inside encapsulated pixel data")
        group, elem, length = _TAG_LEN.unpack(item)
        tag = group << 16 | elem
        if tag == _SEQ_END:
            return
        if tag != _ITEM or length == raw.UNDEFINED:
            raise Unsupported("malformed encapsulated pixel data")
        pos += 8 + length
        if pos > size:
            raise Unsupported("the file ends inside encapsulated pixel data")


def _encodings(data: bytes, records: list[RawRecord], parent: Callable[[], Encoding]
               ) -> Callable[[], Encoding]:
    """The level's character set, decided on first use: its own SpecificCharacterSet or the parent's."""
    charset = next((r for r in records if r.tag == _CHARSET), None)
    if charset is None:
        return parent
    memo: list[Encoding] = []

    def encoding() -> Encoding:
        if not memo:
            elem = convert_raw_data_element(_raw_element(data, charset, "CS", False))
            memo.append(convert_encodings(elem.value))
        return memo[0]

    return encoding


def _raw_element(data: bytes, record: RawRecord, vr: str, implicit: bool) -> RawDataElement:
    return RawDataElement(BaseTag(record.tag), None if implicit else vr, record.length,
                          _value(data, record), record.value_start, implicit, True, True)


_VRS: dict[bytes, str] = {}


def _walk(records: list[RawRecord], level: _Level, prefix: str, rows: Rows, skip: frozenset[str],
          expand: bool) -> None:
    path_, tag_, vr_, value_ = rows
    data = level.data
    for record in records:
        tag = record.tag
        keyword, tagstr = tag_info(tag)
        if keyword in skip or tagstr in skip:
            continue
        vr = _vr_of(record, keyword, records, level)
        path = prefix + (keyword or tagstr)
        if vr == "SQ":
            path_.append(path)
            tag_.append(tagstr)
            vr_.append("SQ")
            value_.append(None)
            if expand:
                _items(record, level, path, rows, skip)
            continue
        if record.length == raw.UNDEFINED:
            raise Unsupported("an undefined length on an element that is not a sequence")
        value: str | None = NEEDS_PYDICOM
        if vr in TEXT_VRS:
            # pydicom reads an empty DS or IS as None (other empty text as "")
            value = None if not record.length and vr in _NUMBER_TEXT_VRS else text_of(_value(data, record))
        elif vr in NUMBER_FORMATS:
            value = number_text(_value(data, record), vr)
        elif vr in BINARY_VRS:
            value = binary_text(_value(data, record))
        if value is NEEDS_PYDICOM:
            elem = convert_raw_data_element(_raw_element(data, record, vr, level.implicit),
                                            encoding=level.encoding() if tag != _CHARSET else default_encoding)
            vr, value = str(elem.VR), element_text(elem)
        path_.append(path)
        tag_.append(tagstr)
        vr_.append(vr)
        value_.append(value)


def _items(record: RawRecord, level: _Level, path: str, rows: Rows, skip: frozenset[str]) -> None:
    data = level.data
    for i, item in enumerate(raw.items_of(data, record, implicit=level.implicit)):
        records = raw.walk(data, item.value_start, item.value_end, implicit=level.implicit)
        sub = _Level(data, level.implicit, _encodings(data, records, level.encoding))
        _walk(records, sub, f"{path}[{i}].", rows, skip, True)


def _vr_of(record: RawRecord, keyword: str, records: list[RawRecord], level: _Level) -> str:
    """The VR pydicom gives the element; Unsupported where pydicom would decide otherwise."""
    if record.vr is not None:
        vr = _VRS.get(record.vr)
        if vr is None:
            vr = _VRS.setdefault(record.vr, record.vr.decode("ascii"))
        if vr == "UN":
            raise Unsupported("a UN element (pydicom may use the dictionary VR)")
        return vr
    tag = record.tag
    if keyword:
        vr = dictionary_VR(tag)
        if len(vr) != 2:
            raise Unsupported("an ambiguous VR in implicit VR")
        return vr
    if not (tag >> 16) & 1 or record.length == raw.UNDEFINED:
        raise Unsupported("an unknown element in implicit VR")
    element = tag & 0xFFFF
    if 0x10 <= element <= 0xFF:
        return "LO"  # a private creator
    if element < 0x100:
        return "UN"
    creator_tag = tag >> 16 << 16 | element >> 8
    creator = next((r for r in records if r.tag == creator_tag), None)
    if creator is None:
        return "UN"
    elem = convert_raw_data_element(_raw_element(level.data, creator, "LO", True),
                                    encoding=level.encoding())
    if not elem.value:
        return "UN"
    try:
        vr = private_dictionary_VR(tag, elem.value)
    except KeyError:
        return "UN"
    if len(vr) != 2:
        raise Unsupported("an ambiguous private VR in implicit VR")
    return vr

"""Raw walker: the elements of a DICOM data set straight from its bytes, nothing converted.

Takes the bytes of a file (or of a sequence item) and returns, per data set, one
:class:`RawRecord` per element in file order: tag, VR as written (explicit VR) or ``None``
(implicit VR), where the element's header starts, where its value starts, its declared length and
where the element ends (after the sequence delimiter for undefined lengths). Sequence items are
walked on demand (:func:`items_of`), so a caller that only copies a sequence pays nothing for its
contents. Little endian only: explicit VR and implicit VR, defined and undefined lengths, nested
sequences and items, encapsulated pixel data (fragments are skipped, not read).

Anything the walker cannot prove it reads exactly as pydicom does raises :class:`Unsupported`
(big endian, a non-zero reserved field, a VR that is not two upper-case letters, elements out of
tag order, an undefined length on anything but a sequence or the pixel data, lengths that run past
their container, item tags at data set level). The caller then takes the pydicom path.

Pure functions over ``bytes``; no pydicom import, no state.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from pydicom.valuerep import VR

__all__ = ["PIXEL_TAGS", "UNDEFINED", "RawItem", "RawRecord", "Unsupported", "element_at", "item_header",
           "items_of", "walk", "walk_explicit", "walk_file"]

UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
                       b"UT", b"UV"})
#: the VRs with a 2-byte length that pydicom knows (the fast path of walk_explicit; any other
#: VR takes the general path, which reads an unknown upper-case VR the same way)
_SHORT_VRS = frozenset(v.value.encode() for v in VR if len(v.value) == 2) - _LONG_VRS
_U32 = struct.Struct("<L")
_TAG_LEN = struct.Struct("<HHL")
_TAG_VR_LEN = struct.Struct("<HH2sH")


class Unsupported(Exception):
    """The bytes are not in a form the walker reads exactly as pydicom does (say why, no value)."""


class RawRecord(NamedTuple):
    """One element as it sits in the bytes (offsets are absolute in the walked buffer)."""

    tag: int
    vr: bytes | None  # None in implicit VR
    start: int  # first byte of the element header
    value_start: int
    length: int  # declared length (UNDEFINED for undefined)
    end: int  # first byte after the element (after its delimiter for undefined lengths)


class RawItem(NamedTuple):
    """One sequence item: its header, its content span and how its length was written."""

    start: int
    value_start: int
    value_end: int  # end of the item's elements (before an item delimiter)
    end: int
    undefined: bool


def walk_file(data: bytes) -> tuple[list[RawRecord], int]:
    """Walk a Part 10 file's header: (file meta records, offset where the data set starts).

    The file must start with the 128-byte preamble and ``DICM``; the file meta is explicit VR
    little endian (group 0002, read while the group is 0002, as pydicom reads it). Walk the data
    set with ``walk(data, offset, len(data), implicit=...)``.
    """
    if len(data) < 132 or data[128:132] != b"DICM":
        raise Unsupported("no preamble and DICM prefix")
    meta: list[RawRecord] = []
    pos, end = 132, len(data)
    while pos + 8 <= end:
        group, elem, vr, length = _TAG_VR_LEN.unpack_from(data, pos)
        if group != 2:
            break
        if vr in _SHORT_VRS and pos + 8 + length <= end:  # the fast path of walk_explicit
            record = tuple.__new__(RawRecord, (2 << 16 | elem, vr, pos, pos + 8, length, pos + 8 + length))
        else:
            record = _element(data, pos, end, implicit=False)  # the general path (and its errors)
        meta.append(record)
        pos = record.end
    return meta, pos


def walk(data: bytes, start: int, end: int, *, implicit: bool) -> list[RawRecord]:
    """The elements of the data set in ``data[start:end]``, in order (tags strictly increasing)."""
    out: list[RawRecord] = []
    pos, last = start, -1
    while pos < end:
        if pos + 8 > end:
            raise Unsupported("bytes left over after the last element")
        record = _element(data, pos, end, implicit=implicit)
        if record.tag <= last:
            raise Unsupported("elements out of tag order")
        last = record.tag
        out.append(record)
        pos = record.end
    return out


def walk_explicit(data: bytes, start: int, end: int) -> list[RawRecord]:
    """``walk(data, start, end, implicit=False)`` in one loop (the same records, the same refusals)."""
    out: list[RawRecord] = []
    append = out.append
    unpack = _TAG_VR_LEN.unpack_from
    short_vrs = _SHORT_VRS
    new = tuple.__new__  # RawRecord(...) without the Python-level __new__ of a NamedTuple
    pos, last = start, -1
    while pos < end:
        if pos + 8 > end:
            raise Unsupported("bytes left over after the last element")
        group, elem, vr, length = unpack(data, pos)
        tag = group << 16 | elem
        if group == 0xFFFE or vr not in short_vrs:
            record = _element(data, pos, end, implicit=False)  # the general path (and its errors)
        else:
            stop = pos + 8 + length
            if stop > end:
                raise Unsupported("a value runs past its container")
            record = new(RawRecord, (tag, vr, pos, pos + 8, length, stop))
        if record[0] <= last:
            raise Unsupported("elements out of tag order")
        last = record[0]
        append(record)
        pos = record[5]
    return out


def _element(data: bytes, pos: int, end: int, *, implicit: bool) -> RawRecord:
    group, elem, length = _TAG_LEN.unpack_from(data, pos)
    tag = group << 16 | elem
    if group == 0xFFFE:
        raise Unsupported("an item or delimiter tag at data set level")
    vr: bytes | None
    if implicit:
        vr, value_start = None, pos + 8
    else:
        _g, _e, vr, short = _TAG_VR_LEN.unpack_from(data, pos)
        if not (vr.isalpha() and vr.isupper()):
            raise Unsupported("a VR that is not two upper-case letters")
        if vr in _LONG_VRS:
            if short != 0:
                raise Unsupported("a non-zero reserved field")
            if pos + 12 > end:
                raise Unsupported("the file ends inside an element header")
            (length,) = _U32.unpack_from(data, pos + 8)
            value_start = pos + 12
        else:
            length, value_start = short, pos + 8
    if length != UNDEFINED:
        stop = value_start + length
        if stop > end:
            raise Unsupported("a value runs past its container")
        return RawRecord(tag, vr, pos, value_start, length, stop)
    if tag == _PIXEL_DATA and vr in (None, b"OB", b"OW"):
        return RawRecord(tag, vr, pos, value_start, length, _fragments_end(data, value_start, end))
    if vr not in (None, b"SQ"):
        raise Unsupported("an undefined length on an element that is not a sequence")
    return RawRecord(tag, vr, pos, value_start, length, _sequence_end(data, value_start, end, implicit))


def _fragments_end(data: bytes, pos: int, end: int) -> int:
    """End of encapsulated pixel data: items of defined length up to the sequence delimiter."""
    while True:
        if pos + 8 > end:
            raise Unsupported("the file ends inside encapsulated pixel data")
        group, elem, length = _TAG_LEN.unpack_from(data, pos)
        tag = group << 16 | elem
        if tag == _SEQ_END:
            return pos + 8
        if tag != _ITEM or length == UNDEFINED or pos + 8 + length > end:
            raise Unsupported("malformed encapsulated pixel data")
        pos += 8 + length


def item_header(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """(value offset, length) of the item of an undefined-length sequence whose header is at
    ``data[pos]`` (its container ends at ``end``); None at the sequence delimiter."""
    if pos + 8 > end:
        raise Unsupported("the file ends inside a sequence")
    group, elem, length = _TAG_LEN.unpack_from(data, pos)
    tag = group << 16 | elem
    if tag == _SEQ_END:
        return None
    if tag != _ITEM:
        raise Unsupported("a sequence holds something other than items")
    if length != UNDEFINED and pos + 8 + length > end:
        raise Unsupported("an item runs past its sequence")
    return pos + 8, length


def _sequence_end(data: bytes, pos: int, end: int, implicit: bool) -> int:
    while True:
        header = item_header(data, pos, end)
        if header is None:
            return pos + 8
        pos = _item(data, pos, end, implicit, _ITEM, header[1]).end


def _item(data: bytes, pos: int, end: int, implicit: bool, tag: int, length: int) -> RawItem:
    if tag != _ITEM:
        raise Unsupported("a sequence holds something other than items")
    value_start = pos + 8
    if length != UNDEFINED:
        if value_start + length > end:
            raise Unsupported("an item runs past its sequence")
        return RawItem(pos, value_start, value_start + length, value_start + length, False)
    p = value_start
    while True:
        if p + 8 > end:
            raise Unsupported("the file ends inside an item")
        group, elem, _length = _TAG_LEN.unpack_from(data, p)
        if (group << 16 | elem) == _ITEM_END:
            return RawItem(pos, value_start, p, p + 8, True)
        p = _element(data, p, end, implicit=implicit).end


def items_of(data: bytes, record: RawRecord, *, implicit: bool) -> list[RawItem]:
    """The items of a sequence element (defined or undefined length)."""
    pos = record.value_start
    stop = record.end if record.length == UNDEFINED else record.value_start + record.length
    items: list[RawItem] = []
    while pos < stop:
        if pos + 8 > stop:
            raise Unsupported("bytes left over inside a sequence")
        group, elem, length = _TAG_LEN.unpack_from(data, pos)
        tag = group << 16 | elem
        if tag == _SEQ_END:
            if record.length != UNDEFINED or pos + 8 != stop:
                raise Unsupported("a sequence delimiter inside a defined-length sequence")
            return items
        item = _item(data, pos, stop, implicit, tag, length)
        items.append(item)
        pos = item.end
    if record.length == UNDEFINED:
        raise Unsupported("an undefined-length sequence without its delimiter")
    return items


#: PixelData, DoubleFloatPixelData, FloatPixelData: where pydicom's ``stop_before_pixels`` stops
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})


def element_at(data: bytes, pos: int, end: int, *, implicit: bool) -> RawRecord:
    """The element whose header starts at ``data[pos]`` (its container ends at ``end``)."""
    return _element(data, pos, end, implicit=implicit)

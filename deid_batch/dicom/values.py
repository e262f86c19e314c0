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

import copy
import os
import struct
from collections.abc import Callable, MutableSequence
from typing import Any, Union

from pydicom import config
from pydicom.charset import STAND_ALONE_ENCODINGS, convert_encodings, default_encoding, python_encoding
from pydicom.datadict import dictionary_VR, keyword_for_tag, private_dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.tag import BaseTag
from pydicom.uid import UID, PrivateTransferSyntaxes

from deid_batch.dicom import raw
from deid_batch.dicom.raw import RawRecord, Unsupported

__all__ = ["BINARY_VRS", "HEADER_BYTES", "NEEDS_PYDICOM", "NUMBER_FORMATS", "TEXT_VRS", "Rows", "append_row",
           "binary_text", "element_text", "flatten_file", "read_charset", "read_header", "tag_info", "text_of",
           "number_text"]

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
#: what a raw header read takes first: enough for most headers (the whole file is read if not)
HEADER_BYTES = _CHUNK = 1 << 16
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
                       b"UT", b"UV"})
_U16, _U32, _TAG_LEN = struct.Struct("<H"), struct.Struct("<L"), struct.Struct("<HHL")
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_STRUCTS = {(vr, little): struct.Struct(("<" if little else ">") + code)
            for vr, code in NUMBER_FORMATS.items() for little in (True, False)}

#: ``(path, tag, vr, value)`` lists the rows are appended to
Rows = tuple[list[str], list[str], list[str], list[str | None]]
Encoding = Union[str, MutableSequence[str]]  # noqa: UP007 - a runtime alias


def append_row(rows: Rows, path: str, tag: str, vr: str, value: str | None) -> None:
    """Append one element's row (a sequence's row has no value: its items' rows follow)."""
    rows[0].append(path)
    rows[1].append(tag)
    rows[2].append(vr)
    rows[3].append(value)

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
    pixel, n_elements = _level(data, start, len(data), implicit, True, "", rows, skip, expand,
                               default_encoding)
    if pixel is None:
        if len(data) < size:
            raise Unsupported("the header does not end within the bytes read")
    else:
        _check_pixels(path, data, pixel, size, implicit)
    if not n_elements:
        raise Unsupported("no data set, or only its character set")
    _level(data, 132, start, False, False, "", rows, skip, expand, default_encoding)


_TAG_VR_LEN = struct.Struct("<HH2sH")
_TAG_LEN4 = struct.Struct("<HHL")
#: the VRs pydicom knows, as written in explicit VR
_KNOWN_VRS = {vr.encode(): vr for vr in ("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO",
                                          "LT", "OB", "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ",
                                          "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT",
                                          "UV")}


#: how a value of each VR is decoded: directly as text, number or bulk data, else by pydicom
_PYDICOM, _TEXT, _NUMBER, _BINARY = 0, 1, 2, 3
_DECODERS = {**{vr: _TEXT for vr in TEXT_VRS}, **{vr: _NUMBER for vr in NUMBER_FORMATS},
             **{vr: _BINARY for vr in BINARY_VRS}}


class _Context:
    """What decoding one data set needs besides its bytes: where its character set and private
    creators are (decoded only when a value needs them), its parent's encoding."""

    __slots__ = ("charset", "creators", "encoding", "implicit", "last", "parent")

    def __init__(self, implicit: bool, parent: Encoding) -> None:
        self.implicit = implicit
        self.parent = parent
        self.charset: bytes | None = None
        self.encoding: Encoding | None = None
        self.creators: dict[int, bytes] = {}
        self.last = -1

    def text_encoding(self) -> Encoding:
        """The level's character set: its own SpecificCharacterSet, else the parent's."""
        if self.encoding is None:
            self.encoding = _enc(self.charset, self.parent, self.last)
        return self.encoding


def _header(data: bytes, pos: int, end: int, implicit: bool) -> tuple[int, bytes | None, int, int]:
    """(tag, VR bytes or None, length, value offset) of the element header at ``pos``."""
    if pos + 8 > end:
        raise Unsupported("bytes left over after the last element")
    if implicit:
        group, elem, length = _TAG_LEN4.unpack_from(data, pos)
        return group << 16 | elem, None, length, pos + 8
    group, elem, vrb, length = _TAG_VR_LEN.unpack_from(data, pos)
    if vrb in _LONG_VRS:
        if length != 0:
            raise Unsupported("a non-zero reserved field")
        if pos + 12 > end:
            raise Unsupported("the file ends inside an element header")
        return group << 16 | elem, vrb, _U32.unpack_from(data, pos + 8)[0], pos + 12
    return group << 16 | elem, vrb, length, pos + 8


def _level(data: bytes, pos: int, end: int, implicit: bool, top: bool, prefix: str, rows: Rows,  # noqa: C901
           skip: frozenset[str], expand: bool, parent: Encoding,  # hot loop, fused
           delimited: bool = False) -> tuple[int | None, int]:
    """Walk and decode one data set's elements in ``data[pos:end]``, as :func:`raw.walk` reads
    them (the same checks, fused with decoding: no record per element). At the top level, stop
    at the pixel data; in an item of undefined length (``delimited``), at its item delimiter.
    Returns (offset of the pixel data or the item delimiter, else None; number of elements that
    are neither the character set nor group lengths).

    The hot loop: an element whose kind is known (cached for this skip list) and whose value is
    plain printable ASCII text is decoded and appended here, inline (what :func:`text_of`
    checks); every other element goes through :func:`_element`."""
    ctx = _Context(implicit, parent)
    kinds = _kinds_for(skip)
    path_, tag_, vr_, value_ = rows
    n_elements = 0
    last = -1
    while pos < end:
        # the element header, inline: as _header reads it
        if pos + 8 > end:
            raise Unsupported("bytes left over after the last element")
        vrb: bytes | None = None
        if implicit:
            group, elem, length = _TAG_LEN4.unpack_from(data, pos)
            value_start = pos + 8
        else:
            group, elem, vrb, length = _TAG_VR_LEN.unpack_from(data, pos)
            value_start = pos + 8
            if vrb in _LONG_VRS:
                _, vrb, length, value_start = _header(data, pos, end, implicit)
        tag = group << 16 | elem
        if group == 0xFFFE:
            if delimited and tag == _ITEM_END:
                return pos, n_elements
            raise Unsupported("an item or delimiter tag at data set level")
        if tag <= last:
            raise Unsupported("elements out of tag order")
        if top and (tag in raw.PIXEL_TAGS or tag == _DIRECTORY_RECORDS):
            if tag == _DIRECTORY_RECORDS:
                raise Unsupported("a DICOMDIR")
            return pos, n_elements
        last = tag
        if length == raw.UNDEFINED:
            stop = -1  # a sequence's end is where its walk ends (_element); anything else: raw's walk
        elif value_start + length > end:
            raise Unsupported("a value runs past its container")
        else:
            stop = value_start + length
        if elem:
            if tag == _CHARSET:
                stop = _found_end(data, pos, end, implicit, stop)
                ctx.charset = data[value_start:stop]
            else:
                n_elements += 1
                if group & 1 and 0x10 <= elem <= 0xFF:
                    stop = _found_end(data, pos, end, implicit, stop)
                    ctx.creators[tag] = data[value_start:stop]
        kind = kinds.get((tag, vrb))
        if kind is _SKIPPED:
            pos = _found_end(data, pos, end, implicit, stop)
            continue
        if kind is not None and kind[4] == _TEXT and length != raw.UNDEFINED:
            vr = kind[2]
            value: str | None
            if not length:  # pydicom reads an empty DS or IS as None (other empty text as "")
                value = None if vr in _NUMBER_TEXT_VRS else ""
            else:
                try:
                    value = data[value_start:stop].decode("ascii").rstrip("\x00 ")
                except UnicodeDecodeError:
                    value = NEEDS_PYDICOM
                else:
                    if (not value.isprintable() or value[:1].isspace()
                            or ("\\" in value and (" \\" in value or "\\ " in value))):
                        value = NEEDS_PYDICOM
            if value is not NEEDS_PYDICOM:
                path_.append(prefix + kind[3] if prefix else kind[3])
                tag_.append(kind[1])
                vr_.append(vr)
                value_.append(value)
                pos = stop
                continue
        ctx.last = last
        pos = _element(data, pos, tag, vrb, length, value_start, stop, end, ctx, prefix, rows, skip, kinds,
                       expand)
    if delimited:
        raise Unsupported("the file ends inside an item")
    return None, n_elements


#: marks an element of the skip list in a kind cache
_SKIPPED: Any = ()
#: the kind caches, one per skip list (see _kinds_for): (tag, explicit VR bytes or None) ->
#: (keyword, "(GGGG,EEEE)", VR, path name, decoder) of the elements whose VR does not depend on
#: the file (see _kind); bounded (tags seen x VRs)
_KINDS_BY_SKIP: dict[frozenset[str], dict[tuple[int, bytes | None], tuple[str, str, str, str, int]]] = {}


def _found_end(data: bytes, pos: int, end: int, implicit: bool, stop: int) -> int:
    """``stop``, or where raw's walk ends the element at ``pos`` when its length is undefined (-1)."""
    return stop if stop >= 0 else raw.element_at(data, pos, end, implicit=implicit).end


def _kinds_for(skip: frozenset[str]) -> dict[tuple[int, bytes | None], tuple[str, str, str, str, int]]:
    """The kind cache of one skip list (:data:`_SKIPPED` for its elements); bounded."""
    kinds = _KINDS_BY_SKIP.get(skip)
    if kinds is None:
        if len(_KINDS_BY_SKIP) >= 16:
            _KINDS_BY_SKIP.clear()
        kinds = _KINDS_BY_SKIP[skip] = {}
    return kinds


def _element(data: bytes, pos: int, tag: int, vrb: bytes | None, length: int, value_start: int,
             stop: int, end: int, ctx: _Context, prefix: str, rows: Rows, skip: frozenset[str],
             kinds: dict[tuple[int, bytes | None], tuple[str, str, str, str, int]], expand: bool) -> int:
    """Append the row(s) of one element (a sequence's items' rows after its own): the elements
    :func:`_level`'s inline path does not decode. Returns where the element ends (``stop``, or
    for an undefined length, -1, where its walk ends)."""
    kind = kinds.get((tag, vrb))
    if kind is None:
        keyword, tagstr = tag_info(tag)
        if skip and (keyword in skip or tagstr in skip):
            if len(kinds) < 100_000:
                kinds[tag, vrb] = _SKIPPED
            # before its VR is looked at (a skipped element is never read)
            return _found_end(data, pos, end, ctx.implicit, stop)
        kind = _kind(tag, vrb, keyword, tagstr, length, ctx, kinds)
    _keyword, tagstr, vr, name, decoder = kind
    path = prefix + name if prefix else name
    value: str | None = NEEDS_PYDICOM
    if decoder == _TEXT and length != raw.UNDEFINED:
        # pydicom reads an empty DS or IS as None (other empty text as "")
        value = None if not length and vr in _NUMBER_TEXT_VRS else text_of(data[value_start:stop])
    if value is NEEDS_PYDICOM:
        if vr == "SQ":
            append_row(rows, path, tagstr, "SQ", None)
            if not expand:
                return _found_end(data, pos, end, ctx.implicit, stop)
            if stop < 0:
                return _undefined_sequence(data, value_start, end, ctx, path, rows, skip)
            record = RawRecord(tag, vrb, pos, value_start, length, stop)  # as _level read it
            encoding = ctx.text_encoding()
            for i, item in enumerate(raw.items_of(data, record, implicit=ctx.implicit)):
                _level(data, item.value_start, item.value_end, ctx.implicit, False, f"{path}[{i}].",
                       rows, skip, True, encoding)
            return stop
        if length == raw.UNDEFINED:
            raise Unsupported("an undefined length on an element that is not a sequence")
        if decoder == _NUMBER:
            value = number_text(data[value_start:stop], vr)
        elif decoder == _BINARY:
            value = binary_text(data[value_start:stop])
        if value is NEEDS_PYDICOM:
            converted = convert_raw_data_element(
                RawDataElement(BaseTag(tag), None if ctx.implicit else vr, length, data[value_start:stop],
                               value_start, ctx.implicit, True, True),
                encoding=default_encoding if tag == _CHARSET else ctx.text_encoding())
            vr, value = str(converted.VR), element_text(converted)
    append_row(rows, path, tagstr, vr, value)
    return stop


def _undefined_sequence(data: bytes, pos: int, end: int, ctx: _Context, path: str, rows: Rows,
                        skip: frozenset[str]) -> int:
    """Walk and decode the items of a sequence of undefined length whose value starts at ``pos``,
    in one pass (:func:`raw.items_of` and :func:`raw.element_at` refuse what this refuses);
    returns where the sequence ends (after its delimiter)."""
    encoding = ctx.text_encoding()
    i = 0
    while True:
        header = raw.item_header(data, pos, end)
        if header is None:
            return pos + 8
        start, length = header
        if length != raw.UNDEFINED:
            _level(data, start, start + length, ctx.implicit, False, f"{path}[{i}].", rows, skip, True, encoding)
            pos = start + length
        else:
            delimiter, _n = _level(data, start, end, ctx.implicit, False, f"{path}[{i}].", rows, skip, True,
                                   encoding, delimited=True)
            assert delimiter is not None  # a delimited level ends at its delimiter or raises
            pos = delimiter + 8
        i += 1


def _kind(tag: int, vrb: bytes | None, keyword: str, tagstr: str, length: int, ctx: _Context,
          kinds: dict[tuple[int, bytes | None], tuple[str, str, str, str, int]]) -> tuple[str, str, str, str, int]:
    """(keyword, "(GGGG,EEEE)", VR, path name, decoder) of an element; kept in ``kinds``
    where it depends on (tag, VR as written) alone: an explicit VR pydicom keeps (not UN), or a
    public tag's one dictionary VR in implicit VR (``kinds`` is the cache of the scan's skip list,
    :func:`_kinds_for`)."""
    vr = _vr(tag, vrb, keyword, length, ctx)
    kind = (keyword, tagstr, vr, keyword or tagstr, _DECODERS.get(vr, _PYDICOM))
    if (vr == _KNOWN_VRS[vrb] if vrb is not None else keyword) and len(kinds) < 100_000:
        kinds[tag, vrb] = kind
    return kind


def _vr(tag: int, vrb: bytes | None, keyword: str, length: int, ctx: _Context) -> str:
    """The VR pydicom gives the element (hooks.raw_element_vr), or Unsupported."""
    if vrb is not None:
        vr = _KNOWN_VRS.get(vrb, "")
        if not vr:
            raise Unsupported("an unknown VR")
        if vr != "UN":
            return vr
        if not config.replace_un_with_known_vr or length == raw.UNDEFINED:
            raise Unsupported("a UN element pydicom reads otherwise")
        if (tag >> 16) & 1:  # pydicom looks private UN elements up under their creator
            return _not_sequence(_private_vr(tag, length, ctx))
        if length >= 0xFFFF or not keyword:
            return "UN"
        return _not_sequence(_dictionary_vr(tag))
    if not keyword:
        return _private_vr(tag, length, ctx)
    return _dictionary_vr(tag)


def _dictionary_vr(tag: int) -> str:
    vr = dictionary_VR(tag)
    if len(vr) != 2:
        raise Unsupported("an ambiguous VR")
    return vr


def _not_sequence(vr: str) -> str:
    if vr == "SQ":
        raise Unsupported("a UN element that pydicom reads as a sequence")
    return vr


def _enc(charset: bytes | None, parent: Encoding, last: int) -> Encoding:
    """The level's character set: its own SpecificCharacterSet, else the parent's (decided only
    once the walk is past where SpecificCharacterSet would be)."""
    if charset is not None:
        return read_charset(charset)[1]
    if last < _CHARSET:
        raise Unsupported("text before the character set")
    return parent


#: SpecificCharacterSet values as written -> (pydicom's value, its Python encodings), for the
#: values pydicom reads without a warning (one conversion per process, not per file); bounded
_CHARSETS: dict[bytes, tuple[Any, list[str]]] = {}


def read_charset(charset: bytes) -> tuple[Any, list[str]]:
    """(SpecificCharacterSet as pydicom reads these value bytes, its Python encodings), each call a
    fresh copy. A standard value is converted once per process (pydicom's conversion costs more
    than a raw walk of a small header); any other is converted every time, with pydicom's warning."""
    known = _CHARSETS.get(charset)
    if known is None:
        elem = convert_raw_data_element(RawDataElement(BaseTag(_CHARSET), "CS", len(charset), charset, 0,
                                                       False, True, True))
        value, encodings = elem.value, convert_encodings(elem.value)
        if len(_CHARSETS) < 64 and _standard_charset(charset):
            _CHARSETS[charset] = (copy.deepcopy(value), list(encodings))
        return value, encodings
    value, encodings = known
    return (value if isinstance(value, str) else copy.deepcopy(value)), list(encodings)


def _standard_charset(charset: bytes) -> bool:
    """Is this SpecificCharacterSet value one pydicom reads without a warning or a correction:
    every value a defined term, written exactly, and no stand-alone encoding among several?"""
    try:
        terms = charset.decode("ascii").rstrip("\x00 ").split("\\")
    except UnicodeDecodeError:
        return False
    return all(term in python_encoding and term == term.strip() for term in terms) and \
        (len(terms) == 1 or not any(term in STAND_ALONE_ENCODINGS for term in terms))


def _private_vr(tag: int, length: int, ctx: _Context) -> str:
    """The VR pydicom gives a private element in implicit VR (its creator's dictionary entry)."""
    if not (tag >> 16) & 1 or length == raw.UNDEFINED:
        raise Unsupported("an unknown element in implicit VR")
    element = tag & 0xFFFF
    if 0x10 <= element <= 0xFF:
        return "LO"  # a private creator
    if element < 0x100:
        return "UN"
    creator = ctx.creators.get(tag >> 16 << 16 | element >> 8)
    if creator is None:
        return "UN"
    elem = convert_raw_data_element(RawDataElement(BaseTag(tag >> 16 << 16 | element >> 8), "LO", len(creator),
                                                   creator, 0, True, True, True), encoding=ctx.text_encoding())
    if not elem.value:
        return "UN"
    try:
        vr = private_dictionary_VR(tag, elem.value)
    except KeyError:
        return "UN"
    if len(vr) != 2:
        raise Unsupported("an ambiguous private VR in implicit VR")
    return vr


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

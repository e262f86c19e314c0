"""Byte-level writer: a de-identified dataset written by copying the input's bytes.

Takes the dataset the recipe engine left (read with pydicom, values still raw where the recipe
did not touch them, ``deidentify_dataset(..., finish=False)``) and the bytes of its input file;
returns the output file's bytes, or ``None`` when it cannot prove they equal what
:func:`deid_batch.dicom.writing.encode` writes for the same dataset (the caller then takes that
path: convert every element, encode with pydicom).

How: the input is walked with :mod:`deid_batch.dicom.raw`; for each element of the output
dataset, in tag order and level by level:

* still the raw element read from the input, at the offset the walker found, with the same bytes,
  and *canonical* (pydicom's convert-then-write gives back exactly these bytes: printable ASCII
  text with only the padding pydicom itself adds, numbers whose length fits their VR, even-length
  bulk data): its bytes are copied (runs of neighbours as one slice; pixel data passes through);
* a sequence: its items are written the same way, one by one, and the sequence and item lengths
  are recomputed (undefined lengths stay undefined, as pydicom writes them);
* anything else (changed, added, not canonical, ``UN``, private in implicit VR): converted and
  re-encoded with pydicom's ``write_data_element`` on a small buffer;
* removed elements are simply not there; group lengths (gggg,0000) are dropped, as pydicom does.

The file meta is rebuilt and written by pydicom exactly as ``encode`` does (preamble zeroed,
MediaStorageSOPInstanceUID = SOPInstanceUID ...). Refused (``None``): big endian, deflated,
private or unknown transfer syntaxes, a data set whose encoding differs from its transfer syntax,
no preamble, a character set inside a sequence item, a changed SpecificCharacterSet while any
text is not ASCII, pixel data whose length form does not match the transfer syntax, and anything
the walker rejects. Never raises for bad input.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from collections.abc import Iterable
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as PydicomSequence
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import PersonName

from deid_batch.dicom import raw
from deid_batch.dicom.writing import _rebuild_file_meta

__all__ = ["read_input", "rewrite"]

_PREFIX = b"\x00" * 128 + b"DICM"
_PIXEL_DATA = 0x7FE00010
_CHARSET = 0x00080005
_ITEM_START = struct.pack("<HH", 0xFFFE, 0xE000)
_ITEM_END = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
_SEQ_END = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
_U32 = struct.Struct("<L")
_TAG = struct.Struct("<HH")
_NUMBER_SIZES = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FD": 8, "SV": 8, "UV": 8, "AT": 4}
_BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_SPLIT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "LO", "SH", "UC", "PN", "IS", "DS"})
_WHOLE_VRS = frozenset({"LT", "ST", "UT", "UR"})
_TEXT_VRS = _SPLIT_VRS | _WHOLE_VRS
# LUT descriptors: pydicom writes their first value as US whatever the VR (a negative SS fails)
_LUT_DESCRIPTORS = frozenset({0x00283002, 0x00281101, 0x00281102, 0x00281103, 0x00283006})
_PRINTABLE = bytes(range(0x20, 0x7F))
_IS_RE = re.compile(rb"[+-]?[0-9]+\Z")
_DS_RE = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_FL = struct.Struct("<f")


# The text rules of _canonical as one pattern per VR: a value is its core (plain printable
# ASCII, no trailing space; for the multi-valued VRs no space next to a backslash or at the
# start, and IS/DS numbers as pydicom writes them back) plus at most one padding byte (the
# length is even, checked first, so a padded core is odd as pydicom pads it).
_PLAIN = rb"[!-\[\]-~](?:[ -\[\]-~]*[!-\[\]-~])?"  # one value: no backslash, no space at an end
_IS_VALUE = rb"[+-]?[0-9]+"
_DS_VALUE = rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"


def _values(value: bytes, empty_ok: bool) -> bytes:
    one = rb"(?:%s)%s" % (value, b"?" if empty_ok else b"")
    return rb"(?:%s(?:\\%s)*)?" % (one, one)


_SPLIT_CORE = _values(_PLAIN, True)
_TEXT_RES = {vr: re.compile(core + (rb"\x00?" if vr == "UI" else rb" ?"))
             for vr, core in ({v: _SPLIT_CORE for v in _SPLIT_VRS} |
                              {v: rb"(?:[ -~]*[!-~])?" for v in _WHOLE_VRS} |
                              {"IS": _values(_IS_VALUE, False), "DS": _values(_DS_VALUE, False)}).items()}


def _canonical(tag: int, vr: str, value: bytes) -> bool:
    """True if pydicom converting ``value`` and writing it back gives ``value`` unchanged."""
    size = _NUMBER_SIZES.get(vr)
    if size is not None:
        return len(value) % size == 0 and tag not in _LUT_DESCRIPTORS
    text = _TEXT_RES.get(vr)
    if text is not None:
        return not len(value) % 2 and text.fullmatch(value) is not None
    if vr in _BULK_VRS:
        return len(value) % 2 == 0
    if vr == "FL":
        return len(value) % 4 == 0 and all(v == v for (v,) in _FL.iter_unpack(value))
    return False


def _implicit_vr(tag: int) -> str | None:
    """The VR pydicom gives a raw implicit-VR element, when it is certain (public, one VR)."""
    if (tag >> 16) & 1:
        return None
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return None
    return vr if len(vr) == 2 else None


def _ascii(value: Any) -> bool:
    values: Iterable[Any] = value if isinstance(value, (list, tuple, MultiValue)) else (value,)
    for v in values:
        if isinstance(v, PersonName):
            v = str(v)
        if isinstance(v, (str, bytes)) and not v.isascii():
            return False
    return True


class _Out:
    """Output chunks: copied slices of the input (neighbours merged) and re-encoded bytes."""

    __slots__ = ("chunks", "run_end", "run_start", "view")

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.chunks: list[bytes | memoryview] = []
        self.run_start = self.run_end = -1

    def copy(self, start: int, end: int) -> None:
        if start != self.run_end:
            self._flush()
            self.run_start = start
        self.run_end = end

    def put(self, data: bytes | memoryview) -> None:
        self._flush()
        self.chunks.append(data)

    def extend(self, chunks: list[bytes | memoryview]) -> None:
        self._flush()
        self.chunks.extend(chunks)

    def _flush(self) -> None:
        if self.run_end >= 0:
            self.chunks.append(self.view[self.run_start:self.run_end])
            self.run_start = self.run_end = -1

    def done(self) -> tuple[list[bytes | memoryview], int]:
        self._flush()
        return self.chunks, sum(len(c) for c in self.chunks)


class _Rewriter:
    def __init__(self, data: bytes, implicit: bool, encodings: Any, ascii_only: bool,
                 compressed: bool) -> None:
        self.data = data
        self.view = memoryview(data)
        self.implicit = implicit
        self.encodings = encodings
        self.ascii_only = ascii_only
        self.compressed = compressed
        self.copied = 0
        self.encoded = 0

    def level(self, out: _Out, ds: Dataset, records: list[raw.RawRecord], base: int) -> None:
        """Write the elements of ``ds`` (whose input elements are ``records``)."""
        by_tag = {r.tag: r for r in records}
        elements = ds._dict
        for tag in sorted(elements):
            itag = int(tag)
            if itag & 0xFFFF == 0 and itag >> 16 > 6:
                continue  # group lengths: pydicom never writes them
            element = elements[tag]
            record = by_tag.get(itag)
            if isinstance(element, RawDataElement):
                if record is None or not self._same(element, record, base):
                    raise raw.Unsupported("a raw element the walker did not find")
                vr = element.VR or _implicit_vr(itag)
                if vr is not None and vr != "SQ" and _canonical(itag, vr, element.value or b""):
                    out.copy(record.start, record.end)
                    self.copied += 1
                    continue
                element = ds[tag]  # pydicom's conversion (a bad value raises: caller falls back)
            if element.VR == "SQ" and record is not None and self.sequence(out, element, record):
                continue
            self.encode(out, element)

    def _same(self, element: RawDataElement, record: raw.RawRecord, base: int) -> bool:
        if element.length != record.length or (element.VR is not None and
                                                element.VR.encode() != record.vr):
            return False
        if element.value_tell not in (record.value_start, record.value_start - base):
            return False
        value = element.value or b""
        stop = record.end - 8 if record.length == raw.UNDEFINED else record.end
        if len(value) != stop - record.value_start:
            return False
        if record.tag == _PIXEL_DATA:  # large: offset and length suffice
            return (record.length == raw.UNDEFINED) == self.compressed
        return self.view[record.value_start:stop] == value

    def sequence(self, out: _Out, element: DataElement, record: raw.RawRecord) -> bool:
        """Write a sequence item by item; False if its items do not match the input's."""
        value = element.value
        if not isinstance(value, PydicomSequence):
            return False
        items = raw.items_of(self.data, record, implicit=self.implicit)
        if len(items) != len(value):
            return False
        body = _Out(self.view)
        for item_ds, item in zip(value, items):
            if _CHARSET in item_ds._dict:
                raise raw.Unsupported("a character set inside a sequence item")
            sub = _Out(self.view)
            self.level(sub, item_ds, raw.walk(self.data, item.value_start, item.value_end,
                                              implicit=self.implicit), record.value_start)
            chunks, n = sub.done()
            undefined = bool(getattr(item_ds, "is_undefined_length_sequence_item", False))
            body.put(_ITEM_START + _U32.pack(raw.UNDEFINED if undefined else n))
            body.extend(chunks)
            if undefined:
                body.put(_ITEM_END)
        chunks, n = body.done()
        undefined = element.is_undefined_length
        header = _TAG.pack(record.tag >> 16, record.tag & 0xFFFF)
        if not self.implicit:
            header += b"SQ\x00\x00"
        out.put(header + _U32.pack(raw.UNDEFINED if undefined else n))
        out.extend(chunks)
        if undefined:
            out.put(_SEQ_END)
        return True

    def encode(self, out: _Out, element: DataElement) -> None:
        """Re-encode one element (and its whole subtree) with pydicom, as ``encode`` would."""
        if isinstance(element.value, PydicomSequence):
            for item in element.value:
                for _ in item.iterall():
                    pass
        if self.ascii_only:
            self._check_ascii(element)
        if int(element.tag) == _PIXEL_DATA:
            element.is_undefined_length = self.compressed
        fp = DicomBytesIO()
        fp.is_little_endian = True
        fp.is_implicit_VR = self.implicit
        write_data_element(fp, element, self.encodings)
        out.put(fp.getvalue())
        self.encoded += 1

    def _check_ascii(self, element: DataElement) -> None:
        if isinstance(element.value, PydicomSequence):
            for item in element.value:
                for sub in item.iterall():
                    if sub.VR in _TEXT_VRS and not _ascii(sub.value):
                        raise raw.Unsupported("non-ASCII text after a character set change")
        elif element.VR in _TEXT_VRS and not _ascii(element.value):
            raise raw.Unsupported("non-ASCII text after a character set change")


def _same_charset(data: bytes, record: raw.RawRecord | None, kept: Any) -> bool:
    """SpecificCharacterSet of the output equals the input's (both absent counts as equal)."""
    if record is None or kept is None:
        return record is None and kept is None
    if isinstance(kept, RawDataElement):
        return kept.value_tell == record.value_start and kept.length == record.length
    original = bytes(data[record.value_start:record.end]).decode("ascii").rstrip(" \x00").split("\\")
    value = kept.value
    current = [value] if isinstance(value, str) else list(value or ())
    return original == current if current else original == [""]


def read_input(path: str) -> bytes | None:
    """The bytes of a regular input file, read-only (None if it is not one any more)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    except OSError:
        return None
    finally:
        os.close(fd)


def rewrite(ds: Dataset, data: bytes, character_set: Any = None, *, sop_class: str | None = None,
            instance_seed: str = "") -> bytes | None:
    """The output file for ``ds`` built from its input's ``data``, or None (use ``encode``).

    ``character_set``, ``sop_class`` and ``instance_seed`` are as :func:`~deid_batch.dicom.writing.encode`
    takes them (the file meta is rebuilt by the same rule).
    """
    try:
        return _rewrite(ds, data, character_set, sop_class, instance_seed)
    except Exception:  # noqa: BLE001 - anything unexpected: the pydicom path decides
        return None


def _rewrite(ds: Dataset, data: bytes, character_set: Any, sop_class: str | None,
             instance_seed: str) -> bytes | None:
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        return None
    syntax = UID(meta.TransferSyntaxUID)
    if not syntax.is_transfer_syntax or syntax.is_private or syntax.is_deflated or \
            not syntax.is_little_endian:
        return None
    implicit = bool(syntax.is_implicit_VR)
    if tuple(ds.original_encoding) != (implicit, True):
        return None
    if any((int(t) >> 16) in (0, 2) for t in ds._dict):
        return None
    _meta_records, offset = raw.walk_file(data)
    records = raw.walk(data, offset, len(data), implicit=implicit)
    charset_record = next((r for r in records if r.tag == _CHARSET), None)
    kept = ds._dict.get(BaseTag(_CHARSET))
    unchanged = _same_charset(data, charset_record, kept)
    rewriter = _Rewriter(data, implicit, ds.get("SpecificCharacterSet", "iso8859"),
                         ascii_only=not unchanged, compressed=bool(syntax.is_compressed))
    body = _Out(rewriter.view)
    rewriter.level(body, ds, records, 0)
    chunks, _n = body.done()
    for _ in meta:  # the engine converts the file meta before today's writer sees it
        pass
    _rebuild_file_meta(ds, sop_class, instance_seed)
    ds.preamble = _PREFIX[:128]
    del character_set  # a changed character set only passes with ASCII text: nothing to restore
    return b"".join([_PREFIX, _file_meta(ds.file_meta), *chunks])


def _file_meta(meta: Dataset) -> bytes:
    """The file meta as ``write_file_meta_info(..., enforce_standard=False)`` writes it: every
    element in tag order, the group length (when present) set to the bytes that follow it."""
    tags = sorted(meta._dict)
    if any(int(t) >> 16 != 2 for t in tags):
        raise raw.Unsupported("a file meta element outside group 0002")
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    for tag in tags:
        write_data_element(fp, meta[tag])
    data = fp.getvalue()
    if tags and tags[0] == 0x00020000:
        if data[4:8] != b"UL\x04\x00":
            raise raw.Unsupported("a file meta group length that is not a UL")
        data = data[:8] + _U32.pack(len(data) - 12) + data[12:]
    return data

"""Writing: serialise a de-identified dataset and put it in place atomically.

Every output is a conformant DICOM Part 10 file with a complete, rebuilt file meta:

* ``FileMetaInformationGroupLength`` (computed), ``FileMetaInformationVersion`` ``00\\01``;
* ``MediaStorageSOPClassUID`` = the dataset's ``SOPClassUID`` (else the input's SOP class, passed
  by the caller; else Secondary Capture Image Storage for a dataset with pixel data and Raw Data
  Storage without: a bare dataset declares no class);
* ``MediaStorageSOPInstanceUID`` = the dataset's ``SOPInstanceUID``, else a UID derived from the
  caller's ``instance_seed`` (the keyed output name), so no original UID survives in the file meta;
* ``TransferSyntaxUID`` = the input's, else the encoding the dataset was read with (a big endian
  file without file meta stays Explicit VR Big Endian, ``1.2.840.10008.1.2.2``: its bytes, pixel
  data included, are written back as read);
* ``ImplementationClassUID`` = :data:`IMPLEMENTATION_CLASS_UID` and ``ImplementationVersionName`` =
  :data:`IMPLEMENTATION_VERSION_NAME`, never the input's (they may identify the site's software).

Other file meta elements the recipe kept (e.g. ``SourceApplicationEntityTitle``) are copied after
these. The 128-byte preamble is zeroed (it may hold a TIFF header or other data from the source).
When pydicom cannot encode the dataset, :func:`unencodable_element` finds the element (tag path and
VR, never its value) by encoding elements one by one. The bytes are written under a temporary name
in the target folder and then linked (no overwrite) or renamed (overwrite) into place, so no
reader ever sees a half-written output.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import io
import os
import secrets
from collections.abc import Sequence
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr_element, write_data_element
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
)

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "Outcome",
    "TMP_MARKER",
    "encode",
    "unencodable_element",
    "write_atomic",
]

TMP_MARKER = ".deid-batch-tmp-"
#: deid_batch's ImplementationClassUID, in every output's file meta: a fixed UUID-derived UID
#: (``2.25.`` + the integer of ``uuid5(NAMESPACE_URL, "https://github.com/deid-batch/deid_batch#implementation-class")``).
IMPLEMENTATION_CLASS_UID = "2.25.253773681179143120702830020490662417853"
#: deid_batch's ImplementationVersionName (SH, at most 16 characters).
IMPLEMENTATION_VERSION_NAME = "DEID_BATCH"
RAW_DATA_STORAGE = "1.2.840.10008.5.1.4.1.1.66"
_PREAMBLE = b"\x00" * 128
_TEXT_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: file meta elements the writer sets itself (group length, version, SOP class/instance, transfer
#: syntax, implementation class UID and version name)
_REBUILT = frozenset({0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012,
                      0x00020013})


class Outcome(str, enum.Enum):
    WRITTEN = "written"
    IDENTICAL = "identical"  # the same bytes were already there (an earlier attempt of this job)
    EXISTS = "exists"  # a different file is there and overwrite is off


def _transfer_syntax(ds: Dataset, old: Dataset) -> str:
    if "TransferSyntaxUID" in old and old.TransferSyntaxUID:
        return str(old.TransferSyntaxUID)
    implicit, little = ds.original_encoding
    if implicit is None:
        implicit, little = True, True
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _seed_uid(seed: str) -> str:
    """A UID (``2.25.`` + 128 bits) derived from ``seed``: deterministic, holds no original UID."""
    digest = hashlib.sha256(b"deid-batch-instance\0" + seed.encode("utf-8", "surrogateescape"))
    return f"2.25.{int.from_bytes(digest.digest()[:16], 'big')}"


def _uid_text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip("\0 ") if value is not None else ""
    return text or None


def _rebuild_file_meta(ds: Dataset, sop_class: str | None, instance_seed: str) -> None:
    old = getattr(ds, "file_meta", None) or FileMetaDataset()
    meta = FileMetaDataset()
    meta.FileMetaInformationGroupLength = 0  # computed when written
    meta.FileMetaInformationVersion = b"\x00\x01"
    klass = _uid_text(ds, "SOPClassUID") or sop_class
    if klass is None:
        has_pixels = any(k in ds for k in _PIXEL_KEYWORDS)
        klass = SecondaryCaptureImageStorage if has_pixels else RAW_DATA_STORAGE
    meta.MediaStorageSOPClassUID = UID(klass)
    meta.MediaStorageSOPInstanceUID = UID(_uid_text(ds, "SOPInstanceUID") or _seed_uid(instance_seed))
    meta.TransferSyntaxUID = UID(_transfer_syntax(ds, old))
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    for tag in old.keys():
        if int(tag) not in _REBUILT:
            meta[tag] = old.get_item(tag)
    ds.file_meta = meta


def _has_non_ascii_text(ds: Dataset) -> bool:
    for elem in ds.iterall():
        if elem.VR in _TEXT_VRS:
            values = elem.value if isinstance(elem.value, (list, tuple)) else (elem.value,)
            if any(isinstance(v, str) and not v.isascii() for v in values):
                return True
            if any(not str(v).isascii() for v in values if v.__class__.__name__ == "PersonName"):
                return True
    return False


def encode(ds: Dataset, *, character_set: Any = None, sop_class: str | None = None,
           instance_seed: str = "") -> bytes:
    """Serialise ``ds`` as a DICOM Part 10 file (preamble zeroed, complete file meta rebuilt).

    ``character_set`` is the input's SpecificCharacterSet: if the recipe removed it while kept
    text still needs it, it is put back (pydicom would otherwise write ``?`` for what the default
    repertoire cannot encode, silently changing a kept value). ``sop_class`` is the input's SOP
    class UID (for the file meta when the recipe removed ``SOPClassUID``); ``instance_seed``
    derives the ``MediaStorageSOPInstanceUID`` of a dataset without ``SOPInstanceUID`` (pass the
    keyed output name: deterministic, no original value).
    """
    if character_set and "SpecificCharacterSet" not in ds and _has_non_ascii_text(ds):
        ds.SpecificCharacterSet = character_set
    _rebuild_file_meta(ds, sop_class, instance_seed)
    ds.preamble = _PREAMBLE
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _first_unencodable(ds: Dataset, implicit: bool, little: bool, prefix: str) -> str | None:
    for tag in ds.keys():
        try:
            elem = correct_ambiguous_vr_element(ds[tag], ds, little)
            fp = DicomBytesIO()
            fp.is_implicit_VR, fp.is_little_endian = implicit, little
            write_data_element(fp, elem, ds._character_set)
        except Exception:  # noqa: BLE001 - any failure marks this element; no message (values)
            elem = ds.get_item(tag)
            where = prefix + _tag_text(int(tag))
            if getattr(elem, "VR", None) == "SQ" and elem.value is not None:
                for i, item in enumerate(elem.value):
                    inner = _first_unencodable(item, implicit, little, f"{where}[{i}].")
                    if inner is not None:
                        return inner
            return f"{where} {elem.VR}"
    return None


def unencodable_element(ds: Dataset) -> str | None:
    """The first element that cannot be encoded, as ``"(GGGG,EEEE)[i].(GGGG,EEEE) VR"``.

    Tries the file meta (explicit VR little endian) and then the data set's elements one by one,
    in the encoding :func:`encode` writes; nested sequence items are searched for the innermost
    element. The text names the tag path and VR, never a value. ``None`` if every element encodes.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        found = _first_unencodable(meta, False, True, "")
        if found is not None:
            return found
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    implicit, little = ds.original_encoding
    if ts:
        implicit, little = ts == ImplicitVRLittleEndian, ts != ExplicitVRBigEndian
    return _first_unencodable(ds, bool(implicit if implicit is not None else True),
                              bool(little if little is not None else True), "")


_UTIME_FD = os.utime in os.supports_fd


def _same_content(path: str, parts: Sequence[bytes | memoryview]) -> bool:
    try:
        if os.path.getsize(path) != sum(len(p) for p in parts):
            return False
        with open(path, "rb") as fh:
            return all(fh.read(len(p)) == p for p in parts)
    except OSError:
        return False


def _stamped(path: str, stamp_ns: int | None) -> bool:
    """Does the file at ``path`` carry this run's modification-time stamp?

    File systems keep nanoseconds, microseconds or whole seconds; the stamp is compared at the
    precision the file system kept.
    """
    if stamp_ns is None:
        return False
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return False
    if mtime == stamp_ns:
        return True
    if mtime % 1_000 == 0 and mtime // 1_000 == stamp_ns // 1_000:
        return True
    return mtime % 1_000_000_000 == 0 and mtime // 1_000_000_000 == stamp_ns // 1_000_000_000


def write_atomic(path: str, data: bytes | Sequence[bytes | memoryview], *, overwrite: bool,
                 stamp_ns: int | None = None) -> Outcome:
    """Write ``data`` (bytes, or pieces written in order) to ``path`` through a temporary file in
    the same folder.

    ``stamp_ns`` is the run's stamp: every output this run writes gets it as its modification
    time, so a retried or resumed partition of the same run recognises its own identical output
    (``IDENTICAL``, counted as written once) while an output left by an earlier run is
    ``EXISTS`` unless ``overwrite`` (deid: "already exists, overwrite set to False").
    """
    parts: Sequence[bytes | memoryview] = \
        (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if os.path.lexists(path):
        if _same_content(path, parts) and (overwrite or _stamped(path, stamp_ns)):
            return Outcome.IDENTICAL
        if not overwrite:
            return Outcome.EXISTS
    folder = os.path.dirname(path)
    tmp = os.path.join(folder, f"{TMP_MARKER}{secrets.token_hex(8)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:  # the shard folder is new (first try: most are there on big runs)
        os.makedirs(folder, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            for part in parts:
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view):]
            if stamp_ns is not None:
                os.utime(fd if _UTIME_FD else tmp, ns=(stamp_ns, stamp_ns))
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                if _same_content(path, parts) and _stamped(path, stamp_ns):
                    return Outcome.IDENTICAL
                return Outcome.EXISTS
    finally:
        with contextlib.suppress(FileNotFoundError):  # gone if os.replace moved it
            os.unlink(tmp)
    return Outcome.WRITTEN

"""Reading one input entry, safely: classify what it is, read it as deid would, or say why not.

Runs on workers; pure functions, no dask, no process-wide state.

* :func:`classify_entry` takes a path found by :mod:`deid_batch.stages.discover` and returns ``None`` for a
  regular file worth reading, or ``(Status, Reason, message)`` for an entry that gets its manifest
  row without being read (symlink to a folder, FIFO, socket, device, broken or looping symlink,
  zero-byte or unreadable file).
* :func:`read_dataset` reads a file as deid's ``dcmread(force=True)`` does (files without the
  128-byte preamble are read), but turns every way a file can be bad into a
  :class:`~deid_batch.errors.DatasetError` with a :class:`~deid_batch.schemas.Reason` code:
  ``empty``, ``not-dicom``, ``truncated``, ``no-pixel-data``, ``dicomdir``, ``unreadable``,
  ``not-regular``. :func:`status_for` gives the manifest status of a reason (``skipped`` for
  ``dicomdir``, ``not-regular`` and ``no-pixel-data``, ``failed`` otherwise).

pydicom with ``force=True`` "succeeds" on text, PNG and random bytes and silently returns short
values for truncated files; the checks here catch both:

* **not DICOM**: no file meta group and neither SOPClassUID nor SOPInstanceUID at the top level,
  unless the file is a **bare dataset**: at least two elements, every one a standard
  (dictionary) element, a generic group length or a private element under its creator, parsed to
  the end of the file (or up to pixel data that fits in it). Old modalities and some exports write
  such files and deid reads them; junk (text, zip, gz, ICC profiles, PNG, random bytes)
  force-parses into one or two unknown elements and stays ``not-dicom``;
* **truncated**, only when the bytes prove a cut: an element's value is shorter than its declared
  length, the file ends inside an element header, inside the file meta, right after the file meta
  (no data set), or inside a (native or encapsulated) PixelData element. The PixelData check
  compares the declared length with the file size (native) or walks the item headers
  (encapsulated), so a ``stop_before_pixels`` read detects truncated pixel data without reading it;
* **no pixel data**: an image storage SOP class (:func:`is_image_storage`) whose data set ends
  without PixelData / FloatPixelData / DoubleFloatPixelData. The bytes cannot tell a complete
  header-only object from a file cut exactly at an element boundary, so it gets its own reason,
  ``no-pixel-data`` (status ``skipped``), unless the caller passes ``allow_no_pixel_data=True``
  (scan does: the headers are readable; apply does when the user opts in) and then checks
  :func:`lacks_pixel_data` itself.

Blind spot: a cut exactly at an element boundary of a data set that is not an image storage SOP
class (or before its SOP UIDs) reads as a shorter, complete data set.

Messages say what is wrong with the file; they contain no header value and no path (PACS exports
are often foldered by patient name: the path is the caller's to show, e.g. in the manifest's
``source`` column, never repeated in a reason).
"""

from __future__ import annotations

import errno
import io
import os
import stat
import struct
import zlib
from collections.abc import Iterable
from typing import IO, Any, BinaryIO, cast

import pydicom
from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import dictionary_has_tag, get_entry
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.filereader import read_dataset as _pydicom_read_dataset
from pydicom.tag import BaseTag, Tag

from deid_batch.errors import DatasetError
from deid_batch.schemas import Reason, Status

__all__ = [
    "DICOMDIR_SOP_CLASS",
    "IMAGE_STORAGE_SOP_CLASSES",
    "NO_PIXEL_DATA_MESSAGE",
    "classify_entry",
    "is_image_storage",
    "lacks_pixel_data",
    "read_dataset",
    "read_entry",
    "sop_class_of",
    "status_for",
]

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
_DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian

_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})  # PixelData, Double/FloatPixelData
_SOP_TAGS = (0x00080016, 0x00080018)  # SOPClassUID, SOPInstanceUID
_DIRECTORY_RECORDS = 0x00041220  # DirectoryRecordSequence
_UNDEFINED = 0xFFFFFFFF
_ITEM, _SEQ_DELIMITER = 0xFFFEE000, 0xFFFEE0DD
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_SKIPPED = frozenset({Reason.DICOMDIR, Reason.NOT_REGULAR, Reason.NO_PIXEL_DATA})

#: Image storage SOP classes: every SOP class whose name in pydicom's UID dictionary contains
#: "Image Storage" (CT, MR, CR, DX, US, NM, PET, XA, RT Image, Secondary Capture, VL, WSI, ...,
#: retired ones included), plus the pixel-bearing classes named otherwise: Enhanced US Volume,
#: Parametric Map and Segmentation Storage. Their IODs require pixel data (RT Dose does not: a
#: dose object may hold only DVHs).
IMAGE_STORAGE_SOP_CLASSES: frozenset[str] = frozenset(
    [uid for uid, (name, kind, *_rest) in UID_dictionary.items()
     if kind == "SOP Class" and "Image Storage" in name]
    + ["1.2.840.10008.5.1.4.1.1.6.2", "1.2.840.10008.5.1.4.1.1.30", "1.2.840.10008.5.1.4.1.1.66.4"]
)
#: The ``no-pixel-data`` reason text (no header value): both readings of the bytes and the opt-in.
NO_PIXEL_DATA_MESSAGE = (
    "an image storage object without pixel data: either a complete header-only object or a file "
    "cut exactly at an element boundary (the bytes cannot tell which); not written unless "
    "--write-no-pixel-data (API write_no_pixel_data=True) is given"
)


def status_for(reason: Reason | str) -> Status:
    """The manifest status of an entry with this reason: ``skipped`` or ``failed``."""
    return Status.SKIPPED if Reason(reason) in _SKIPPED else Status.FAILED


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _os_problem(path: str, exc: OSError) -> tuple[Status, Reason, str]:
    """Classify an OSError raised while looking at ``path``; the message has no header value."""
    if exc.errno == errno.ELOOP:
        return Status.SKIPPED, Reason.NOT_REGULAR, "symlink loop, not followed"
    if isinstance(exc, PermissionError):
        return Status.FAILED, Reason.UNREADABLE, "permission denied"
    if isinstance(exc, FileNotFoundError):
        return Status.FAILED, Reason.UNREADABLE, "no longer exists"
    what = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    return Status.FAILED, Reason.UNREADABLE, f"cannot be read ({what})"


def classify_entry(path: str) -> tuple[Status, Reason, str] | None:
    """Return ``None`` for a regular, non-empty, readable-looking file, else its manifest verdict.

    Symlinks are looked through to a regular file (a symlink to a DICOM file is read), but a
    symlink to a folder is not followed, and a broken or looping symlink is ``skipped``.
    """
    try:
        st = os.lstat(path)
    except OSError as exc:
        return _os_problem(path, exc)
    if stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return Status.SKIPPED, Reason.NOT_REGULAR, "broken symlink"
        except OSError as exc:
            return _os_problem(path, exc)
        if stat.S_ISDIR(st.st_mode):
            return Status.SKIPPED, Reason.NOT_REGULAR, "symlink to a folder, not followed"
    if stat.S_ISDIR(st.st_mode):
        return Status.FAILED, Reason.UNREADABLE, "a folder that could not be listed"
    if not stat.S_ISREG(st.st_mode):
        return Status.SKIPPED, Reason.NOT_REGULAR, f"{_kind(st.st_mode)}, not read"
    if st.st_size == 0:
        return Status.FAILED, Reason.EMPTY, "empty file (0 bytes)"
    if not os.access(path, os.R_OK):
        return Status.FAILED, Reason.UNREADABLE, "permission denied"
    return None


_ENTRY_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))


def read_entry(path: str, limit: int | None = None
               ) -> tuple[tuple[Status, Reason, str] | None, bytes | None, int]:
    """:func:`classify_entry` and the read in one open: ``(verdict, data, size)``.

    A regular, non-empty file that is not a symlink is opened once and read (its first ``limit``
    bytes, or all of it): ``(None, bytes, file size)``. Anything else (a symlink, a folder, a
    FIFO, an empty, missing or unreadable file) gets :func:`classify_entry`'s verdict, with
    ``(None, None, -1)`` when that is ``None`` (a symlink to a regular file: read it as usual).
    """
    try:
        fd = os.open(path, _ENTRY_FLAGS)
    except OSError:
        return classify_entry(path), None, -1
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return classify_entry(path), None, -1
        want = st.st_size if limit is None else min(limit, st.st_size)
        pieces = [os.read(fd, want)]
        got = len(pieces[0])
        while got < want or limit is None:  # short reads; a whole read goes on to the end
            piece = os.read(fd, max(want - got, 1 << 16))
            if not piece:
                break
            pieces.append(piece)
            got += len(piece)
        return None, pieces[0] if len(pieces) == 1 else b"".join(pieces), st.st_size
    except OSError:
        return classify_entry(path), None, -1
    finally:
        os.close(fd)


def _fail(reason: Reason, path: str, what: str) -> DatasetError:
    return DatasetError(reason.value, what)


def _open(path: str) -> IO[bytes]:
    """Open read-only without blocking on a FIFO; reject anything but a non-empty regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    flags |= getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        _, reason, message = _os_problem(path, exc)
        raise DatasetError(reason.value, message) from None
    f = os.fdopen(fd, "rb")
    st = os.fstat(fd)
    problem = None
    if stat.S_ISDIR(st.st_mode):
        problem = _fail(Reason.UNREADABLE, path, "is a folder, not a file")
    elif not stat.S_ISREG(st.st_mode):
        problem = _fail(Reason.NOT_REGULAR, path, f"{_kind(st.st_mode)}, not read")
    elif st.st_size == 0:
        problem = _fail(Reason.EMPTY, path, "empty file (0 bytes)")
    if problem is not None:
        f.close()
        raise problem
    return f


def read_dataset(
    path: str,
    *,
    stop_before_pixels: bool = False,
    specific_tags: Iterable[Any] | None = None,
    allow_no_pixel_data: bool = False,
    data: bytes | None = None,
) -> FileDataset:
    """Read ``path`` read-only as deid does (``force=True``), or raise :class:`DatasetError`.

    Parameters
    ----------
    path : str
        The file to read.
    stop_before_pixels : bool
        Do not read the pixel data (its length is still checked against the file size).
    specific_tags : iterable of tags or keywords, optional
        Only read these elements (plus SOPClassUID, SOPInstanceUID and the character set).
    allow_no_pixel_data : bool
        Return an image storage object without pixel data instead of raising ``no-pixel-data``
        (checked only on whole reads: no ``specific_tags``).
    data : bytes, optional
        The file's bytes, already fetched (an object from :mod:`deid_batch.stages.storage`):
        parsed from memory, ``path`` only names it.

    Returns
    -------
    pydicom.dataset.FileDataset
        Elements stay raw (converted on access), as with ``pydicom.dcmread``.

    Raises
    ------
    DatasetError
        With ``reason`` one of ``empty``, ``not-dicom``, ``truncated``, ``no-pixel-data``,
        ``dicomdir``, ``unreadable``, ``not-regular``. Nothing else is raised for bad input.
    """
    if data is not None and not data:
        raise _fail(Reason.EMPTY, path, "empty file (0 bytes)")
    f = _open(path) if data is None else io.BytesIO(data)
    try:
        size = os.fstat(f.fileno()).st_size if data is None else len(data)
        ds = _parse(f, path, size, stop_before_pixels, specific_tags)
        if not allow_no_pixel_data and specific_tags is None and lacks_pixel_data(ds):
            raise _fail(Reason.NO_PIXEL_DATA, path, NO_PIXEL_DATA_MESSAGE)
        return ds
    except DatasetError:
        raise
    except OSError as exc:
        _, reason, message = _os_problem(path, exc)
        raise DatasetError(reason.value, message) from None
    except RecursionError:
        raise _fail(Reason.NOT_DICOM, path, "sequences nested too deeply to parse") from None
    except MemoryError:
        raise _fail(Reason.NOT_DICOM, path, "parsing needed more memory than available") from None
    except zlib.error:
        raise _fail(Reason.TRUNCATED, path, "deflated data set is incomplete or corrupt") from None
    except (struct.error, EOFError):  # a short read inside an element header
        if _has_file_meta_start(f):
            raise _fail(Reason.TRUNCATED, path, "file ends inside an element header") from None
        raise _fail(Reason.NOT_DICOM, path, "cannot be parsed as DICOM (ends mid-element)") from None
    except Exception as exc:  # pydicom raises many types on garbage; never let one escape
        raise _fail(
            Reason.NOT_DICOM, path, f"cannot be parsed as DICOM ({type(exc).__name__})"
        ) from None
    finally:
        f.close()


def sop_class_of(ds: Dataset) -> str | None:
    """The SOP class UID of ``ds`` (``SOPClassUID``, else the file meta's), read without conversion."""
    meta = getattr(ds, "file_meta", None)
    return _raw_uid(ds, 0x00080016) or (_raw_uid(meta, 0x00020002) if meta is not None else None)


def is_image_storage(sop_class: str | None) -> bool:
    """True for an image storage SOP class (:data:`IMAGE_STORAGE_SOP_CLASSES`)."""
    return sop_class in IMAGE_STORAGE_SOP_CLASSES


def lacks_pixel_data(ds: Dataset) -> bool:
    """True if ``ds`` is an image storage SOP class and has no pixel data element.

    Meaningful for a whole read; after a ``stop_before_pixels`` read the pixel data is not in the
    data set, but its presence was checked in the file (``_pixels_absent``) except for deflated
    files, where it cannot be told without inflating: those answer ``False``.
    """
    if not is_image_storage(sop_class_of(ds)):
        return False
    if getattr(ds, "_deid_batch_pixels_unknown", False):
        return False
    if any(t in ds for t in _PIXEL_TAGS):
        return False
    return bool(getattr(ds, "_deid_batch_pixels_absent", True))


def _known_tag(tag: int, ds: Dataset) -> bool:
    """A standard element (dictionary or repeater), a generic group length, or a private element
    whose private creator is in ``ds`` (or a private creator itself)."""
    group, element = tag >> 16, tag & 0xFFFF
    if group in (0x0000, 0x0002) or group == 0xFFFE:  # command / file meta / item tags
        return False
    if group & 1:
        if group <= 0x0007 or group == 0xFFFF:
            return False
        if 0x0010 <= element <= 0x00FF:
            return True
        return element >= 0x1000 and (group << 16 | element >> 8) in ds
    if element == 0x0000:
        return True
    if dictionary_has_tag(tag):
        return True
    try:
        get_entry(tag)  # repeaters such as (60xx,3000) OverlayData
    except KeyError:
        return False
    return True


def _is_bare_dataset(ds: Dataset) -> bool:
    """A data set without file meta or SOP UIDs that pydicom parsed into standard elements.

    Junk force-parses into one or two unknown elements; a real bare dataset has many known ones.
    Where the parse stopped is checked by the caller (an element cut short is ``truncated``, an
    element header cut short too; pixel data must fit in the file).
    """
    tags = [int(t) for t in ds.keys()]
    return len(tags) >= 2 and all(_known_tag(t, ds) for t in tags)


def _raw_uid(ds: Dataset, tag: int) -> str | None:
    """A UID's text without converting the element (conversion may log the value)."""
    if tag not in ds:
        return None
    value = ds.get_item(tag).value
    if isinstance(value, bytes):
        return value.rstrip(b"\0 ").decode("ascii", "replace")
    return str(value) if value is not None else None


def _has_file_meta_start(f: IO[bytes]) -> bool:
    """True if the file starts as a DICOM Part 10 file: 'DICM' then a group 0002 element."""
    f.seek(128)
    return f.read(6) == b"DICM\x02\x00"


def _tag_set(specific_tags: Iterable[Any] | None) -> list[BaseTag] | None:
    if specific_tags is None:
        return None
    tags = [Tag(t) for t in specific_tags]
    return tags + [BaseTag(t) for t in _SOP_TAGS]


def _parse(
    f: IO[bytes],
    path: str,
    size: int,
    stop_before_pixels: bool,
    specific_tags: Iterable[Any] | None,
) -> FileDataset:
    tags = _tag_set(specific_tags)
    ds = pydicom.dcmread(f, force=True, stop_before_pixels=True, specific_tags=tags)
    pos = f.tell()
    meta = ds.file_meta if getattr(ds, "file_meta", None) is not None else Dataset()
    if _raw_uid(meta, 0x00020002) == DICOMDIR_SOP_CLASS or _DIRECTORY_RECORDS in ds:
        raise _fail(Reason.DICOMDIR, path, "a DICOMDIR media directory, not an image; skipped")
    if not len(meta) and not any(t in ds for t in _SOP_TAGS) and not _is_bare_dataset(ds):
        raise _fail(Reason.NOT_DICOM, path, "no DICOM structure found (no file meta, no SOP UIDs, "
                    "not a data set of standard elements)")
    _check_meta_length(meta, path, size, len(ds))
    _check_not_only_charset(meta, ds, path)
    _check_values(meta, path)
    _check_values(ds, path)
    if _raw_uid(meta, 0x00020010) == _DEFLATED:
        return _finish_deflated(f, path, ds, stop_before_pixels, tags)
    if pos > size:
        raise _fail(Reason.TRUNCATED, path, "file ends inside an element value")
    implicit, little = ds.original_encoding
    pixel_tag = _check_pixel_element(f, path, pos, size, bool(implicit), bool(little))
    ds._deid_batch_pixels_absent = pixel_tag is None
    if pixel_tag is None:
        _check_tail(ds, path, size)
    elif not stop_before_pixels and (tags is None or pixel_tag in tags):
        f.seek(pos)
        rest = _pydicom_read_dataset(
            cast(BinaryIO, f), bool(implicit), bool(little), parent_encoding=ds._character_set,
            specific_tags=cast("list[BaseTag | int] | None", tags),
        )
        _check_values(rest, path)
        for tag in rest.keys():
            ds[tag] = rest.get_item(tag)
    ds.filename = path  # as pydicom.dcmread(path) sets it (the file object's name is its fd)
    return ds


def _check_meta_length(meta: Dataset, path: str, size: int, n_elements: int) -> None:
    """A file meta that claims more bytes than the file has, or no data set after it: truncated."""
    if not len(meta):
        return
    if 0x00020000 in meta:
        value = meta.get_item(0x00020000).value
        length = struct.unpack("<L", value)[0] if isinstance(value, bytes) and len(value) == 4 else value
        if isinstance(length, int) and 132 + 12 + length > size:
            raise _fail(Reason.TRUNCATED, path, "file ends inside the file meta information")
    if n_elements == 0:
        raise _fail(Reason.TRUNCATED, path, "file ends after the file meta information: no data set")


def _check_not_only_charset(meta: Dataset, ds: Dataset, path: str) -> None:
    """pydicom converts SpecificCharacterSet while reading, so a value cut short there escapes
    :func:`_check_values`; a data set of nothing but it (and group lengths) after a file meta is
    such a cut (the character set comes first)."""
    if len(meta) and all(int(t) == 0x00080005 or int(t) & 0xFFFF == 0 for t in ds.keys()):
        raise _fail(Reason.TRUNCATED, path, "file ends at the start of the data set")


def _finish_deflated(f: IO[bytes], path: str, ds: FileDataset, stop_before_pixels: bool,
                     tags: list[BaseTag] | None) -> FileDataset:
    """Deflated data sets: file offsets mean nothing after inflating, so the pixel data is checked
    by reading it (a truncated deflate stream already failed as ``truncated``)."""
    if not stop_before_pixels and (tags is None or any(t in tags for t in _PIXEL_TAGS)):
        f.seek(0)
        ds = pydicom.dcmread(f, force=True, specific_tags=tags)
        _check_values(ds, path)
    if stop_before_pixels:  # after inflating, the offset of the pixel data is unknown: not checked
        ds._deid_batch_pixels_unknown = True
    ds.filename = path
    return ds


def _check_values(ds: Dataset, path: str) -> None:
    """Raise ``truncated`` if a raw element's value is shorter than its declared length."""
    for tag in ds.keys():
        elem = ds.get_item(tag)
        if not isinstance(elem, RawDataElement) or elem.length == _UNDEFINED:
            continue
        if elem.value is not None and len(elem.value) < elem.length:
            raise _fail(Reason.TRUNCATED, path, f"file ends inside element {BaseTag(tag)}")


def _check_tail(ds: Dataset, path: str, size: int) -> None:
    """No pixel data was found: the file must not end inside an element header."""
    last = ds.get_item(max(ds.keys())) if len(ds) else None
    if isinstance(last, RawDataElement) and last.length != _UNDEFINED and last.value is not None:
        leftover = size - (last.value_tell + last.length)
        if 0 < leftover < 8:
            raise _fail(Reason.TRUNCATED, path, "file ends inside an element header")


def _check_pixel_element(
    f: IO[bytes], path: str, pos: int, size: int, implicit: bool, little: bool
) -> int | None:
    """Check the pixel data element at ``pos`` fits in the file; return its tag (None if absent)."""
    f.seek(pos)
    header = f.read(12)
    if len(header) < 8:
        if header:
            raise _fail(Reason.TRUNCATED, path, "file ends inside an element header")
        return None
    endian = "<" if little else ">"
    group, element = struct.unpack(endian + "HH", header[:4])
    tag: int = group << 16 | element
    if tag not in _PIXEL_TAGS:
        return None
    vr = header[4:6]
    if implicit or not (vr.isalpha() and vr.isupper()):  # some writers switch to implicit VR
        (length,), start = struct.unpack(endian + "L", header[4:8]), pos + 8
    elif vr in _LONG_VRS:
        if len(header) < 12:
            raise _fail(Reason.TRUNCATED, path, "file ends inside the pixel data header")
        (length,), start = struct.unpack(endian + "L", header[8:12]), pos + 12
    else:
        (length,), start = struct.unpack(endian + "H", header[6:8]), pos + 8
    if length != _UNDEFINED:
        if start + length > size:
            raise _fail(Reason.TRUNCATED, path, "file ends inside the pixel data")
        return tag
    _walk_fragments(f, path, start, size, endian)
    return tag


def _walk_fragments(f: IO[bytes], path: str, offset: int, size: int, endian: str) -> None:
    """Follow the item headers of encapsulated pixel data up to its sequence delimiter."""
    while True:
        f.seek(offset)
        header = f.read(8)
        if len(header) < 8:
            raise _fail(Reason.TRUNCATED, path, "file ends inside the encapsulated pixel data")
        group, element, length = struct.unpack(endian + "HHL", header)
        tag = group << 16 | element
        if tag == _SEQ_DELIMITER:
            return
        if tag != _ITEM or length == _UNDEFINED:
            raise _fail(Reason.TRUNCATED, path, "encapsulated pixel data is malformed")
        offset += 8 + length
        if offset > size:
            raise _fail(Reason.TRUNCATED, path, "file ends inside the encapsulated pixel data")

"""Factories for real DICOM files, good and hostile, built on disk.

``make_dicom`` writes one small valid DICOM instance with distinctive identifiers.
``make_hostile_archive`` writes every kind of bad input a real archive contains into a folder and
returns ``{absolute path: (expected Status, expected Reason or None)}``; good files expect
``(Status.WRITTEN, None)``.  Kinds the current process cannot produce (a permission-denied file when
running as root, a FIFO on a platform without ``mkfifo``) are left out of the returned mapping.

Also: ``tree_digest`` (checksums of a tree: contents, modes, mtimes, links), ``manifest_rows``
(a run's manifest as sorted comparable tuples) and ``permissions_enforced`` (does chmod 000 deny
reads here? not for root unless its DAC capabilities are dropped, e.g. ``setpriv
--inh-caps=-dac_override,-dac_read_search --bounding-set=-dac_override,-dac_read_search``).

Importable by every test module: ``from tests.hostile import make_hostile_archive``.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import zlib
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from deid_batch.schemas import Reason, Status

__all__ = [
    "GOOD",
    "PRIVATE_TRANSFER_SYNTAX",
    "UNWRITABLE_REASONS",
    "make_implicit",
    "pixel_data_offset_bytes",
    "build_dataset",
    "make_dicom",
    "make_hostile_archive",
    "make_png",
    "pixel_data_offset",
]

GOOD = (Status.WRITTEN, None)
#: what the pipeline may report for ``unwritable.dcm`` (conversion or write failure)
UNWRITABLE_REASONS = frozenset({Reason.WRITE_ERROR, Reason.DEID_ERROR})
_UID_ROOT = "1.2.826.0.1.3680043.10.1234."  # a test-only root
PRIVATE_TRANSFER_SYNTAX = _UID_ROOT + "99"


def _uid(name: str, i: int) -> str:
    return generate_uid(prefix=_UID_ROOT, entropy_srcs=[name, str(i)])


def build_dataset(i: int = 0, *, rows: int = 8, columns: int = 8, name: str = "") -> Dataset:
    """A small CT image with distinctive, searchable identifiers (all derived from ``i``)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = _uid("sop", i)
    ds.StudyInstanceUID = _uid("study", i // 10)
    ds.SeriesInstanceUID = _uid("series", i // 5)
    ds.FrameOfReferenceUID = _uid("for", i // 10)
    ds.PatientName = name or f"Zyxwvut^Qwertyname{i:05d}"
    ds.PatientID = f"PIDXQ{i:07d}"
    ds.PatientBirthDate = f"19{(i % 80) + 10:02d}0{(i % 9) + 1}1{(i % 9)}"
    ds.StudyDate = "20230417"
    ds.StudyTime = "101500"
    ds.SeriesNumber = 1
    ds.AccessionNumber = f"ACCQX{i:06d}"
    ds.StudyID = f"STQ{i:05d}"
    ds.InstitutionName = "Hospital Of Testopolis"
    ds.ReferringPhysicianName = f"Refdoc^Kappaname{i:04d}"
    ds.Modality = "CT"
    ds.InstanceNumber = i
    ds.RequestAttributesSequence = Sequence([Dataset()])
    ds.RequestAttributesSequence[0].AccessionNumber = f"ACCQX{i:06d}"
    ds.RequestAttributesSequence[0].RequestedProcedureID = f"RPQ{i:06d}"
    ds.add_new(0x00090010, "LO", "ACME PRIVATE")
    ds.add_new(0x00091001, "LO", f"PIDXQ{i:07d}")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((i + k) % 251 for k in range(rows * columns * 2))
    return ds


def _file_meta(ds: Dataset, ts: str = ExplicitVRLittleEndian) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    return meta


def make_dicom(
    path: str | os.PathLike[str],
    i: int = 0,
    *,
    preamble: bool = True,
    dataset: Dataset | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> Path:
    """Write one valid DICOM file (``preamble=False``: no 128-byte preamble, no file meta)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = dataset if dataset is not None else build_dataset(i)
    if preamble:
        ds.file_meta = _file_meta(ds, transfer_syntax)
        ds.preamble = b"\0" * 128
        if transfer_syntax == PRIVATE_TRANSFER_SYNTAX:  # pydicom needs the encoding spelled out
            pydicom.dcmwrite(path, ds, implicit_vr=False, little_endian=True)
        else:
            pydicom.dcmwrite(path, ds, enforce_file_format=True)
    else:
        # A bare dataset (implicit VR little endian), no preamble, no 'DICM', no file meta:
        # what old modalities and some PACS exports write. deid reads it with force=True.
        pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True)
    return path


def pixel_data_offset(path: str | os.PathLike[str]) -> int:
    """Byte offset of the PixelData element's tag in an explicit VR file (for truncation)."""
    data = Path(path).read_bytes()
    return data.rindex(b"\xe0\x7f\x10\x00")


def make_png(path: str | os.PathLike[str]) -> Path:
    """A real 2x2 grey PNG image."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\x00" + bytes([0x80, 0x40]) for _ in range(2))
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    path = Path(path)
    path.write_bytes(png)
    return path


def _make_dicomdir(path: Path, member: Path) -> Path:
    """A real DICOMDIR written by pydicom.fileset, referencing one instance."""
    from pydicom.fileset import FileSet

    fs = FileSet()
    fs.add(pydicom.dcmread(member))
    staging = path.parent / "_dicomdir_staging"
    fs.write(staging)
    data = (staging / "DICOMDIR").read_bytes()
    # keep only the DICOMDIR itself; the staged copy of the instance is removed
    for p in sorted(staging.rglob("*"), reverse=True):
        p.unlink() if not p.is_dir() else p.rmdir()
    staging.rmdir()
    path.write_bytes(data)
    return path


def _deep_sequence(depth: int) -> Dataset:
    ds = build_dataset(900)
    inner = Dataset()
    inner.CodeValue = "LEAF"
    for _ in range(depth):
        outer = Dataset()
        outer.ContentSequence = Sequence([inner])
        inner = outer
    ds.ContentSequence = inner.ContentSequence
    return ds


def _raw_deep_sequence(depth: int) -> bytes:
    """ContentSequence nested ``depth`` levels, undefined lengths, explicit VR little endian bytes.

    pydicom cannot build this itself (writing a sequence nested ~250 levels hangs or exhausts
    memory), so the bytes are assembled by hand.
    """
    seq_head = struct.pack("<HH2s2xL", 0x0040, 0xA730, b"SQ", 0xFFFFFFFF)
    item_head = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
    seq_end = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    leaf = struct.pack("<HH2sH", 0x0008, 0x0100, b"SH", 4) + b"LEAF"
    return (seq_head + item_head) * depth + leaf + (item_end + seq_end) * depth


def _very_deep(path: Path, depth: int = 1000) -> Path:
    """A valid file with a 1000-level nested sequence inserted before its pixel data."""
    data = make_dicom(path, 904).read_bytes()
    at = pixel_data_offset_bytes(data)
    path.write_bytes(data[:at] + _raw_deep_sequence(depth) + data[at:])
    return path


def _large_sequence(items: int) -> Dataset:
    ds = build_dataset(901)
    seq = []
    for k in range(items):
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = f"{_UID_ROOT}9.{k}"
        seq.append(item)
    ds.ReferencedImageSequence = Sequence(seq)
    return ds


def _unwritable(path: Path) -> Path:
    """A file that reads, but whose SOPClassUID (needed by every output) has the unknown VR 'ZZ'.

    pydicom reads it (an unknown VR is taken as explicit with a 2-byte length) and can copy the raw
    bytes, but converting the value raises ``NotImplementedError`` ("Unknown Value Representation"),
    so the file fails once the element is used (to build the file meta) or written after
    conversion: a ``failed`` row with reason ``write-error`` (``deid-error`` is also acceptable,
    see :data:`UNWRITABLE_REASONS`), never a crash.
    """
    make_dicom(path, 902)
    data = bytearray(path.read_bytes())
    start = data.index(b"\x08\x00\x16\x00UI", 132)  # the data set's SOPClassUID, after the meta
    data[start + 4 : start + 6] = b"ZZ"
    path.write_bytes(bytes(data))
    return path


def _rle_dataset(i: int) -> Dataset:
    ds = build_dataset(i)
    ds.file_meta = _file_meta(ds)
    ds.compress(RLELossless, encoding_plugin="pydicom")
    return ds


def make_hostile_archive(
    folder: str | os.PathLike[str],
    *,
    good: int = 6,
    copies: int = 1,
) -> dict[str, tuple[Status, Reason | None]]:
    """Write good files and every kind of hostile input under ``folder``.

    ``good`` valid files are spread over nested folders with repeated basenames; ``copies`` repeats
    every hostile kind (for a larger archive).  Returns ``{absolute path: (status, reason)}`` for
    every entry that :func:`deid_batch.discover.discover` will list.
    """
    root = Path(folder).absolute()
    root.mkdir(parents=True, exist_ok=True)
    expected: dict[str, tuple[Status, Reason | None]] = {}

    def put(p: Path, status: Status, reason: Reason | None) -> None:
        expected[str(p)] = (status, reason)

    for i in range(good):
        p = make_dicom(root / "good" / f"series{i % 3}" / f"dir{i // 3}" / "IM0001.dcm", i)
        put(p, *GOOD)

    rng = random.Random(1234)
    for c in range(copies):
        d = root / f"bad{c:03d}"
        d.mkdir()
        base = 1000 + 100 * c

        p = d / "empty.dcm"
        p.write_bytes(b"")
        put(p, Status.FAILED, Reason.EMPTY)

        src = make_dicom(d / "_tmp_full.dcm", base + 1)
        full = src.read_bytes()
        src.unlink()
        cut = pixel_data_offset_bytes(full)
        p = d / "truncated_header.dcm"
        p.write_bytes(full[: cut // 2])
        put(p, Status.FAILED, Reason.TRUNCATED)
        p = d / "truncated_pixels.dcm"
        p.write_bytes(full[: cut + 12 + (len(full) - cut - 12) // 2])
        put(p, Status.FAILED, Reason.TRUNCATED)

        rle = make_dicom(d / "_tmp_rle.dcm", base + 2, dataset=_rle_dataset(base + 2),
                         transfer_syntax=RLELossless)
        rle_bytes = rle.read_bytes()
        rle.unlink()
        p = d / "truncated_rle.dcm"
        p.write_bytes(rle_bytes[: len(rle_bytes) - 20])
        put(p, Status.FAILED, Reason.TRUNCATED)
        p = make_dicom(d / "rle_ok.dcm", base + 3, dataset=_rle_dataset(base + 3),
                       transfer_syntax=RLELossless)
        put(p, *GOOD)

        p = d / "notes.txt"
        p.write_text("Patient notes\nNothing to see here, this is plain text.\n" * 20)
        put(p, Status.FAILED, Reason.NOT_DICOM)
        p = d / "notes.dcm"  # text with a DICOM extension
        p.write_text("DICM? no. " * 50)
        put(p, Status.FAILED, Reason.NOT_DICOM)
        p = make_png(d / "image.png")
        put(p, Status.FAILED, Reason.NOT_DICOM)
        p = d / "random.bin"
        p.write_bytes(rng.randbytes(4096))
        put(p, Status.FAILED, Reason.NOT_DICOM)
        p = d / "random_with_magic.dcm"  # a 'DICM' marker followed by garbage
        p.write_bytes(b"\0" * 128 + b"DICM" + rng.randbytes(2048))
        put(p, Status.FAILED, Reason.NOT_DICOM)

        p = make_dicom(d / "no_preamble.dcm", base + 4, preamble=False)
        put(p, *GOOD)

        member = make_dicom(d / "_tmp_member.dcm", base + 5)
        p = _make_dicomdir(d / "DICOMDIR", member)
        member.unlink()
        put(p, Status.SKIPPED, Reason.DICOMDIR)

        p = make_dicom(d / "deep_sequence.dcm", dataset=_deep_sequence(200))
        put(p, *GOOD)
        p = _very_deep(d / "very_deep_sequence.dcm")  # pydicom's parser recursion gives up
        put(p, Status.FAILED, Reason.NOT_DICOM)
        p = make_dicom(d / "large_sequence.dcm", dataset=_large_sequence(10_000))
        put(p, *GOOD)
        p = _unwritable(d / "unwritable.dcm")
        put(p, Status.FAILED, Reason.WRITE_ERROR)

        p = make_dicom(d / "no_access.dcm", base + 6)
        os.chmod(p, 0)
        if os.access(p, os.R_OK):  # root reads anything: this kind cannot be produced here
            os.chmod(p, 0o644)
            p.unlink()
        else:
            put(p, Status.FAILED, Reason.UNREADABLE)

        target = make_dicom(d / "real" / "IM0001.dcm", base + 7)
        put(target, *GOOD)
        p = d / "link_to_file.dcm"
        p.symlink_to(target)
        put(p, *GOOD)
        p = d / "link_to_folder"
        p.symlink_to(d / "real", target_is_directory=True)
        put(p, Status.SKIPPED, Reason.NOT_REGULAR)
        p = d / "link_loop_a"
        p.symlink_to(d / "link_loop_b")
        (d / "link_loop_b").symlink_to(p)
        put(p, Status.SKIPPED, Reason.NOT_REGULAR)
        put(d / "link_loop_b", Status.SKIPPED, Reason.NOT_REGULAR)
        p = d / "link_self"
        p.symlink_to(p)
        put(p, Status.SKIPPED, Reason.NOT_REGULAR)
        p = d / "link_broken.dcm"
        p.symlink_to(d / "does-not-exist.dcm")
        put(p, Status.SKIPPED, Reason.NOT_REGULAR)

        if hasattr(os, "mkfifo"):
            p = d / "fifo"
            os.mkfifo(p)
            put(p, Status.SKIPPED, Reason.NOT_REGULAR)
        sock_path = d / "sock"
        if hasattr(socket, "AF_UNIX") and len(str(sock_path)) < 100:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.bind(str(sock_path))
                put(sock_path, Status.SKIPPED, Reason.NOT_REGULAR)
            except OSError:
                pass
            finally:
                s.close()
    return expected


def pixel_data_offset_bytes(data: bytes) -> int:
    """Byte offset of the (7FE0,0010) tag in an explicit VR little endian file's bytes."""
    return data.rindex(b"\xe0\x7f\x10\x00")


def make_implicit(path: Path, i: int) -> Path:
    """A valid file with preamble and file meta, implicit VR little endian."""
    return make_dicom(path, i, transfer_syntax=ImplicitVRLittleEndian)



# ------------------------------------------------------------------ helpers for the safety tests
def tree_digest(folder: str | os.PathLike[str]) -> dict[str, str]:
    """{relative path: sha256 of content (or 'link -> target', 'fifo', ...)} of every entry."""
    import hashlib

    root = Path(folder)
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if p.is_symlink():
                out[rel] = f"link -> {os.readlink(p)}"
            elif p.is_dir():
                out[rel] = f"dir {st.st_mode:o}"
            elif p.is_file():
                try:
                    out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() + f" {st.st_mode:o} {st.st_mtime_ns}"
                except PermissionError:
                    out[rel] = f"unreadable {st.st_mode:o} {st.st_mtime_ns}"
            else:
                out[rel] = f"special {st.st_mode:o}"
    return out


def manifest_rows(manifest_dir: str | os.PathLike[str], output_folder: str | None = None
                  ) -> list[tuple[str, str | None, str, str | None, tuple[str, ...]]]:
    """Sorted (source, output relative to output_folder, status, reason code, warnings) rows."""
    from deid_batch import read_manifest

    table = read_manifest(str(manifest_dir))
    rows = []
    for r in table.to_pylist():
        out = r["output"]
        if out is not None and output_folder is not None:
            out = os.path.relpath(out, output_folder)
        code = r["reason"].split(":", 1)[0] if r["reason"] else None
        rows.append((r["source"], out, r["status"], code, tuple(r["warnings"] or ())))
    return sorted(rows)


def permissions_enforced() -> bool:
    """Does chmod 000 deny this process reads? (Not for root with CAP_DAC_OVERRIDE.)"""
    import tempfile

    fd, probe = tempfile.mkstemp()
    os.close(fd)
    try:
        os.chmod(probe, 0)
        return not os.access(probe, os.R_OK)
    finally:
        os.chmod(probe, 0o600)
        os.unlink(probe)

"""read_dataset / classify_entry on real hostile files: every bad file gets a reason, never a crash."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pydicom
import pytest

from deid_batch.dicom.reading import classify_entry, read_dataset, read_entry, status_for
from deid_batch.errors import DatasetError
from deid_batch.schemas import Reason, Status
from tests.hostile import (
    build_dataset,
    make_dicom,
    make_hostile_archive,
    make_implicit,
    make_png,
    permissions_enforced,
    pixel_data_offset,
)


def verdict(path: str, stop_before_pixels: bool) -> tuple[Status, Reason | None]:
    """What the pipeline will decide for one entry, from classify_entry then read_dataset."""
    found = classify_entry(path)
    if found is not None:
        return found[0], found[1]
    try:
        read_dataset(path, stop_before_pixels=stop_before_pixels)
    except DatasetError as exc:
        return status_for(exc.reason), Reason(exc.reason)
    return Status.WRITTEN, None


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Status, Reason | None]]:
    return make_hostile_archive(tmp_path_factory.mktemp("hostile") / "in")


@pytest.mark.parametrize("stop_before_pixels", [True, False])
def test_every_hostile_kind_gets_its_expected_reason(archive, stop_before_pixels: bool) -> None:
    for path, (status, reason) in archive.items():
        if reason is Reason.WRITE_ERROR:  # reads fine; fails only when written back
            status, reason = Status.WRITTEN, None
        assert verdict(path, stop_before_pixels) == (status, reason), path


def test_classify_entry_passes_regular_files_and_symlinks_to_files(tmp_path: Path) -> None:
    f = make_dicom(tmp_path / "a.dcm")
    (tmp_path / "l.dcm").symlink_to(f)
    assert classify_entry(str(f)) is None
    assert classify_entry(str(tmp_path / "l.dcm")) is None


def _special_entries(folder: Path) -> None:
    """A folder, symlinks to a folder, to themselves and to nothing, an empty file, a FIFO."""
    (folder / "folder").mkdir()
    (folder / "to_folder").symlink_to(folder / "folder", target_is_directory=True)
    (folder / "loop").symlink_to(folder / "loop")
    (folder / "broken").symlink_to(folder / "nothing")
    (folder / "empty").write_bytes(b"")
    os.mkfifo(folder / "fifo")


def test_classify_entry_on_special_entries(tmp_path: Path) -> None:
    _special_entries(tmp_path)
    got = {p.name: classify_entry(str(p))[:2] for p in tmp_path.iterdir()}  # type: ignore[index]
    assert got == {
        "folder": (Status.FAILED, Reason.UNREADABLE),
        "to_folder": (Status.SKIPPED, Reason.NOT_REGULAR),
        "loop": (Status.SKIPPED, Reason.NOT_REGULAR),
        "broken": (Status.SKIPPED, Reason.NOT_REGULAR),
        "empty": (Status.FAILED, Reason.EMPTY),
        "fifo": (Status.SKIPPED, Reason.NOT_REGULAR),
    }
    assert classify_entry(str(tmp_path / "vanished")) == (
        Status.FAILED, Reason.UNREADABLE, "no longer exists"
    )


def test_read_entry_gives_classify_entrys_verdicts_and_reads_regular_files_in_one_open(tmp_path: Path) -> None:
    """scan and apply check an entry and read it with one open: the verdicts are classify_entry's
    for every kind of entry; only a regular file that is not a symlink is read there."""
    f = make_dicom(tmp_path / "a.dcm")
    whole = f.read_bytes()
    (tmp_path / "to_file").symlink_to(f)
    _special_entries(tmp_path)
    for p in [*tmp_path.iterdir(), tmp_path / "vanished"]:
        verdict, data, size = read_entry(str(p))
        assert verdict == classify_entry(str(p)), p.name
        if p == f:
            assert (data, size) == (whole, len(whole))
        else:
            assert (data, size) == (None, -1), p.name  # read the usual way, or not at all
    assert read_entry(str(f), 100) == (None, whole[:100], len(whole))
    assert read_entry(str(f), 10 * len(whole)) == (None, whole, len(whole))
    assert f.read_bytes() == whole


def test_read_dataset_never_blocks_on_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(DatasetError) as caught:
        read_dataset(str(tmp_path / "fifo"))
    assert caught.value.reason == Reason.NOT_REGULAR


def test_file_without_preamble_reads_like_deid_force(tmp_path: Path) -> None:
    p = make_dicom(tmp_path / "bare.dcm", 3, preamble=False)
    assert not p.read_bytes()[128:132] == b"DICM"
    ds = read_dataset(str(p))
    assert ds.PatientID == build_dataset(3).PatientID
    assert ds.PixelData == build_dataset(3).PixelData


@pytest.mark.parametrize("maker", [make_dicom, make_implicit])
def test_full_read_equals_pydicom(tmp_path: Path, maker) -> None:
    p = maker(tmp_path / "a.dcm", 4)
    ours, theirs = read_dataset(str(p)), pydicom.dcmread(str(p))
    assert ours == theirs
    assert ours.filename == theirs.filename == str(p)
    assert ours.file_meta == theirs.file_meta
    head = read_dataset(str(p), stop_before_pixels=True)
    assert "PixelData" not in head and head.PatientID == theirs.PatientID
    out1, out2 = io.BytesIO(), io.BytesIO()
    ours.save_as(out1)
    theirs.save_as(out2)
    assert out1.getvalue() == out2.getvalue()


def test_specific_tags_still_detect_not_dicom_and_truncation(tmp_path: Path) -> None:
    p = make_dicom(tmp_path / "a.dcm", 5)
    ds = read_dataset(str(p), specific_tags=["PatientID"], stop_before_pixels=True)
    assert ds.PatientID == build_dataset(5).PatientID and "PatientName" not in ds
    data = p.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: pixel_data_offset(p) + 20])
    with pytest.raises(DatasetError) as caught:
        read_dataset(str(cut), specific_tags=["PatientID"], stop_before_pixels=True)
    assert caught.value.reason == Reason.TRUNCATED
    text = tmp_path / "t.txt"
    text.write_text("hello " * 100)
    with pytest.raises(DatasetError) as caught:
        read_dataset(str(text), specific_tags=["PatientID"])
    assert caught.value.reason == Reason.NOT_DICOM


def test_truncation_anywhere_is_truncated_or_not_dicom_never_a_crash(tmp_path: Path) -> None:
    data = make_dicom(tmp_path / "a.dcm", 6).read_bytes()
    full = pydicom.dcmread(io.BytesIO(data))
    p = tmp_path / "cut.dcm"
    boundary_cuts = 0
    for end in range(1, len(data) - 1, 7):
        p.write_bytes(data[:end])
        for sbp in (True, False):
            try:
                ds = read_dataset(str(p), stop_before_pixels=sbp)
            except DatasetError as exc:
                if exc.reason == Reason.NO_PIXEL_DATA:
                    # a CT image cut exactly at an element boundary after its SOP UIDs: the bytes
                    # read as a shorter, complete data set, so it is not called truncated, and it
                    # is not written by default (the same answer as for a header-only object)
                    part = read_dataset(str(p), stop_before_pixels=sbp, allow_no_pixel_data=True)
                    assert list(part.keys()) == list(full.keys())[: len(part)], end
                    assert all(part[t].value == full[t].value for t in part.keys()), end
                    boundary_cuts += 1
                    continue
                assert Reason(exc.reason) in {Reason.TRUNCATED, Reason.NOT_DICOM}, (end, str(exc))
                if end > 400:  # past the file meta and SOP UIDs: recognisably a cut DICOM file
                    assert exc.reason == Reason.TRUNCATED, end
                continue
            # the one blind spot: a cut at (or inside the 8-byte header after) an element boundary
            # before the SOP UIDs looks like a shorter, complete fragment
            assert end <= 400 and "SOPClassUID" not in ds and "SOPInstanceUID" not in ds, end
    assert boundary_cuts  # the sweep did hit element boundaries


def test_random_bytes_never_escape_as_anything_but_dataset_error(tmp_path: Path) -> None:
    rng = random.Random(7)
    p = tmp_path / "r.bin"
    valid = make_dicom(tmp_path / "v.dcm", 7).read_bytes()
    for k in range(150):
        if k % 2:
            blob = rng.randbytes(rng.randrange(1, 3000))
        else:  # a valid file with random bytes flipped: the nastiest kind of garbage
            blob = bytearray(valid)
            for _ in range(rng.randrange(1, 20)):
                blob[rng.randrange(len(blob))] = rng.randrange(256)
            blob = bytes(blob)
        p.write_bytes(blob)
        for sbp in (True, False):
            try:
                read_dataset(str(p), stop_before_pixels=sbp)
            except DatasetError as exc:
                assert Reason(exc.reason) in set(Reason)


def test_png_and_text_are_not_dicom(tmp_path: Path) -> None:
    png = make_png(tmp_path / "x.png")
    txt = tmp_path / "x.dcm"
    txt.write_text("0008,0016 looks like a tag but is text\n" * 10)
    for p in (png, txt):
        with pytest.raises(DatasetError) as caught:
            read_dataset(str(p))
        assert caught.value.reason == Reason.NOT_DICOM


def test_messages_carry_no_path_and_no_header_value(archive) -> None:
    """Reasons end up in the manifest and logs; inputs are often foldered by patient name."""
    values = {str(e.value) for e in pydicom.dcmread(next(p for p, e in archive.items() if e[1] is None)).iterall()
              if e.VR in ("PN", "LO", "SH", "DA", "UI") and len(str(e.value)) > 3}
    assert values
    for path, (_, reason) in archive.items():
        found = classify_entry(path)
        message = found[2] if found else ""
        if found is None:
            try:
                read_dataset(path)
            except DatasetError as exc:
                message = str(exc)
        if reason not in (None, Reason.WRITE_ERROR):
            assert message
        assert os.path.dirname(path) not in message
        assert not [v for v in values if v in message]


def test_deep_and_large_sequences_read_walk_and_write_back(archive) -> None:
    for name in ("deep_sequence.dcm", "large_sequence.dcm"):
        path = next(p for p in archive if p.endswith(name))
        ds = read_dataset(path)
        assert sum(1 for _ in ds.iterall()) > 200
        first, second = io.BytesIO(), io.BytesIO()
        ds.save_as(first)
        read_dataset_from_bytes = pydicom.dcmread(io.BytesIO(first.getvalue()))
        read_dataset_from_bytes.save_as(second)
        assert first.getvalue() == second.getvalue()


def test_unwritable_file_reads_but_its_sop_class_cannot_be_used(archive) -> None:
    path = next(p for p in archive if p.endswith("unwritable.dcm"))
    ds = read_dataset(path)
    with pytest.raises(NotImplementedError):
        ds.SOPClassUID  # noqa: B018
    with pytest.raises(NotImplementedError):
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID


@pytest.mark.skipif(not permissions_enforced(), reason="chmod 000 does not deny reads here (root)")
def test_permission_denied_is_unreadable(tmp_path: Path) -> None:
    p = make_dicom(tmp_path / "a.dcm")
    p.chmod(0)
    try:
        assert classify_entry(str(p))[:2] == (Status.FAILED, Reason.UNREADABLE)  # type: ignore[index]
        with pytest.raises(DatasetError) as caught:
            read_dataset(str(p))
        assert caught.value.reason == Reason.UNREADABLE
    finally:
        p.chmod(0o644)


def test_permission_denied_on_open_is_unreadable_even_as_root(tmp_path: Path, monkeypatch) -> None:
    p = make_dicom(tmp_path / "a.dcm")

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(DatasetError) as caught:
        read_dataset(str(p))
    assert caught.value.reason == Reason.UNREADABLE
    assert "permission denied" in str(caught.value)


def test_io_error_while_reading_is_unreadable(tmp_path: Path, monkeypatch) -> None:
    p = make_dicom(tmp_path / "a.dcm")

    def broken(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(pydicom, "dcmread", broken)
    with pytest.raises(DatasetError) as caught:
        read_dataset(str(p))
    assert caught.value.reason == Reason.UNREADABLE


def test_status_for_reasons() -> None:
    assert status_for(Reason.DICOMDIR) is Status.SKIPPED
    assert status_for("not-regular") is Status.SKIPPED
    assert status_for(Reason.TRUNCATED) is Status.FAILED


@pytest.mark.parametrize("ts", ["1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"])
def test_deflated_and_big_endian_files_read_like_pydicom_and_truncation_is_caught(tmp_path: Path, ts) -> None:
    p = make_dicom(tmp_path / "a.dcm", 8, transfer_syntax=ts)
    assert read_dataset(str(p)) == pydicom.dcmread(str(p))
    assert "PixelData" not in read_dataset(str(p), stop_before_pixels=True)
    data = p.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) - 40])
    for sbp in (False, True):
        with pytest.raises(DatasetError) as caught:
            read_dataset(str(cut), stop_before_pixels=sbp)
        assert caught.value.reason == Reason.TRUNCATED


def test_pydicom_and_deid_sample_files_read_identically_and_only_truncated_ones_fail() -> None:
    """No good file lost: every sample file pydicom reads as an instance, we read the same way."""
    import glob

    roots = [os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")]
    try:
        import deid_data

        roots.append(os.path.dirname(deid_data.__file__))
    except ImportError:
        pass
    rejected = set()
    header_only = set()
    for root in roots:
        for p in sorted(glob.glob(root + "/**/*", recursive=True)):
            if not os.path.isfile(p) or p.endswith((".py", ".pyc")):
                continue
            try:
                ours = read_dataset(p)
            except DatasetError as exc:
                if exc.reason == Reason.NO_PIXEL_DATA:  # read, with the opt-in, exactly as pydicom
                    ours = read_dataset(p, allow_no_pixel_data=True)
                    header_only.add(os.path.relpath(p, root).split(os.sep)[0])
                else:
                    if exc.reason != Reason.DICOMDIR:
                        ref = pydicom.dcmread(p, force=True)
                        if "SOPInstanceUID" in ref or len(ref.file_meta or ()):
                            rejected.add((os.path.basename(p), exc.reason))
                    continue
            ref = pydicom.dcmread(p, force=True)
            assert ours == ref and ours.file_meta == ref.file_meta, p
    assert rejected <= {("MR_truncated.dcm", "truncated"), ("rtplan_truncated.dcm", "truncated")}
    # header-only image storage objects shipped by pydicom: its DICOMDIR test set (CT/MR images
    # without pixels) and three element-level test files (CT/MR SOP classes, no pixel data)
    assert header_only == {"dicomdirtests", "priv_SQ.dcm", "no_meta_group_length.dcm", "UN_sequence.dcm"}

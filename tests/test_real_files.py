"""Real files, as other tools write them (issue 8 item 4).

Big endian without file meta, inputs without file meta, header-only images and element-boundary
cuts, bare datasets without SOP UIDs, junk that force-parses, and values that cannot be encoded.
Every file is written by pydicom (or shipped by pydicom) the way other software writes them.
"""

from __future__ import annotations

import gzip
import io
import random
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, MRImageStorage

from deid_batch.api import read_manifest, run_apply, run_scan
from deid_batch.dicom.reading import NO_PIXEL_DATA_MESSAGE, is_image_storage, read_dataset
from deid_batch.dicom.writing import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    unencodable_element,
)
from deid_batch.errors import DatasetError
from deid_batch.schemas import Reason
from deid_batch.stages.discover import discover
from deid_batch.stages.pipeline import open_executor
from deid_batch.stages.scan import ScanConfig
from tests.hostile import build_dataset, make_dicom, make_hostile_archive, make_png

KEEP_HEADERS = {"format": "dicom", "header": [{"action": "REPLACE", "field": "PatientName", "value": "anon"}]}
_ROOT = "1.2.826.0.1.3680043.10.1234.8."
_INPUT_IMPLEMENTATION_UIDS = ("1.2.276.0.7230010.3.0.3.6.3", "1.2.826.0.1.3680043.8.498.1")


def _rows(report) -> dict[str, dict]:
    return {r["source"]: r for r in read_manifest(report.manifest).to_pylist()}


# ---------------------------------------------------------------------------- input factories
def big_endian_without_meta(path: Path) -> Path:
    """pydicom's MR_small_bigendian.dcm written as other tools write it: no preamble, no meta."""
    ds = pydicom.dcmread(get_testdata_file("MR_small_bigendian.dcm"))
    del ds.file_meta
    ds.preamble = None
    ds.save_as(path, enforce_file_format=False, implicit_vr=False, little_endian=False)
    assert path.read_bytes()[:4] == b"\x00\x08\x00\x08"  # big endian (0008,0008), no preamble
    return path


def header_only_mr(i: int = 0) -> Dataset:
    """An MR image's header with every image attribute, and no pixel data."""
    ds = build_dataset(500 + i)
    ds.SOPClassUID = MRImageStorage
    ds.Modality = "MR"
    del ds.PixelData
    return ds


def mr_with_pixels(path: Path, i: int = 0) -> Path:
    ds = header_only_mr(i)
    ds.PixelData = bytes(range(128))
    return make_dicom(path, dataset=ds)


def cut_after_dates(src: Path, dst: Path) -> Path:
    """The MR cut exactly at the element boundary after its last date (StudyDate, StudyTime)."""
    raw = pydicom.dcmread(src)
    elem = raw.get_item(0x00080030)  # StudyTime, right after StudyDate
    end = elem.value_tell + elem.length
    data = src.read_bytes()
    dst.write_bytes(data[:end])
    return dst


def bare_dataset(path: Path, i: int = 0, *, pixels: bool = True) -> Path:
    """Implicit VR little endian elements written raw: no preamble, no file meta, no SOP UIDs."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.StudyDate = "20010203"
    ds.Modality = "CT"
    ds.PatientName = f"Bare^Qwertyname{i:03d}"
    ds.PatientID = f"BAREPID{i:05d}"
    ds.PatientBirthDate = "19700101"
    ds.SliceThickness = "1.5"
    ds.add_new(0x00290010, "LO", "ACME BARE")
    ds.add_new(0x00291001, "LO", "private note")
    ds.Rows, ds.Columns = 4, 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    if pixels:
        ds.PixelData = bytes(range(32))
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=True, little_endian=True)
    path.write_bytes(buf.getvalue())
    assert b"DICM" not in path.read_bytes()[:132]
    return path


def junk_files(folder: Path) -> list[Path]:
    """Text, zip, gz, an ICC profile, PNG and random bytes: none is DICOM."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    p = folder / "notes.txt"
    p.write_text("Patient notes: nothing to see here.\n" * 30)
    out.append(p)
    p = folder / "export.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("a.txt", "hello " * 200)
    out.append(p)
    p = folder / "series.gz"
    p.write_bytes(gzip.compress(b"some data " * 500))
    out.append(p)
    p = folder / "profile.icc"
    p.write_bytes(Path(get_testdata_file("crayons.icc")).read_bytes())
    out.append(p)
    out.append(make_png(folder / "image.png"))
    p = folder / "random.bin"
    p.write_bytes(random.Random(3).randbytes(5000))
    out.append(p)
    p = folder / "zipMR.gz"  # shipped by pydicom: a gzipped DICOM file
    p.write_bytes(Path(get_testdata_file("zipMR.gz")).read_bytes())
    out.append(p)
    return out


# ---------------------------------------------------------------------------- big endian
def test_big_endian_without_meta_is_written_big_endian_with_the_same_elements_and_pixels(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    src = big_endian_without_meta(tmp_path / "in" / "be.dcm")
    report = run_apply([str(src)], recipe=KEEP_HEADERS, base="none", output_folder=str(tmp_path / "out"),
                       remove_private=False)
    row = _rows(report)[str(src)]
    assert row["status"] == "written", row["reason"]
    out = pydicom.dcmread(row["output"])  # no force: a Part 10 file
    assert out.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    assert out.original_encoding == (False, False)
    ref = pydicom.dcmread(src, force=True)
    assert [e.tag for e in out] == [e.tag for e in ref]
    for elem in ref:
        if elem.keyword != "PatientName":
            assert out[elem.tag].value == elem.value, elem.keyword
    assert out.PatientName == "anon"
    ref.file_meta = FileMetaDataset()
    ref.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    assert np.array_equal(out.pixel_array, ref.pixel_array)
    # the pixels are the ones pydicom's little endian twin of this file decodes to
    assert np.array_equal(out.pixel_array, pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array)


def test_big_endian_with_meta_stays_big_endian_too(tmp_path: Path) -> None:
    src = Path(get_testdata_file("MR_small_bigendian.dcm"))
    report = run_apply([str(src)], output_folder=str(tmp_path / "out"))
    row = _rows(report)[str(src)]
    out = pydicom.dcmread(row["output"])
    assert out.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    assert np.array_equal(out.pixel_array, pydicom.dcmread(src).pixel_array)


# ---------------------------------------------------------------------------- complete file meta
def _inputs_with_and_without_meta(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [
        make_dicom(folder / "with_meta.dcm", 1),
        make_dicom(folder / "no_preamble_no_meta.dcm", 2, preamble=False),
        big_endian_without_meta(folder / "be_no_meta.dcm"),
        bare_dataset(folder / "bare.dcm", 1),
        bare_dataset(folder / "bare_no_pixels.dcm", 2, pixels=False),
        make_dicom(folder / "deflated.dcm", 3, transfer_syntax="1.2.840.10008.1.2.1.99"),
    ]
    for name in ("ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm", "rtstruct.dcm", "MR_small_bigendian.dcm",
                 "rtdose.dcm", "JPEG2000.dcm"):
        p = folder / name
        p.write_bytes(Path(get_testdata_file(name)).read_bytes())
        paths.append(p)
    return paths


@pytest.mark.parametrize("recipe", [None, "dicom", KEEP_HEADERS])
def test_every_output_is_a_conformant_part10_file_with_our_implementation_uid(tmp_path: Path, recipe) -> None:
    paths = _inputs_with_and_without_meta(tmp_path / "in")
    report = run_apply([str(tmp_path / "in")], recipe=recipe, output_folder=str(tmp_path / "out"),
                       **({"base": "none"} if recipe is KEEP_HEADERS else {}))
    rows = _rows(report)
    assert {r["status"] for r in rows.values()} == {"written"}, {k: r["reason"] for k, r in rows.items()}
    assert len(rows) == len(paths)
    for row in rows.values():
        data = Path(row["output"]).read_bytes()
        assert data[:128] == b"\0" * 128 and data[128:132] == b"DICM"
        out = pydicom.dcmread(row["output"])  # without force
        meta = out.file_meta
        FileMetaDataset.validate(meta)  # raises if a required element is missing or empty
        assert meta.FileMetaInformationVersion == b"\x00\x01"
        assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
        assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
        raw_meta = pydicom.filereader.read_file_meta_info(row["output"])
        meta_bytes = io.BytesIO()
        pydicom.filewriter.write_file_meta_info(meta_bytes, raw_meta, enforce_standard=True)
        assert raw_meta.FileMetaInformationGroupLength == len(meta_bytes.getvalue()) - 12
        assert data[132:132 + len(meta_bytes.getvalue())] == meta_bytes.getvalue()
        if "SOPClassUID" in out:
            assert meta.MediaStorageSOPClassUID == out.SOPClassUID
        if "SOPInstanceUID" in out:
            assert meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
        for uid in _INPUT_IMPLEMENTATION_UIDS:  # the input's creator never survives
            assert uid.encode() not in data
        assert b"OFFIS_DCMTK" not in data and b"PYDICOM 3" not in data
        implicit, little = out.original_encoding
        ts = pydicom.uid.UID(meta.TransferSyntaxUID)
        assert (ts.is_implicit_VR, ts.is_little_endian) == (implicit, little)


def test_a_bare_dataset_output_gets_a_derived_instance_uid_and_a_declared_class(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    src = bare_dataset(tmp_path / "in" / "bare.dcm")
    first = run_apply([str(src)], recipe=KEEP_HEADERS, base="none", output_folder=str(tmp_path / "out"))
    again = run_apply([str(src)], recipe=KEEP_HEADERS, base="none", output_folder=str(tmp_path / "out2"),
                      key_file=None, manifest=str(tmp_path / "m2"))
    out = pydicom.dcmread(_rows(first)[str(src)]["output"])
    assert out.file_meta.MediaStorageSOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert out.file_meta.MediaStorageSOPInstanceUID.startswith("2.25.")
    assert "SOPInstanceUID" not in out and "SOPClassUID" not in out  # the data set is not altered
    # deterministic per output name (keyed): the same run key gives the same UID
    rerun = run_apply([str(src)], recipe=KEEP_HEADERS, base="none", output_folder=str(tmp_path / "out"), overwrite=True)
    assert pydicom.dcmread(_rows(rerun)[str(src)]["output"]).file_meta.MediaStorageSOPInstanceUID == \
        out.file_meta.MediaStorageSOPInstanceUID
    assert _rows(again)[str(src)]["status"] == "written"


# ---------------------------------------------------------------------------- no pixel data
def _no_pixel_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    full = mr_with_pixels(folder / "mr_full.dcm", 1)
    data = full.read_bytes()
    header_only = make_dicom(folder / "mr_header_only.dcm", dataset=header_only_mr(2))
    boundary = cut_after_dates(full, folder / "mr_cut_after_dates.dcm")
    inside_value = folder / "mr_cut_inside_a_value.dcm"
    elem = pydicom.dcmread(full).get_item(0x00100010)  # PatientName
    inside_value.write_bytes(data[: elem.value_tell + 3])
    inside_header = folder / "mr_cut_inside_a_header.dcm"
    inside_header.write_bytes(data[: boundary.stat().st_size + 5])
    inside_pixels = folder / "mr_cut_inside_pixels.dcm"
    inside_pixels.write_bytes(data[:-10])
    return {"full": full, "header_only": header_only, "boundary": boundary, "inside_value": inside_value,
            "inside_header": inside_header, "inside_pixels": inside_pixels}


def test_image_without_pixel_data_is_skipped_by_default_and_a_real_cut_is_truncated(tmp_path: Path) -> None:
    files = _no_pixel_inputs(tmp_path / "in")
    assert "StudyDate" in pydicom.dcmread(files["boundary"]) and "PixelData" not in pydicom.dcmread(files["boundary"])
    report = run_apply([str(tmp_path / "in")], output_folder=str(tmp_path / "out"))
    rows = _rows(report)
    got = {k: (rows[str(p)]["status"], (rows[str(p)]["reason"] or "").split(":")[0]) for k, p in files.items()}
    assert got == {
        "full": ("written", ""),
        "header_only": ("skipped", "no-pixel-data"),
        "boundary": ("skipped", "no-pixel-data"),
        "inside_value": ("failed", "truncated"),
        "inside_header": ("failed", "truncated"),
        "inside_pixels": ("failed", "truncated"),
    }
    reason = rows[str(files["header_only"])]["reason"]
    assert reason == f"no-pixel-data: {NO_PIXEL_DATA_MESSAGE}"
    for words in ("header-only", "cut exactly at an element boundary", "--write-no-pixel-data",
                  "write_no_pixel_data=True"):
        assert words in reason
    assert report.exit_code == 1  # the truncated ones
    assert "no-pixel-data" in "\n".join(report.summary.lines())


def test_write_no_pixel_data_writes_them_with_a_warning(tmp_path: Path) -> None:
    files = _no_pixel_inputs(tmp_path / "in")
    report = run_apply([str(tmp_path / "in")], output_folder=str(tmp_path / "out"), write_no_pixel_data=True,
                       recipe=KEEP_HEADERS, base="none")
    rows = _rows(report)
    for key in ("header_only", "boundary"):
        row = rows[str(files[key])]
        assert row["status"] == "written", row["reason"]
        assert any("no-pixel-data" in w and "header-only" in w for w in row["warnings"])
        out = pydicom.dcmread(row["output"])
        assert "PixelData" not in out and out.SOPClassUID == MRImageStorage
    assert not any("no-pixel-data" in w for w in rows[str(files["full"])]["warnings"])
    for key in ("inside_value", "inside_header", "inside_pixels"):
        assert rows[str(files[key])]["reason"].startswith("truncated:")


def test_write_no_pixel_data_is_part_of_the_resume_fingerprint(tmp_path: Path) -> None:
    from deid_batch.errors import DeidBatchError

    _no_pixel_inputs(tmp_path / "in")
    run_apply([str(tmp_path / "in")], output_folder=str(tmp_path / "out"))
    with pytest.raises(DeidBatchError, match="write_no_pixel_data"):
        run_apply([str(tmp_path / "in")], output_folder=str(tmp_path / "out"), resume=True,
                  write_no_pixel_data=True)


def test_cli_write_no_pixel_data_flag(tmp_path: Path) -> None:
    from deid_batch.cli import main

    files = _no_pixel_inputs(tmp_path / "in")
    assert main(["apply", str(tmp_path / "in"), "--out", str(tmp_path / "a"), "--workers", "0",
                 "--no-progress", "-q"]) == 1
    default = {r["source"]: r["status"] for r in read_manifest(str(tmp_path / "a.manifest")).to_pylist()}
    assert main(["apply", str(tmp_path / "in"), "--out", str(tmp_path / "b"), "--workers", "0",
                 "--no-progress", "-q", "--write-no-pixel-data"]) == 1
    opted = {r["source"]: r["status"] for r in read_manifest(str(tmp_path / "b.manifest")).to_pylist()}
    assert default[str(files["header_only"])] == "skipped" and opted[str(files["header_only"])] == "written"


def test_image_storage_rule_is_by_sop_class() -> None:
    assert is_image_storage(MRImageStorage) and is_image_storage("1.2.840.10008.5.1.4.1.1.7")
    assert is_image_storage("1.2.840.10008.5.1.4.1.1.66.4")  # Segmentation
    assert not is_image_storage("1.2.840.10008.5.1.4.1.1.481.2")  # RT Dose: may hold only DVHs
    assert not is_image_storage("1.2.840.10008.5.1.4.1.1.481.3")  # RT Structure Set
    assert not is_image_storage("1.2.840.10008.5.1.4.1.1.88.11")  # Basic Text SR
    assert not is_image_storage(None)


def test_an_rt_structure_set_without_pixels_is_written(tmp_path: Path) -> None:
    src = Path(get_testdata_file("rtstruct.dcm"))
    report = run_apply([str(src)], output_folder=str(tmp_path / "out"))
    assert _rows(report)[str(src)]["status"] == "written"


# ---------------------------------------------------------------------------- bare datasets and junk
def test_bare_datasets_are_read_and_junk_stays_not_dicom(tmp_path: Path) -> None:
    bare = [bare_dataset(tmp_path / "in" / "bare1.dcm", 1) if (tmp_path / "in").mkdir() is None else None,
            bare_dataset(tmp_path / "in" / "bare2", 2, pixels=False)]
    junk = junk_files(tmp_path / "in" / "junk")
    for p in bare:
        ds = read_dataset(str(p))
        assert "SOPInstanceUID" not in ds and not len(getattr(ds, "file_meta", None) or ())
        assert ds.PatientID.startswith("BAREPID") and ds.Modality == "CT"
        assert ds == pydicom.dcmread(p, force=True)
    for p in junk:
        with pytest.raises(DatasetError) as caught:
            read_dataset(str(p))
        assert caught.value.reason == Reason.NOT_DICOM, p.name
        with pytest.raises(DatasetError):
            read_dataset(str(p), stop_before_pixels=True)
    report = run_apply([str(tmp_path / "in")], recipe=KEEP_HEADERS, base="none", output_folder=str(tmp_path / "out"))
    rows = _rows(report)
    for p in bare:
        assert rows[str(p)]["status"] == "written", rows[str(p)]["reason"]
        out = pydicom.dcmread(rows[str(p)]["output"])
        assert out.PatientName == "anon" and out.PatientID == pydicom.dcmread(p, force=True).PatientID
    assert bytes(pydicom.dcmread(rows[str(bare[0])]["output"]).PixelData) == bytes(range(32))
    assert {rows[str(p)]["reason"].split(":")[0] for p in junk} == {"not-dicom"}


def test_a_bare_dataset_cut_inside_a_value_is_truncated(tmp_path: Path) -> None:
    data = bare_dataset(tmp_path / "bare.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: data.index(b"BAREPID") + 3])
    with pytest.raises(DatasetError) as caught:
        read_dataset(str(cut))
    assert caught.value.reason == Reason.TRUNCATED


def test_pydicom_text_and_icc_files_are_not_dicom() -> None:
    for name in ("README.txt", "crayons.icc", "zipMR.gz", "test1.json"):
        with pytest.raises(DatasetError) as caught:
            read_dataset(get_testdata_file(name))
        assert caught.value.reason == Reason.NOT_DICOM, name


# ---------------------------------------------------------------------------- scan and apply agree
def test_scan_and_apply_agree_on_which_files_they_can_process(tmp_path: Path) -> None:
    root = tmp_path / "in"
    expected = make_hostile_archive(root, good=3)
    big_endian_without_meta(root / "be_no_meta.dcm")
    bare_dataset(root / "bare.dcm")
    _no_pixel_inputs(root / "mr")
    junk_files(root / "junk")
    with open_executor("sync") as ex:
        ids, errors = run_scan(discover([str(root)]), ScanConfig(), ex)
    scanned = set(ids.column("source").to_pylist())
    scan_reasons = {s: r.split(":")[0] for s, r in zip(errors.column("source").to_pylist(),
                                                       errors.column("reason").to_pylist())}
    default = _rows(run_apply([str(root)], output_folder=str(tmp_path / "out")))
    opted = _rows(run_apply([str(root)], output_folder=str(tmp_path / "out2"), write_no_pixel_data=True))
    assert set(default) == set(opted) == scanned | set(scan_reasons)
    # unwritable.dcm's SOPClassUID has an unknown VR: both refuse it (scan: the header cannot be
    # decoded, not-dicom; apply: deid-error), every other file gets the same reason code from both
    unwritable = {s for s in expected if s.endswith("unwritable.dcm")}
    assert unwritable and unwritable <= set(scan_reasons)
    assert {default[s]["status"] for s in unwritable} == {"failed"}
    written = {s for s, r in opted.items() if r["status"] == "written"}
    assert written == scanned
    no_pixels = {s for s, r in default.items() if (r["reason"] or "").startswith("no-pixel-data")}
    assert no_pixels and no_pixels <= scanned
    assert {s for s, r in default.items() if r["status"] == "written"} == scanned - no_pixels
    for source, reason in scan_reasons.items():
        if source not in unwritable:
            assert default[source]["reason"].split(":")[0] == reason, source
    assert str(root / "be_no_meta.dcm") in written and str(root / "bare.dcm") in written


# ---------------------------------------------------------------------------- write-error
def _int_value(item=None, value=None, field=None, dicom=None, **kwargs):  # noqa: ARG001
    return 777


def test_write_error_names_the_element_and_vr_never_the_value(tmp_path: Path) -> None:
    src = make_dicom(tmp_path / "in" / "a.dcm", 4)
    recipe = {"format": "dicom", "header": [
        {"action": "REPLACE", "field": "AccessionNumber", "value": "func:intval"}]}
    report = run_apply([str(src)], recipe=recipe, base="none", output_folder=str(tmp_path / "out"),
                       functions={"intval": _int_value})
    rows = _rows(report)
    reasons = sorted(r["reason"] for r in rows.values())
    # the top-level AccessionNumber is found first; the value 777 is never named
    assert reasons == ["write-error: element (0008,0050) SH cannot be encoded (TypeError); "
                       "its value does not fit its VR"]
    assert "777" not in reasons[0]


def test_unencodable_element_finds_the_innermost_element_of_a_sequence() -> None:
    ds = build_dataset(5)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    assert unencodable_element(ds) is None
    ds.RequestAttributesSequence[0]["RequestedProcedureID"].value = 12345
    assert unencodable_element(ds) == "(0040,0275)[0].(0040,1001) SH"
    ds.RequestAttributesSequence[0]["RequestedProcedureID"].value = "RP1"
    ds.Rows = 70000  # does not fit US
    assert unencodable_element(ds) == "(0028,0010) US"


def test_no_header_value_in_any_new_reason_or_warning(tmp_path: Path) -> None:
    _no_pixel_inputs(tmp_path / "in")
    bare_dataset(tmp_path / "in" / "bare.dcm")
    report = run_apply([str(tmp_path / "in")], output_folder=str(tmp_path / "out"), write_no_pixel_data=True)
    texts = [str(r["reason"]) + " ".join(r["warnings"]) for r in _rows(report).values()]
    values = [header_only_mr(1).PatientID, header_only_mr(2).PatientID, "BAREPID", "Qwertyname",
              str(header_only_mr(1).StudyInstanceUID)]
    assert not [v for v in values for t in texts if v in t]

"""Scan flattening: fields decoded from raw bytes equal pydicom's own conversion."""

from __future__ import annotations

import os

import deid_data
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from deid_batch.stages.scan import DEFAULT_SCAN_SKIP, _text, flatten

SAMPLES = os.path.join(os.path.dirname(deid_data.__file__), "data")


def _reference(ds):
    """What flatten must give: every element converted by pydicom, then ``str``-ed."""
    out = []

    def walk(d, prefix):
        for e in d:
            if e.keyword in DEFAULT_SCAN_SKIP:
                continue
            path = prefix + (e.keyword or str(e.tag))
            if e.VR == "SQ":
                out.append((path, "SQ", None))
                for i, item in enumerate(e.value):
                    walk(item, f"{path}[{i}].")
                continue
            out.append((path, e.VR, _text(e)))

    walk(ds, "")
    walk(ds.file_meta, "")
    return out


def _dataset():
    ds = Dataset()
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "  ID 42 "
    ds.Rows, ds.Columns = 16, 32
    ds.PixelSpacing = ["0.5", "0.25"]
    ds.LUTDescriptor = [256, 0, 16]
    ds.RescaleSlope = "1.5"
    ds.RecommendedDisplayFrameRateInFloat = 29.97
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.AccessionNumber = ""
    item = Dataset()
    item.AccessionNumber = "A1"
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    item.ReferencedFrameNumber = "1\\2"
    ds.RequestAttributesSequence = Sequence([item, Dataset()])
    block = ds.private_block(0x0009, "ACME 1.0", create=True)
    block.add_new(0x01, "LO", "private copy")
    block.add_new(0x02, "US", 7)
    ds.SOPInstanceUID = "1.2.3"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    return ds


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian],
                         ids=["explicit-le", "implicit-le", "explicit-be"])
def test_raw_decoding_equals_pydicom_conversion(tmp_path, syntax):
    ds = _dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    path = tmp_path / "x.dcm"
    ds.save_as(path, implicit_vr=syntax == ImplicitVRLittleEndian,
               little_endian=syntax != ExplicitVRBigEndian, enforce_file_format=True)
    got = [(f["path"], f["vr"], f["value"]) for f in flatten(pydicom.dcmread(path, stop_before_pixels=True))]
    assert got == _reference(pydicom.dcmread(path, stop_before_pixels=True))
    assert ("RequestAttributesSequence[0].AccessionNumber", "SH", "A1") in got


@pytest.mark.parametrize("name", ["humans/ctbrain1.dcm", "humans/ctbrain2.dcm", "animals/cat.dcm",
                                  "dicom-cookies/image1.dcm"])
def test_sample_files_flatten_like_pydicom(name):
    path = os.path.join(SAMPLES, name)
    got = [(f["path"], f["vr"], f["value"]) for f in flatten(pydicom.dcmread(path, stop_before_pixels=True))]
    assert got == _reference(pydicom.dcmread(path, stop_before_pixels=True))

"""Representative DICOM inputs for the differential suite.

:func:`build_dataset` returns a small but broad ``FileDataset``: every VR deid knows about at the
top level (AE ... UV, one element each, plus a few multi-valued ones), standard sequences nested
three deep (with an empty sequence and an empty item), private blocks with creators - one creator
in the pydicom private dictionary, one unknown, two creators in one group, one creator containing a
colon - a private sequence whose items hold private elements, full file meta, a non-zero preamble
and a 4x4 8-bit image. :func:`write_dicom` saves it exactly as deid would (``save_as`` with
pydicom's defaults).

The values are chosen so that the recipes in the test modules act on something: dates are all
``20230101``-like and parse, times are ``HHMMSS.ffffff``, ``HIBBARD`` and ``SIMPSON`` occur in
several places for ``%values`` and ``func:`` cases.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDY_UID = "1.2.826.0.1.3680043.8.498.1001"
SERIES_UID = "1.2.826.0.1.3680043.8.498.1002"
SOP_UID = "1.2.826.0.1.3680043.8.498.1003"
FRAME_UID = "1.2.826.0.1.3680043.8.498.1004"
REF_SOP_UIDS = ("1.2.826.0.1.3680043.8.498.2001", "1.2.826.0.1.3680043.8.498.2002")
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.8.498.1"

#: Private creators used by the generated file, by group.
CREATOR_ACME = "ACME PRIVATE 1.0"  # unknown to pydicom's private dictionary
CREATOR_CSA = "SIEMENS CSA HEADER"  # known: (0029,xx08) CS, (0029,xx09) LO, ...
CREATOR_MITRA = "MITRA OBJECT UTF8 ATTRIBUTES 1.0"  # known: (0033,xx1E) PN
CREATOR_COLON = "Siemens: Thorax/Multix FD Post Processing"  # known: (0021,xx15) SS

#: One top-level element per VR: VR -> (keyword or tag, value). Every VR of the brief is here;
#: UN is the standard SelectorUNValue (the only public UN attribute).
TOP_LEVEL_BY_VR: dict[str, tuple[str, object]] = {
    "AE": ("StationAETitle", "CTSTATION1"),
    "AS": ("PatientAge", "042Y"),
    "AT": ("FrameIncrementPointer", Tag(0x0018, 0x1063)),
    "CS": ("PatientSex", "M"),
    "DA": ("PatientBirthDate", "19700215"),
    "DS": ("PatientWeight", "72.5"),
    "DT": ("AcquisitionDateTime", "20230101011721.621000"),
    "FD": ("ExposureInmAs", 12.5),
    "FL": ("RecommendedDisplayFrameRateInFloat", 30.0),
    "IS": ("InstanceNumber", "7"),
    "LO": ("InstitutionName", "General Hospital"),
    "LT": ("AdditionalPatientHistory", "Seen by HIBBARD in 2022"),
    "OB": ("SelectorOBValue", b"\x01\x02\x03\x04"),
    "OD": ("SelectorODValue", struct.pack("<2d", 1.5, -2.25)),
    "OF": ("VectorGridData", struct.pack("<3f", 0.5, 1.5, 2.5)),
    "OL": ("LongPrimitivePointIndexList", struct.pack("<3L", 1, 2, 3)),
    "OV": ("SelectorOVValue", struct.pack("<Q", 2**40 + 5)),
    "OW": ("SelectorOWValue", struct.pack("<4H", 1, 2, 3, 65535)),
    "PN": ("ReferringPhysicianName", "HIBBARD^MARK"),
    "SH": ("AccessionNumber", "ACC0001"),
    "SL": ("ReferencePixelX0", -12),
    "SQ": ("ReferencedImageSequence", None),  # built below
    "SS": ("TagAngleSecondAxis", -5),
    "ST": ("InstitutionAddress", "1 Main Street, Springfield"),
    "SV": ("SelectorSVValue", -123456789012),
    "TM": ("StudyTime", "011635.943000"),
    "UC": ("LongCodeValue", "LONG-CODE-VALUE-0001"),
    "UI": ("StudyInstanceUID", STUDY_UID),
    "UL": ("SimpleFrameList", 4000000000),
    "UN": ("SelectorUNValue", b"\x05\x06\x07\x08"),
    "UR": ("RetrieveURL", "http://pacs.example.org/wado"),
    "US": ("PregnancyStatus", 4),
    "UT": ("TextValue", "Free text mentioning SIMPSON"),
    "UV": ("SelectorUVValue", 2**50 + 7),
}

#: Private elements at the top level: (group, element, VR, value); creators are added for them.
PRIVATE_TOP_LEVEL: tuple[tuple[int, int, str, object], ...] = (
    (0x0009, 0x1001, "LO", "PRIVATE-LO-VALUE"),
    (0x0009, 0x1002, "DA", "20230101"),
    (0x0009, 0x1003, "PN", "SIMPSON^HOMER"),
    (0x0009, 0x1004, "US", 12),
    (0x0009, 0x1005, "UN", b"\x01\x02\x03\x04"),
    (0x0009, 0x1006, "DS", "1.5"),
    (0x0009, 0x1007, "LO", "20230101"),
    (0x0021, 0x1015, "SS", -3),
    (0x0029, 0x1008, "CS", "IMAGE NUM 4"),
    (0x0029, 0x1009, "LO", "20230101"),
    (0x0033, 0x101E, "PN", "MITRA^PRIVATE"),
    (0x0033, 0x111E, "LO", "ACME-IN-0033"),
)


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "99TEST"
    item.CodeMeaning = meaning
    return item


def _referenced(uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = CT_IMAGE_STORAGE
    item.ReferencedSOPInstanceUID = uid
    return item


def _three_deep_request_attributes() -> Sequence:
    """RequestAttributesSequence > RequestedProcedureCodeSequence > EquivalentCodeSequence."""
    level3 = []
    for i, date in enumerate(("20230101", "19991231")):
        item = _code(f"EQ{i}", f"Equivalent {i}")
        item.ContextGroupExtensionCreatorUID = f"{STUDY_UID}.{i}"
        item.ContextGroupLocalVersion = "20230101011721.621000"
        item.ContextGroupVersion = date + "000000"
        item.add_new(0x00090010, "LO", CREATOR_ACME)
        item.add_new(0x00091001, "LO", f"DEEP-PRIVATE-{i}")
        item.add_new(0x00091002, "DA", date)
        level3.append(item)
    code = _code("PROC1", "Procedure HIBBARD")
    code.EquivalentCodeSequence = Sequence(level3)
    request = Dataset()
    request.AccessionNumber = "ACC0001"
    request.StudyInstanceUID = STUDY_UID
    request.RequestedProcedureID = "RP-0001"
    request.RequestedProcedureDescription = "CT HEAD"
    request.ScheduledProcedureStepStartDate = "20230101"
    request.ReferencedStudySequence = Sequence([_referenced(REF_SOP_UIDS[0])])
    request.RequestedProcedureCodeSequence = Sequence([code])
    return Sequence([request])


def _other_patient_ids() -> Sequence:
    items = []
    for i, issuer in enumerate(("HOSPITAL A", "HOSPITAL B")):
        item = Dataset()
        item.PatientID = f"OTHER-{i}"
        item.TypeOfPatientID = "TEXT"
        item.IssuerOfPatientID = issuer
        qualifiers = Dataset()
        qualifiers.UniversalEntityID = f"UEID-{i}"
        qualifiers.UniversalEntityIDType = "ISO"
        item.IssuerOfPatientIDQualifiersSequence = Sequence([qualifiers])
        items.append(item)
    return Sequence(items)


def _private_sequence(ds: Dataset) -> None:
    """(0009,1010) SQ in the ACME block; items carry their own creator and private elements."""
    items = []
    for i in range(2):
        item = Dataset()
        item.add_new(0x00090010, "LO", CREATOR_ACME)
        item.add_new(0x00091011, "LO", f"NESTED-PRIVATE-{i}")
        item.add_new(0x00091012, "DA", "20230101")
        item.PatientName = "SIMPSON^BART"
        item.StudyInstanceUID = STUDY_UID
        items.append(item)
    ds.add_new(0x00091010, "SQ", Sequence(items))


def _file_meta(transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = SOP_UID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = "DIFFTEST_1"
    meta.SourceApplicationEntityTitle = "SRCAE"
    return meta


def build_dataset(transfer_syntax: str = ExplicitVRLittleEndian) -> FileDataset:
    """The representative dataset (not yet written); see the module docstring."""
    ds = FileDataset("generated.dcm", Dataset(), file_meta=_file_meta(transfer_syntax),
                     preamble=b"DIFF" + b"\x00" * 124)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = SOP_UID
    ds.StudyDate = "20230101"
    ds.SeriesDate = "20230101"
    ds.AcquisitionDate = "20230101"
    ds.ContentDate = ""
    ds.SeriesTime = "011700.000000"
    ds.Modality = "CT"
    ds.SeriesDescription = "HEAD ROUTINE"
    ds.Manufacturer = "SIEMENS"
    ds.ManufacturerModelName = "SOMATOM"
    ds.OperatorsName = ["SMITH^ANNA", "HIBBARD^MARK"]
    ds.PatientName = "SIMPSON^HOMER^J"
    ds.PatientID = "PID-12345"
    ds.OtherPatientNames = "MÜLLER^HANS"
    ds.StudyID = "STUDY1"
    ds.SeriesNumber = "3"
    ds.SeriesInstanceUID = SERIES_UID
    ds.FrameOfReferenceUID = FRAME_UID
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.SliceThickness = "1.25"
    ds.ExposureTime = "1000"
    ds.CollimatorShape = "RECTANGULAR"
    for vr, (keyword, value) in TOP_LEVEL_BY_VR.items():
        if vr != "SQ":
            setattr(ds, keyword, value)
    ds.ReferencedImageSequence = Sequence([_referenced(uid) for uid in REF_SOP_UIDS])
    ds.RequestAttributesSequence = _three_deep_request_attributes()
    ds.OtherPatientIDsSequence = _other_patient_ids()
    ds.ReferencedPatientSequence = Sequence()  # empty sequence
    ds.ReferencedPerformedProcedureStepSequence = Sequence([Dataset()])  # one empty item
    ds.add_new(0x00090010, "LO", CREATOR_ACME)
    ds.add_new(0x00210010, "LO", CREATOR_COLON)
    ds.add_new(0x00290010, "LO", CREATOR_CSA)
    ds.add_new(0x00330010, "LO", CREATOR_MITRA)
    ds.add_new(0x00330011, "LO", CREATOR_ACME)
    for group, element, vr, value in PRIVATE_TOP_LEVEL:
        ds.add_new((group << 16) | element, vr, value)
    _private_sequence(ds)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 4
    ds.Columns = 4
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(16))
    ds["PixelData"].VR = "OB"
    return ds


def write_dicom(ds: FileDataset, path: Path) -> Path:
    """Save ``ds`` to ``path`` the way deid saves (``save_as``, pydicom defaults)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


def make_dicom_file(
    path: Path,
    edit: Callable[[FileDataset], object] | None = None,
    *,
    implicit: bool = False,
) -> Path:
    """Build the representative dataset, let ``edit`` change it, and write it to ``path``."""
    ds = build_dataset(ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian)
    if edit is not None:
        edit(ds)
    return write_dicom(ds, path)

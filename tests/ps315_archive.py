"""A planted-PHI archive and a MIDI-B-style scorer for the PS3.15 recipes (issue 11).

:func:`build` writes generated CT/MR files (``deid_batch.synth``) with identifiers planted at
every depth: the synth values (names, IDs, accession numbers, dates, UIDs, institution, private
blocks), plus a reference to the previous instance of the series (ReferencedImageSequence), a
free-text description naming the patient, a private sequence, a curve and an overlay, and one
file in implicit VR (its private elements are read back as UN). It returns the answer key.

:func:`score` reads the outputs and says: which planted identifiers survive anywhere (raw bytes,
so private elements read as UN count), what fraction of the retained attributes is still there
with its value, and whether pseudonyms and UID references are consistent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian

from deid_batch.synth import generate_archive

#: attributes a good de-identification keeps unchanged (geometry, image type, body part...)
RETAINED = ("ImageType", "Modality", "SOPClassUID", "BodyPartExamined", "SliceThickness",
            "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns",
            "BitsAllocated", "PhotometricInterpretation", "RescaleIntercept", "RescaleSlope",
            "WindowCenter", "WindowWidth", "Manufacturer", "ManufacturerModelName", "KVP",
            "RepetitionTime", "EchoTime", "MagneticFieldStrength", "SeriesNumber", "InstanceNumber")
#: descriptions that the clean-descriptors option keeps (cleaned)
DESCRIPTIONS = ("StudyDescription", "SeriesDescription", "ImageComments")


@dataclass
class Key:
    """The answer key of one input file."""

    planted: set[str] = field(default_factory=set)  # identifiers that must not survive
    retained: dict[str, str] = field(default_factory=dict)  # keyword -> repr of the value
    descriptions: dict[str, str] = field(default_factory=dict)
    patient: str = ""
    sop: str = ""
    references: str = ""  # the original SOPInstanceUID this file references


def _planted(ds: Dataset) -> set[str]:
    values: set[str] = set()
    text_vrs = ("PN", "LO", "SH", "DA", "UI", "LT", "ST")
    keep = {"SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID",
            "Modality", "Manufacturer", "ManufacturerModelName", "BodyPartExamined", "CodeValue",
            "CodingSchemeDesignator", "CodeMeaning", "StudyDescription", "SeriesDescription",
            "ImageComments", "RescaleType", "IssuerOfPatientID", "PositionReferenceIndicator",
            "RequestedProcedureDescription", "ImplementationClassUID", "ImplementationVersionName"}
    elements = list(ds.iterall()) + list(ds.file_meta)
    for elem in elements:
        if elem.VR == "SQ" or elem.keyword in keep or elem.tag.is_private_creator:
            continue
        if elem.VR in text_vrs and elem.value not in (None, ""):
            text = str(elem.value)
            values.add(text)
            if elem.VR == "PN":
                values.update(p for p in text.split("^") if len(p) > 3)
    values.add(str(ds.PatientID))
    values.update(v for v in list(values) if len(v) >= 4)
    return {v for v in values if len(v) >= 4}


def build(root: Path, n_files: int = 16, seed: int = 11) -> dict[str, Key]:
    """Write the archive under ``root``; returns {absolute input path: answer key}."""
    paths = generate_archive(root, n_files, seed=seed, patients=3, modalities=("CT", "MR"))
    keys: dict[str, Key] = {}
    previous: dict[str, str] = {}  # series uid -> SOPInstanceUID of the previous instance
    for index, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        ds.StudyDescription = f"{ds.StudyDescription} for {ds.PatientName.family_name} {ds.PatientID}"
        ref_uid = previous.get(ds.SeriesInstanceUID, "")
        if ref_uid:
            ref = Dataset()
            ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ds.SOPClassUID, ref_uid
            ds.ReferencedImageSequence = Sequence([ref])
        previous[ds.SeriesInstanceUID] = ds.SOPInstanceUID
        block = ds.private_block(0x0011, "PLANTED 1.0", create=True)
        item = Dataset()
        item.PatientName, item.OtherPatientIDs = ds.PatientName, f"X{ds.PatientID}"
        block.add_new(0x01, "SQ", Sequence([item]))
        ds.add_new(0x50000005, "US", 2)  # a curve
        ds.add_new(0x60000010, "US", ds.Rows)  # an overlay
        ds.add_new(0x60000011, "US", ds.Columns)
        ds.add_new(0x60000100, "US", 1)
        ds.add_new(0x60000102, "US", 0)
        ds.add_new(0x60000040, "CS", "G")
        ds.add_new(0x60000050, "SS", [1, 1])
        ds.add_new(0x60003000, "OW", b"\x00" * (ds.Rows * ds.Columns // 8))
        key = Key(planted=_planted(ds), patient=str(ds.PatientID), sop=str(ds.SOPInstanceUID),
                  references=ref_uid)
        key.planted.add(f"X{ds.PatientID}")
        key.retained = {kw: repr(ds[kw].value) for kw in RETAINED if kw in ds}
        key.descriptions = {kw: str(ds[kw].value) for kw in DESCRIPTIONS if kw in ds}
        if index == 0:  # implicit VR: its private elements read back as UN
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=True)
        else:
            ds.save_as(path, enforce_file_format=True)
        keys[os.path.abspath(path)] = key
    return keys


@dataclass
class Score:
    files: int
    leaks: list[tuple[str, str]]  # (output file, kind of the surviving value), never the value
    retained: int
    retainable: int
    descriptions_kept: int
    descriptions: int
    consistent_patients: bool
    references_resolve: bool

    @property
    def retention(self) -> float:
        return self.retained / self.retainable if self.retainable else 1.0


def score(keys: dict[str, Key], pairs: dict[str, str]) -> Score:
    """Score ``pairs`` ({input path: output path}) against the answer ``keys``."""
    leaks: list[tuple[str, str]] = []
    retained = retainable = kept_desc = n_desc = 0
    pseudonyms: dict[str, set[str]] = {}
    new_sop: dict[str, str] = {}
    references: list[tuple[str, str]] = []
    for source, output in pairs.items():
        key = keys[source]
        raw = Path(output).read_bytes()
        for value in key.planted:
            if value.encode("latin-1", "replace") in raw:
                leaks.append((os.path.basename(output), "planted identifier"))
        ds = pydicom.dcmread(output)
        for kw, value in key.retained.items():
            retainable += 1
            retained += kw in ds and repr(ds[kw].value) == value
        for kw in key.descriptions:
            n_desc += 1
            kept_desc += bool(kw in ds and str(ds[kw].value).strip())
        pseudonyms.setdefault(key.patient, set()).add(str(ds.get("PatientID", "")))
        new_sop[key.sop] = str(ds.SOPInstanceUID)
        if key.references:
            refs = ds.get("ReferencedImageSequence") or [Dataset()]
            references.append((key.references, str(refs[0].get("ReferencedSOPInstanceUID", ""))))
    distinct = [next(iter(v)) for v in pseudonyms.values()]
    consistent = all(len(v) == 1 for v in pseudonyms.values()) and len(set(distinct)) == len(distinct)
    resolve = all(new_sop.get(old) == new for old, new in references)
    return Score(len(pairs), leaks, retained, retainable, kept_desc, n_desc, consistent, resolve)

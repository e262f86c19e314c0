"""Deterministic synthetic DICOM archives with realistic (fake) PHI.

Used by the CLI's built-in example archive, by the tests and by the benchmarks.

:func:`generate_archive` takes a root folder, a file count and a seed and writes a nested
PACS-export style tree::

    root/KOWALCZYK^MARTA_H4821937/20190314_RA19031400123/SE001_CT/IM0001.dcm
                                                         SE002_CT/IM0001.dcm   (basenames repeat)

Every file carries PHI-bearing headers (names, IDs, dates, institution, UIDs), nested sequences
(``RequestAttributesSequence`` holding ``AccessionNumber`` and ``StudyInstanceUID``, a three-deep
``RequestAttributesSequence > ScheduledProtocolCodeSequence > ProtocolContextSequence``), private
blocks with creators (group 0009 ``ACME PRIVATE 1.0`` with a private copy of the patient name and a
date; group 0029 ``SYNTH CSA HEADER 1.0`` with a binary blob) and a pixel module with pixel data of
the selected size. The same seed gives byte-identical files: no wall-clock dates, UIDs derived from
the seed. :func:`phi_values` returns the identifying strings of a generated file for leak tests.
"""

from __future__ import annotations

import array
import functools
import logging
import math
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

__all__ = [
    "ACME_CREATOR",
    "CSA_CREATOR",
    "PIXEL_MODES",
    "SOP_CLASSES",
    "Patient",
    "Series",
    "Study",
    "generate_archive",
    "iter_layout",
    "main",
    "make_dataset",
    "phi_values",
]

logger = logging.getLogger(__name__)

ACME_CREATOR = "ACME PRIVATE 1.0"
CSA_CREATOR = "SYNTH CSA HEADER 1.0"

#: Pixel modes: name -> (rows, columns).
PIXEL_MODES: dict[str, tuple[int, int]] = {"small": (16, 16), "ct": (512, 512)}

SOP_CLASSES: dict[str, str] = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "US": "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image Storage
    "PT": "1.2.840.10008.5.1.4.1.1.128",  # PET Image Storage
}
_DETACHED_STUDY = "1.2.840.10008.3.1.2.3.1"
_UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's root, as generate_uid() uses by default

_LAST = (
    "KOWALCZYK", "ABERNATHY", "FITZGERALD", "OYELARAN", "BALASUBRAMANIAN", "HALVORSEN",
    "DELACROIX", "MONTGOMERY", "NAKAMURA", "VILLANUEVA", "QUIGLEY", "ZHELEZNYAK", "ACHTERBERG",
    "PEMBERTON", "SZCZEPANSKI", "LINDQVIST", "OKONKWO", "CASTELLANOS", "HARGREAVES", "DOE",
)  # fmt: skip
_FIRST = (
    "MARTA", "JOHN", "OLUWASEUN", "BEATRIX", "THADDEUS", "INGRID", "RAFAEL", "YUKIKO", "CORMAC",
    "PRIYANKA", "LEOPOLD", "SVETLANA", "AUGUSTIN", "MAGNOLIA", "EZEKIEL", "FLORENTINA",
)  # fmt: skip
_STAFF = (
    "WHITFIELD^GREGORY^DR", "ANANTHARAMAN^LAKSHMI^DR", "BRANDSTETTER^KLAUS", "MCALLISTER^FIONA",
    "ODUYA^EMMANUEL^DR", "RASMUSSEN^HELGA", "TRINIDAD^CARLOS^DR", "VANDERMEER^JOOST",
)  # fmt: skip
_INSTITUTIONS = (
    ("ST. BARNABY MEMORIAL HOSPITAL", "1427 Larkspur Avenue^^Millbrook^OH^44720^USA"),
    ("RIVERBEND UNIVERSITY MEDICAL CENTER", "88 Quarry Road^^Ashford^VT^05301^USA"),
    ("KLINIKUM ALTENHEIDE", "Lindenallee 17^^Bielefeld^^33602^DE"),
    ("NORTHGATE IMAGING ASSOCIATES", "3300 Pioneer Pkwy Suite 210^^Cedar Falls^IA^50613^USA"),
)
_DESCRIPTIONS = {
    "CT": ("CT CHEST W CONTRAST", "CT ABDOMEN PELVIS", "CT HEAD WO CONTRAST"),
    "MR": ("MR BRAIN W WO CONTRAST", "MR KNEE LEFT", "MR LUMBAR SPINE"),
    "CR": ("XR CHEST 2 VIEWS", "XR HAND RIGHT"),
    "US": ("US ABDOMEN COMPLETE", "US THYROID"),
    "DX": ("DX CHEST PA",),
    "MG": ("MG SCREENING BILATERAL",),
    "PT": ("PET CT WHOLE BODY",),
}
_PROCEDURE_CODES = (
    ("IMG1234", "Chest imaging"),
    ("IMG2210", "Abdominal imaging"),
    ("IMG0420", "Neuro imaging"),
    ("IMG0777", "Musculoskeletal imaging"),
)


@dataclass(frozen=True)
class Patient:
    """A synthetic patient; every string is a distinctive PHI value."""

    index: int
    name: str  # LAST^FIRST
    patient_id: str  # H + 7 digits
    birth_date: str  # YYYYMMDD
    sex: str
    other_id: str  # in OtherPatientIDsSequence

    @property
    def folder(self) -> str:
        """PACS-export folder name, e.g. ``KOWALCZYK^MARTA_H4821937`` (PHI in the path)."""
        return f"{self.name}_{self.patient_id}"


@dataclass(frozen=True)
class Study:
    """A synthetic study of one patient."""

    index: int
    uid: str
    date: str
    time: str
    accession: str
    study_id: str
    description: str
    modality: str
    institution: str
    institution_address: str
    referring: str
    procedure_code: tuple[str, str]

    @property
    def folder(self) -> str:
        return f"{self.date}_{self.accession}"


@dataclass(frozen=True)
class Series:
    """A synthetic series of one study."""

    number: int
    uid: str
    frame_of_reference: str
    time: str
    operator: str
    n_instances: int

    def folder(self, modality: str) -> str:
        return f"SE{self.number:03d}_{modality}"


def _uid(seed: int, *parts: object) -> str:
    return generate_uid(_UID_PREFIX, entropy_srcs=["deid_batch.synth", str(seed), *map(str, parts)])


def _date(rng: random.Random, first_year: int, last_year: int) -> str:
    return (
        f"{rng.randint(first_year, last_year):04d}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    )


def _time(rng: random.Random) -> str:
    return f"{rng.randint(7, 19):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}"


def _make_patient(rng: random.Random, index: int) -> Patient:
    return Patient(
        index=index,
        name=f"{rng.choice(_LAST)}^{rng.choice(_FIRST)}",
        patient_id=f"H{rng.randint(1_000_000, 9_999_999)}",
        birth_date=_date(rng, 1930, 2010),
        sex=rng.choice("MF"),
        other_id=f"EMPI{rng.randint(10_000_000, 99_999_999)}",
    )


def _make_study(
    rng: random.Random, seed: int, patient: Patient, index: int, modality: str
) -> Study:
    date = _date(rng, 2015, 2024)
    institution, address = rng.choice(_INSTITUTIONS)
    return Study(
        index=index,
        uid=_uid(seed, "study", patient.index, index),
        date=date,
        time=_time(rng),
        accession=f"RA{date[2:]}{rng.randint(0, 99_999):05d}",
        study_id=f"S{rng.randint(10_000, 99_999)}",
        description=rng.choice(_DESCRIPTIONS.get(modality, ("IMAGING STUDY",))),
        modality=modality,
        institution=institution,
        institution_address=address,
        referring=rng.choice(_STAFF),
        procedure_code=rng.choice(_PROCEDURE_CODES),
    )


def _make_series(
    rng: random.Random, seed: int, patient: Patient, study: Study, number: int, n_instances: int
) -> Series:
    return Series(
        number=number,
        uid=_uid(seed, "series", patient.index, study.index, number),
        frame_of_reference=_uid(seed, "for", patient.index, study.index, number),
        time=_time(rng),
        operator=rng.choice(_STAFF),
        n_instances=n_instances,
    )


def _split(rng: random.Random, total: int, parts: int) -> list[int]:
    """Split ``total`` into ``min(parts, total)`` positive integers, deterministically."""
    parts = max(1, min(parts, total))
    cuts = sorted(rng.sample(range(1, total), parts - 1)) if parts > 1 else []
    bounds = [0, *cuts, total]
    return [b - a for a, b in zip(bounds, bounds[1:], strict=False)]


def iter_layout(
    n_files: int,
    *,
    seed: int = 0,
    patients: int | None = None,
    modalities: tuple[str, ...] = ("CT", "MR", "CR", "US"),
) -> Iterator[tuple[Patient, Study, Series]]:
    """Yield the (patient, study, series) of an archive, in order; no files are touched.

    Patients get 1-3 studies of one modality each, studies 1-4 series; about 60 files per patient
    unless ``patients`` is given.
    """
    if n_files < 0:
        raise ValueError(f"n_files must be >= 0, got {n_files}")
    unknown = [m for m in modalities if m not in SOP_CLASSES]
    if unknown or not modalities:
        raise ValueError(f"modalities must be a non-empty subset of {sorted(SOP_CLASSES)}")
    if n_files == 0:
        return
    n_patients = patients if patients is not None else max(1, math.ceil(n_files / 60))
    if n_patients < 1:
        raise ValueError(f"patients must be >= 1, got {patients}")
    rng = random.Random(f"deid_batch.synth/{seed}")
    for p_index, p_files in enumerate(_split(rng, n_files, n_patients)):
        patient = _make_patient(rng, p_index)
        for s_index, s_files in enumerate(_split(rng, p_files, rng.randint(1, 3))):
            study = _make_study(rng, seed, patient, s_index, rng.choice(modalities))
            for number, n in enumerate(_split(rng, s_files, rng.randint(1, 4)), start=1):
                yield patient, study, _make_series(rng, seed, patient, study, number, n)


@functools.lru_cache(maxsize=4)
def _phantom(rows: int, columns: int, signed: bool) -> bytes:
    """A disc phantom (int16 little endian): -1000 outside, 40 inside, 700 ring (CT numbers)."""
    cy, cx, r = rows / 2, columns / 2, min(rows, columns) * 0.4
    offset = 0 if signed else 1024
    values = array.array("h" if signed else "H")
    for y in range(rows):
        for x in range(columns):
            d = math.hypot(y - cy, x - cx)
            hu = 40 if d < r * 0.9 else 700 if d < r else -1000
            values.append(hu + offset)
    if values.itemsize != 2:  # pragma: no cover - every CPython platform has 2-byte shorts
        raise RuntimeError("array('h') is not 16-bit on this platform")
    if sys.byteorder == "big":  # pragma: no cover
        values.byteswap()
    return values.tobytes()


def _pixel_data(rng: random.Random, pixels: str, signed: bool) -> tuple[int, int, bytes]:
    try:
        rows, columns = PIXEL_MODES[pixels]
    except KeyError:
        raise ValueError(f"pixels must be one of {sorted(PIXEL_MODES)}, got {pixels!r}") from None
    if pixels == "small":
        return rows, columns, rng.randbytes(rows * columns * 2)
    base = bytearray(_phantom(rows, columns, signed))
    row = rng.randrange(rows)  # one row of noise per instance: instances differ, stay cheap
    base[row * columns * 2 : (row + 1) * columns * 2] = rng.randbytes(columns * 2)
    return rows, columns, bytes(base)


def _age(birth: str, on: str) -> str:
    years = int(on[:4]) - int(birth[:4]) - (on[4:] < birth[4:])
    return f"{max(years, 0):03d}Y"


def make_dataset(
    rng: random.Random,
    *,
    patient: Patient,
    study: Study,
    series: Series,
    instance: int,
    pixels: str = "small",
    seed: int = 0,
    private: bool = True,
    sequences: bool = True,
) -> Dataset:
    """Build one synthetic instance (with file meta) of ``study.modality``."""
    modality = study.modality
    sop_class = SOP_CLASSES[modality]
    sop_uid = _uid(seed, "sop", patient.index, study.index, series.number, instance)
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128

    acq_time = f"{series.time[:4]}{(int(series.time[4:]) + instance) % 60:02d}"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study.date
    ds.SeriesDate = study.date
    ds.AcquisitionDateTime = f"{study.date}{acq_time}.000000"
    ds.ContentDate = study.date
    ds.StudyTime = study.time
    ds.SeriesTime = series.time
    ds.ContentTime = acq_time
    ds.AccessionNumber = study.accession
    ds.Modality = modality
    ds.Manufacturer = "SYNTHETIC MEDICAL SYSTEMS"
    ds.InstitutionName = study.institution
    ds.InstitutionAddress = study.institution_address
    ds.ReferringPhysicianName = study.referring
    ds.StationName = f"STN{patient.index % 7:02d}{modality}"
    ds.StudyDescription = study.description
    ds.SeriesDescription = f"{study.description} SE{series.number}"
    ds.OperatorsName = series.operator
    ds.ManufacturerModelName = f"SYNTH-{modality} 3000"
    if sequences:
        ref = Dataset()
        ref.ReferencedSOPClassUID = _DETACHED_STUDY
        ref.ReferencedSOPInstanceUID = study.uid
        ds.ReferencedStudySequence = Sequence([ref])
        code_value, meaning = study.procedure_code
        code = Dataset()
        code.CodeValue = code_value
        code.CodingSchemeDesignator = "99SYNTH"
        code.CodeMeaning = meaning
        ds.ProcedureCodeSequence = Sequence([code])
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = study.institution
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    if sequences:
        other = Dataset()
        other.PatientID = patient.other_id
        other.IssuerOfPatientID = "EMPI"
        ds.OtherPatientIDsSequence = Sequence([other])
    ds.PatientAge = _age(patient.birth_date, study.date)
    ds.PatientWeight = f"{rng.randint(40, 120)}"
    ds.BodyPartExamined = {"CT": "CHEST", "MR": "BRAIN", "CR": "CHEST"}.get(modality, "ABDOMEN")
    if modality == "CT":
        ds.SliceThickness = "1.25"
        ds.KVP = "120"
    elif modality == "MR":
        ds.SliceThickness = "3"
        ds.RepetitionTime = "2300"
        ds.EchoTime = "2.98"
        ds.MagneticFieldStrength = "3"
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series.uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.number
    ds.InstanceNumber = instance
    if modality in ("CT", "MR", "PT"):
        ds.ImagePositionPatient = [-120.0, -120.0, round(-instance * 1.25, 2)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID = series.frame_of_reference
        ds.PositionReferenceIndicator = ""
    ds.ImageComments = f"Synthetic image for {patient.name.replace('^', ' ')}"

    signed = modality == "CT"
    rows, columns, data = _pixel_data(rng, pixels, signed)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelSpacing = [0.7, 0.7]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    if signed:
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"

    if sequences:
        ds.RequestAttributesSequence = Sequence([_request_attributes(patient, study)])
    if private:
        block = ds.private_block(0x0009, ACME_CREATOR, create=True)
        block.add_new(0x10, "PN", patient.name)
        block.add_new(0x11, "DA", study.date)
        block.add_new(0x12, "LO", study.accession)
        block.add_new(0x13, "LO", f"{patient.patient_id}/{study.institution}")
        csa = ds.private_block(0x0029, CSA_CREATOR, create=True)
        csa.add_new(0x10, "OB", rng.randbytes(64))
        csa.add_new(0x11, "CS", "SYNTH_CSA_V2")
    ds.add_new(0x7FE00010, "OW", data)
    return ds


def _request_attributes(patient: Patient, study: Study) -> Dataset:
    """RequestAttributesSequence item, three levels deep with PHI at every level."""
    context_name = Dataset()
    context_name.CodeValue = "121106"
    context_name.CodingSchemeDesignator = "DCM"
    context_name.CodeMeaning = "Comment"
    context = Dataset()  # level 3
    context.ValueType = "TEXT"
    context.ConceptNameCodeSequence = Sequence([context_name])
    context.TextValue = f"Requested by {study.referring.split('^')[0]} on {study.date}"
    protocol = Dataset()  # level 2
    protocol.CodeValue = study.procedure_code[0]
    protocol.CodingSchemeDesignator = "99SYNTH"
    protocol.CodeMeaning = study.procedure_code[1]
    protocol.ProtocolContextSequence = Sequence([context])
    item = Dataset()  # level 1
    item.AccessionNumber = study.accession
    item.RequestedProcedureDescription = study.description
    item.ScheduledProtocolCodeSequence = Sequence([protocol])
    item.ScheduledProcedureStepID = f"SPS{study.accession[2:]}"
    item.RequestedProcedureID = f"RP{study.accession[2:]}"
    item.StudyInstanceUID = study.uid
    item.PatientID = patient.patient_id
    return item


def generate_archive(
    root: str | Path,
    n_files: int,
    *,
    seed: int = 0,
    pixels: str = "small",
    patients: int | None = None,
    modalities: tuple[str, ...] = ("CT", "MR", "CR", "US"),
    private: bool = True,
    sequences: bool = True,
) -> list[Path]:
    """Write ``n_files`` synthetic DICOM files under ``root`` and return their paths, in order.

    Parameters
    ----------
    root
        Folder to write into (created if missing). Existing files with the same names are
        overwritten; other files are left alone.
    n_files
        Number of files to write.
    seed
        Same seed, same arguments -> byte-identical files.
    pixels
        ``"small"`` (16x16, metadata-bound runs) or ``"ct"`` (512x512 int16, I/O-bound runs).
    patients
        Number of patients; default about one per 60 files.
    modalities
        Modalities to draw studies from (keys of :data:`SOP_CLASSES`).
    private, sequences
        Include the private blocks / the nested sequences.

    Returns
    -------
    list of Path
        The written files, ``root/<patient>/<study>/<series>/IM0001.dcm`` ...
    """
    if pixels not in PIXEL_MODES:
        raise ValueError(f"pixels must be one of {sorted(PIXEL_MODES)}, got {pixels!r}")
    root = Path(root)
    written: list[Path] = []
    layout = iter_layout(n_files, seed=seed, patients=patients, modalities=modalities)
    for patient, study, series in layout:
        folder = root / patient.folder / study.folder / series.folder(study.modality)
        folder.mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"deid_batch.synth/{seed}/{series.uid}")
        for instance in range(1, series.n_instances + 1):
            ds = make_dataset(
                rng,
                patient=patient,
                study=study,
                series=series,
                instance=instance,
                pixels=pixels,
                seed=seed,
                private=private,
                sequences=sequences,
            )
            path = folder / f"IM{instance:04d}.dcm"
            dcmwrite(path, ds, enforce_file_format=True)
            written.append(path)
    logger.info("wrote %d synthetic files under %s", len(written), root)
    return written


_PHI_VRS = frozenset({"PN", "DA", "DT", "TM", "LO", "SH", "LT", "ST", "UT", "UI", "AS"})
_NOT_PHI = frozenset(
    {
        "SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID",
        "SpecificCharacterSet", "Modality", "Manufacturer", "ManufacturerModelName",
        "CodingSchemeDesignator", "CodeValue", "CodeMeaning", "BodyPartExamined", "ValueType",
        "RescaleType", "PositionReferenceIndicator", "IssuerOfPatientID",
    }
)  # fmt: skip


def phi_values(source: str | Path | Dataset) -> frozenset[str]:
    """The identifying strings of a synthetic file: names, IDs, dates, times, UIDs, free text.

    Collected from every level of nesting and from the private blocks (binary values excluded);
    names are also returned split on ``^``. A de-identified output should contain none of the
    distinctive ones (patient name parts, ``PatientID``, ``AccessionNumber``, the original UIDs).
    """
    ds = source if isinstance(source, Dataset) else dcmread(source, stop_before_pixels=True)
    found: set[str] = set()

    def walk(d: Dataset) -> None:
        for elem in d:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            elif elem.tag.is_private_creator or elem.keyword in _NOT_PHI:
                continue
            elif elem.VR in _PHI_VRS and elem.value not in ("", None):
                text = str(elem.value)
                found.add(text)
                if elem.VR == "PN":
                    found.update(part for part in text.split("^") if len(part) > 2)

    walk(ds)
    return frozenset(found)


def main(argv: list[str] | None = None) -> int:
    """``python -m deid_batch.synth FOLDER [--files N] [--seed S] [--pixels MODE] [--patients N]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m deid_batch.synth",
        description="Write a deterministic synthetic PACS export (fake PHI, nested "
        "patient/study/series folders) for trying deid-batch, tests and benchmarks.")
    parser.add_argument("folder", metavar="FOLDER", help="where to write the archive (created)")
    parser.add_argument("--files", type=int, default=200, metavar="N", help="number of files (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same bytes")
    parser.add_argument("--pixels", choices=sorted(PIXEL_MODES), default="small",
                        help="pixel data size: small (16x16) or ct (512x512); default small")
    parser.add_argument("--patients", type=int, metavar="N", help="number of patients (default ~1 per 60 files)")
    args = parser.parse_args(argv)
    if args.files < 1:
        parser.error(f"--files {args.files}: must be at least 1")
    if args.patients is not None and args.patients < 1:
        parser.error(f"--patients {args.patients}: must be at least 1")
    root = Path(args.folder)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        parser.error(f"FOLDER {args.folder}: exists and is not an empty folder; give a new folder")
    paths = generate_archive(root, args.files, seed=args.seed, pixels=args.pixels, patients=args.patients)
    print(f"wrote {len(paths)} synthetic DICOM files under {root}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

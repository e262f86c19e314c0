"""The synthetic archive generator: deterministic, nested, realistic, readable."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest

from deid_batch.synth import (
    ACME_CREATOR,
    CSA_CREATOR,
    generate_archive,
    iter_layout,
    make_dataset,
    phi_values,
)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_byte_identical_archives(tmp_path: Path) -> None:
    generate_archive(tmp_path / "a", 40, seed=7)
    generate_archive(tmp_path / "b", 40, seed=7)
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert len(a) == 40
    assert a == b


def test_different_seeds_give_different_identifiers(tmp_path: Path) -> None:
    (first,) = generate_archive(tmp_path / "a", 1, seed=1)
    (second,) = generate_archive(tmp_path / "b", 1, seed=2)
    one, two = pydicom.dcmread(first), pydicom.dcmread(second)
    assert one.StudyInstanceUID != two.StudyInstanceUID
    assert one.SOPInstanceUID != two.SOPInstanceUID


@pytest.mark.parametrize("n_files", [0, 1, 7, 123])
def test_writes_exactly_the_requested_number_of_files(tmp_path: Path, n_files: int) -> None:
    written = generate_archive(tmp_path, n_files, seed=3)
    assert len(written) == n_files
    assert len(set(written)) == n_files
    assert sorted(written) == sorted(p for p in tmp_path.rglob("*") if p.is_file())


def test_layout_is_nested_with_phi_in_folder_names_and_repeated_basenames(tmp_path: Path) -> None:
    written = generate_archive(tmp_path, 200, seed=0)
    for path in written:
        patient_folder, study_folder, series_folder, name = path.relative_to(tmp_path).parts
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert patient_folder == f"{ds.PatientName}_{ds.PatientID}"
        assert study_folder == f"{ds.StudyDate}_{ds.AccessionNumber}"
        assert series_folder.startswith("SE") and series_folder.endswith(ds.Modality)
        assert name == f"IM{int(ds.InstanceNumber):04d}.dcm"
    counts = Counter(p.name for p in written)
    assert counts["IM0001.dcm"] > 1


def test_patients_option_controls_patient_count(tmp_path: Path) -> None:
    written = generate_archive(tmp_path, 30, seed=0, patients=3)
    assert len({p.relative_to(tmp_path).parts[0] for p in written}) == 3


@pytest.mark.parametrize(("pixels", "shape"), [("small", (16, 16)), ("ct", (512, 512))])
def test_files_open_and_pixels_decode(tmp_path: Path, pixels: str, shape: tuple[int, int]) -> None:
    for path in generate_archive(tmp_path, 8, seed=5, pixels=pixels, modalities=("CT", "MR")):
        ds = pydicom.dcmread(path)
        assert ds.preamble == b"\x00" * 128
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        arr = ds.pixel_array
        assert isinstance(arr, np.ndarray)
        assert arr.shape == shape
        assert arr.dtype == (np.int16 if ds.Modality == "CT" else np.uint16)
        if ds.Modality == "CT":
            assert ds.RescaleSlope == 1 and ds.RescaleIntercept == 0


def test_headers_carry_phi_in_nested_sequences_and_private_blocks(tmp_path: Path) -> None:
    (path,) = generate_archive(tmp_path, 1, seed=11)
    ds = pydicom.dcmread(path)
    request = ds.RequestAttributesSequence[0]
    assert request.AccessionNumber == ds.AccessionNumber
    assert request.StudyInstanceUID == ds.StudyInstanceUID
    deep = request.ScheduledProtocolCodeSequence[0].ProtocolContextSequence[0]
    assert ds.StudyDate in deep.TextValue
    assert ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID == ds.StudyInstanceUID
    acme = ds.private_block(0x0009, ACME_CREATOR)
    assert acme[0x10].value == ds.PatientName
    assert acme[0x11].value == ds.StudyDate
    assert ds.private_block(0x0029, CSA_CREATOR)[0x10].VR == "OB"
    for keyword in ("PatientBirthDate", "InstitutionName", "ReferringPhysicianName", "StudyID",
                    "OperatorsName", "AcquisitionDateTime", "PatientAge"):  # fmt: skip
        assert ds.get(keyword), keyword


def test_private_and_sequences_can_be_switched_off(tmp_path: Path) -> None:
    (path,) = generate_archive(tmp_path, 1, private=False, sequences=False)
    ds = pydicom.dcmread(path)
    assert not any(elem.tag.is_private for elem in ds)
    assert not any(elem.VR == "SQ" for elem in ds)


def test_modalities_have_their_sop_classes(tmp_path: Path) -> None:
    written = generate_archive(tmp_path, 300, seed=2)
    seen = {}
    for path in written:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        seen[ds.Modality] = ds.SOPClassUID
    assert set(seen) == {"CT", "MR", "CR", "US"}
    assert seen["CT"] == "1.2.840.10008.5.1.4.1.1.2"


def test_phi_values_lists_the_distinctive_identifiers(tmp_path: Path) -> None:
    (path,) = generate_archive(tmp_path, 1, seed=4)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    phi = phi_values(path)
    for value in (ds.PatientID, str(ds.PatientName), ds.AccessionNumber, ds.StudyInstanceUID,
                  ds.PatientBirthDate, ds.OtherPatientIDsSequence[0].PatientID):  # fmt: skip
        assert value in phi
    assert "ORIGINAL" not in phi and ds.SOPClassUID not in phi


def test_make_dataset_builds_one_instance_without_touching_disk() -> None:
    patient, study, series = next(iter_layout(5, seed=0, modalities=("MR",)))
    ds = make_dataset(random.Random(0), patient=patient, study=study, series=series, instance=3)
    assert ds.Modality == "MR" and ds.InstanceNumber == 3
    assert ds.PatientName == patient.name


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pixels"):
        generate_archive(tmp_path, 1, pixels="huge")
    with pytest.raises(ValueError, match="modalities"):
        generate_archive(tmp_path, 1, modalities=("XX",))

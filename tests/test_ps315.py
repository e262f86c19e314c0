"""Issue 11: the DICOM PS3.15 Annex E profile as built-in recipes (Table E.1-1, edition 2024e).

Every action kind of the table at the top level and nested in sequences, private tags, curves
and overlays, keyed pseudonyms (UIDs with references, PatientID/PatientName, date offsets) and
every option; the checked-in recipes equal the generated ones.
"""

from __future__ import annotations

import csv
import json

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from deid_batch import EngineOptions, deidentify_dataset
from deid_batch.cli import main
from deid_batch.errors import RecipeError
from deid_batch.recipe import load_recipe, ps315
from deid_batch.recipe.builtins import BUILTINS, builtin_path
from deid_batch.recipe.keyed import CID_7050, clean_text, keyed_uid_value

KEY = b"0123456789abcdef0123456789abcdef"
CT = "1.2.840.10008.5.1.4.1.1.2"
SOP, STUDY, SERIES, FOR = "1.2.3.4.5.100", "1.2.3.4.5.1", "1.2.3.4.5.10", "1.2.3.4.5.99"
PRIOR = "1.2.3.4.5.101"  # another instance this one references


def _ds(patient_id: str = "MRN12345", name: str = "DOE^JOHN", sop: str = SOP) -> Dataset:
    """A CT header with one attribute of every action kind, top level and nested."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CT, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = STUDY, SERIES, FOR
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Modality, ds.Manufacturer = "CT", "ACME"  # not in the table: kept
    ds.PatientName, ds.PatientID = name, patient_id  # keyed
    ds.PatientBirthDate, ds.AccessionNumber = "19600101", "ACC777"  # Z
    ds.PatientAddress = "1 Main Street"  # X
    ds.PatientSex, ds.PatientAge, ds.PatientWeight = "M", "063Y", "80"  # Z, X, X
    ds.InstitutionName, ds.StationName = "St Elsewhere Hospital", "CTROOM1"  # X/Z/D -> D
    ds.DeviceSerialNumber, ds.StationAETitle = "SN998877", "CTAE"  # X/Z/D, X
    ds.StudyDate, ds.SeriesDate, ds.ContentDate = "20230902", "20230904", "20230902"  # Z, X/D, Z/D
    ds.AcquisitionDate = "20230902"  # X/Z -> Z
    ds.StudyTime = "101500"
    ds.StudyDescription = "CT chest for DOE JOHN MRN12345 on 2023-09-02"  # X (C: clean desc.)
    ds.ImageComments = "seen at St Elsewhere Hospital"  # X
    ds.ProtocolName = "CHEST ROUTINE"  # X/D
    ds.CertificateOfSigner = b"SIGNATURE-BYTES!"  # OB, D
    ds.ImagePositionPatient, ds.PixelSpacing = [-120.0, -120.0, -1.25], [0.7, 0.7]
    ref = Dataset()  # X/Z/U*: kept, UIDs keyed
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = CT, PRIOR
    nested = Dataset()  # two levels down, inside a sequence that stays
    nested.PatientName, nested.AccessionNumber, nested.PatientAddress = name, "ACC777", "1 Main Street"
    nested.StudyInstanceUID, nested.StudyDate = STUDY, "20230902"
    ref.ReferencedImageSequence = Sequence([nested])
    ds.ReferencedImageSequence = Sequence([ref])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID, study_ref.ReferencedSOPInstanceUID = "1.2.840.10008.3.1.2.3.1", STUDY
    ds.ReferencedStudySequence = Sequence([study_ref])  # X/Z -> Z
    person = Dataset()
    person.CodeValue, person.CodingSchemeDesignator, person.CodeMeaning = "EMP42", "99HOSP", "Dr Who"
    observer = Dataset()  # D sequence: kept, items de-identified
    observer.VerifyingObserverName = "WHO^DOCTOR"
    observer.PersonIdentificationCodeSequence = Sequence([person])
    ds.VerifyingObserverSequence = Sequence([observer])
    ds.add_new(0x50000010, "US", 3)  # curve (50xx)
    ds.add_new(0x60000010, "US", 16)  # overlay rows, overlay data
    ds.add_new(0x60003000, "OW", b"\x00" * 32)
    block = ds.private_block(0x0009, "ACME 1.0", create=True)
    block.add_new(0x10, "PN", name)
    private_item = Dataset()
    private_item.PatientID = patient_id
    block.add_new(0x11, "SQ", Sequence([private_item]))
    return ds


def _run(ds: Dataset, *names: str, variables=None, key: bytes = KEY, recipes=()) -> Dataset:
    recipe = load_recipe(["ps3.15-basic", *names, *recipes], base="remove-everything")
    return deidentify_dataset(ds, recipe, variables, options=EngineOptions(uid_key=key)).dataset


def _codes(ds: Dataset) -> list[str]:
    return [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]


# ------------------------------------------------------------------------------ table + recipes
def test_checked_in_recipes_equal_the_generated_ones():
    assert ps315.generate(check=True) == []


def test_the_table_is_the_standards_with_its_edition_named():
    text = ps315.TABLE.read_text(encoding="utf-8")
    assert text.startswith(f"# {ps315.EDITION}, Table E.1-1")
    rows = ps315.load_table()
    assert len(rows) == 621
    by_kw = {r.keyword: r for r in rows if r.keyword}
    assert by_kw["AccessionNumber"].actions["basic"] == "Z"
    assert by_kw["PatientID"].actions["basic"] == "Z/D"
    assert by_kw["StudyInstanceUID"].actions["basic"] == "U"
    assert by_kw["ReferencedImageSequence"].actions["basic"] == "X/Z/U*"
    assert by_kw["StudyDate"].actions["rtn_long_modif_dates"] == "C"
    assert {r.tag for r in rows if not r.keyword} == {
        "(50XX,XXXX)", "(60XX,3000)", "(60XX,4000)", "(GGGG,EEEE) WHERE GGGG IS ODD"}
    # the keyword column is pydicom's for the tag: no invented or mistyped rows
    for row in rows:
        if row.keyword:
            assert pydicom.datadict.keyword_for_tag(int(row.tag[1:5] + row.tag[6:10], 16)) == row.keyword


def test_the_source_json_imports_to_the_same_csv(tmp_path):
    rows = ps315.load_table()
    cells = {"basic": "basicProfile", "rtn_uids": "rtnUIDsOpt", "clean_desc": "cleanDescOpt"}
    data = [{"tag": r.tag, "name": r.name, "stdCompIOD": r.actions["std_comp_iod"],
             **{j: r.actions[c] for c, j in cells.items() if r.actions[c]}} for r in rows]
    (tmp_path / "t.json").write_text(json.dumps(data))
    ps315.import_table(tmp_path / "t.json", tmp_path / "t.csv")
    with (tmp_path / "t.csv").open() as fh:
        back = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    assert [(b["tag"], b["keyword"], b["basic"], b["clean_desc"]) for b in back] == \
        [(r.tag, r.keyword, r.actions["basic"], r.actions["clean_desc"]) for r in rows]


@pytest.mark.parametrize("cell, performed", [("X", "X"), ("Z", "Z"), ("D", "D"), ("U", "U"),
                                              ("X/Z", "Z"), ("X/D", "D"), ("X/Z/D", "D"),
                                              ("Z/D", "D"), ("X/Z/U*", "U")])
def test_compound_actions_resolve_to_the_conservative_one(cell, performed):
    assert ps315.resolve_basic(cell) == performed


def test_every_builtin_ps315_recipe_loads_through_the_user_parser():
    names = [n for n in BUILTINS if n.startswith("ps3.15-")]
    assert len(names) == 1 + len(ps315.OPTIONS)
    recipe = load_recipe(names, base="remove-everything")
    assert recipe.stack == tuple(names)  # ps3.15-basic is complete: no base under it
    copy = builtin_path(BUILTINS["ps3.15-basic"])
    assert load_recipe(str(copy), base="none").header == load_recipe("ps3.15-basic", base="none").header


def test_an_option_without_the_basic_profile_first_is_refused():
    with pytest.raises(RecipeError, match="ps3.15-retain-uids refines ps3.15-basic"):
        load_recipe(["ps3.15-retain-uids"], base="remove-everything")


# --------------------------------------------------------------------------- basic profile
def test_basic_profile_actions_at_the_top_level():
    out = _run(_ds())
    assert "PatientAddress" not in out and "PatientAge" not in out and "StationAETitle" not in out  # X
    assert "StudyDescription" not in out and "ImageComments" not in out  # X
    for kw in ("PatientBirthDate", "AccessionNumber", "PatientSex", "StudyDate", "AcquisitionDate"):
        assert kw in out and not out[kw].value, kw  # Z, X/Z: present, zero length
    assert out.InstitutionName == "ANONYMOUS" and out.StationName == "ANONYMOUS"  # X/Z/D
    assert out.DeviceSerialNumber == "ANONYMOUS" and out.ProtocolName == "ANONYMOUS"  # X/Z/D, X/D
    assert out.SeriesDate == "19000101" and out.ContentDate == "19000101"  # X/D, Z/D on DA
    assert out.CertificateOfSigner == b"\x00\x00"  # D on OB
    assert "StudyTime" in out and not out.StudyTime  # Z
    assert out.ImageType == ["ORIGINAL", "PRIMARY", "AXIAL"] and out.Manufacturer == "ACME"  # kept
    assert out.ImagePositionPatient == [-120.0, -120.0, -1.25] and out.PixelSpacing == [0.7, 0.7]
    assert out.SOPClassUID == CT
    assert out.PatientIdentityRemoved == "YES"
    assert out.DeidentificationMethod == CID_7050["113100"]
    assert _codes(out) == ["113100"]
    assert out.DeidentificationMethodCodeSequence[0].CodingSchemeDesignator == "DCM"


def test_sequences_nested_items_get_the_table_at_every_depth():
    out = _run(_ds())
    study_ref = out.ReferencedStudySequence[0]  # X/Z sequence: kept, items de-identified
    assert study_ref.ReferencedSOPInstanceUID == out.StudyInstanceUID != STUDY
    inner = out.ReferencedImageSequence[0].ReferencedImageSequence[0]  # X/Z/U*: kept
    assert inner.PatientName != "DOE^JOHN" and "PatientAddress" not in inner
    assert not inner.AccessionNumber and not inner.StudyDate
    assert inner.StudyInstanceUID == out.StudyInstanceUID  # same keyed UID at every depth
    observer = out.VerifyingObserverSequence[0]  # D sequence: kept, de-identified
    assert observer.VerifyingObserverName == "ANONYMOUS"
    code = observer.PersonIdentificationCodeSequence[0]
    assert code.CodeValue == "ANONYMOUS" and code.CodeMeaning == "ANONYMOUS"


def test_private_tags_curves_and_overlays_are_removed():
    out = _run(_ds())
    assert not any(e.tag.is_private for e in out.iterall())
    assert not any(e.tag.group in (0x5000, 0x6000) for e in out.iterall())


def test_uids_are_keyed_consistently_and_references_follow():
    first = _run(_ds())
    prior = _run(_ds(sop=PRIOR))  # the instance the first one references
    assert first.SOPInstanceUID == keyed_uid_value(KEY, SOP) != SOP
    assert first.ReferencedImageSequence[0].ReferencedSOPInstanceUID == prior.SOPInstanceUID
    assert first.FrameOfReferenceUID == keyed_uid_value(KEY, FOR)
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    assert first.ReferencedImageSequence[0].ReferencedSOPClassUID == CT  # well-known: kept
    assert first.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert _run(_ds(), key=b"another key, another set of UIDs").SOPInstanceUID != first.SOPInstanceUID


def test_patient_pseudonyms_are_per_patient_and_the_same_in_every_call():
    a1, a2 = _run(_ds(sop="1.2.3.1")), _run(_ds(sop="1.2.3.2"))
    b = _run(_ds("MRN999", "ROE^JANE", sop="1.2.3.3"))
    assert (a1.PatientID, a1.PatientName) == (a2.PatientID, a2.PatientName)
    assert a1.PatientID != b.PatientID and a1.PatientName != b.PatientName
    assert "MRN12345" not in a1.PatientID and "DOE" not in str(a1.PatientName)
    assert a1.ReferencedImageSequence[0].ReferencedImageSequence[0].PatientName == a1.PatientName
    assert _run(_ds(), key=b"other key" * 4).PatientID != a1.PatientID


def test_a_user_recipe_after_the_profile_sets_patient_id_from_the_mapping(tmp_path):
    mine = tmp_path / "mine.recipe"
    mine.write_text("FORMAT dicom\n%header\nREPLACE PatientID var:id\n")
    out = _run(_ds(), variables={"id": "SUBJ-01"}, recipes=[str(mine)])
    assert out.PatientID == "SUBJ-01"
    assert str(out.PatientName).startswith("ANONYMOUS^")


# ------------------------------------------------------------------------------------ options
def test_retain_uids_keeps_every_uid():
    out = _run(_ds(), "ps3.15-retain-uids")
    assert (out.SOPInstanceUID, out.StudyInstanceUID, out.FrameOfReferenceUID) == (SOP, STUDY, FOR)
    assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == PRIOR
    assert out.ReferencedImageSequence[0].ReferencedImageSequence[0].StudyInstanceUID == STUDY
    assert out.ReferencedStudySequence[0].ReferencedSOPInstanceUID == STUDY
    assert _codes(out) == ["113100", "113110"]


def test_retain_device_identity_keeps_devices_and_cleans_ae_titles():
    out = _run(_ds(), "ps3.15-retain-device-identity")
    assert out.DeviceSerialNumber == "SN998877" and out.StationName == "CTROOM1"  # K
    assert out.StationAETitle == "CTAE"  # C: nothing identifying of this file in it
    assert _codes(out) == ["113100", "113109"]


def test_retain_institution_identity_keeps_the_institution():
    out = _run(_ds(), "ps3.15-retain-institution-identity")
    assert out.InstitutionName == "St Elsewhere Hospital"
    assert _codes(out) == ["113100", "113112"]


def test_retain_patient_characteristics_keeps_sex_age_weight():
    out = _run(_ds(), "ps3.15-retain-patient-characteristics")
    assert (out.PatientSex, out.PatientAge, out.PatientWeight) == ("M", "063Y", 80)
    assert "PatientAddress" not in out
    assert _codes(out) == ["113100", "113108"]


def test_retain_modified_dates_shifts_a_patients_dates_by_one_keyed_offset():
    from datetime import date

    def days(text: str) -> int:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8])).toordinal()

    out = _run(_ds(sop="1.2.3.1"), "ps3.15-retain-modified-dates")
    other_file = _run(_ds(sop="1.2.3.2"), "ps3.15-retain-modified-dates")
    other_patient = _run(_ds("MRN999", "ROE^JANE"), "ps3.15-retain-modified-dates")
    offset = days(out.StudyDate) - days("20230902")
    assert -3652 <= offset <= -1
    assert days(out.SeriesDate) - days(out.StudyDate) == 2  # the interval survives
    assert out.ReferencedImageSequence[0].ReferencedImageSequence[0].StudyDate == out.StudyDate
    assert other_file.StudyDate == out.StudyDate
    assert other_patient.StudyDate != out.StudyDate
    assert out.StudyTime == "101500"  # whole days: the time of day is kept
    assert "PatientBirthDate" in out and not out.PatientBirthDate  # not in the option: Z
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert _codes(out) == ["113100", "113107"]


def test_clean_descriptors_keeps_descriptions_without_this_files_identifiers():
    out = _run(_ds(), "ps3.15-clean-descriptors")
    assert out.StudyDescription == "CT chest for on"
    assert out.ImageComments == "seen at"
    assert out.ProtocolName == "CHEST ROUTINE"
    assert _codes(out) == ["113100", "113105"]


def test_clean_text_removes_values_components_and_date_spellings_only():
    ids = ["DOE^JOHN", "MRN12345", "20230902", "AB"]
    assert clean_text("John Doe, mrn12345, 02/09/2023, ABDOMEN", ids) == ", , , ABDOMEN"
    assert clean_text("nothing to see", ids) == "nothing to see"


def test_options_stack_and_later_lines_win_for_shared_attributes():
    out = _run(_ds(), "ps3.15-retain-modified-dates", "ps3.15-clean-descriptors",
               "ps3.15-retain-patient-characteristics")
    assert _codes(out) == ["113100", "113107", "113105", "113108"]
    assert list(out.DeidentificationMethod) == [CID_7050[c] for c in _codes(out)]
    assert out.StudyDescription == "CT chest for on" and out.PatientSex == "M"
    assert out.StudyDate != "20230902" and out.StudyDate != ""


# ---------------------------------------------------------------------------------------- CLI
def test_recipes_lists_every_builtin_on_one_line_and_prints_one(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(BUILTINS)
    assert main(["recipes", "ps3.15-basic"]) == 0
    assert capsys.readouterr().out == ps315.recipe_text("ps3.15-basic")
    assert main(["recipes", "no-such-recipe"]) == 2

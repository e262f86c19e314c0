"""Header actions on real pydicom datasets: deid 0.4.13 semantics and our deviations."""

from __future__ import annotations

import pickle
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from deid_batch.errors import DatasetError
from deid_batch.recipe.engine import (
    DEFAULT_SKIP,
    EngineOptions,
    EngineResult,
    deidentify_dataset,
    private_tags_warning,
)
from deid_batch.recipe.parse import load_recipe

KEEP_PRIVATE = EngineOptions(remove_private=False)


@pytest.fixture
def make_dataset() -> Callable[..., Dataset]:
    """A small CT-like dataset with file meta, a nested sequence and private elements."""

    def make(**overrides: Any) -> Dataset:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = "1.2.3.9"
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = "1.2.3.4.5"
        ds.StudyInstanceUID = "1.2.3.4"
        ds.SeriesInstanceUID = "1.2.3.4.1"
        ds.StudyDate = "20230101"
        ds.StudyTime = "011635.943000"
        ds.AcquisitionDateTime = "20230101011721.621000"
        ds.ContentDate = ""
        ds.AccessionNumber = "ACC123"
        ds.Modality = "CT"
        ds.Manufacturer = "SIEMENS"
        ds.ManufacturerModelName = "SOMATOM"
        ds.PatientName = "SIMPSON^HOMER^J^"
        ds.PatientID = "PID42"
        ds.PatientBirthDate = "19700101"
        ds.OperatorsName = "HIBBARD^A"
        ds.Rows = 2
        ds.Columns = 2
        ds.BitsAllocated = 16
        ds.SliceThickness = "5.0"
        ds.PixelData = b"\x00\x01" * 4
        item = Dataset()
        item.AccessionNumber = "ACC123"
        item.StudyInstanceUID = "1.2.3.4"
        item.RequestedProcedureDescription = "HEAD"
        ds.RequestAttributesSequence = Sequence([item])
        ds.add_new(0x00330010, "LO", "MITRA OBJECT UTF8 ATTRIBUTES 1.0")
        ds.add_new(0x0033101E, "LO", "SIMPSON^HOMER")
        ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")
        ds.add_new(0x00291019, "LO", "20230101")
        for key, value in overrides.items():
            setattr(ds, key, value)
        return ds

    return make


def run(ds: Dataset, recipe_text: str, tmp_path, variables=None, functions=None,
        options: EngineOptions = KEEP_PRIVATE) -> EngineResult:
    path = tmp_path / "deid.test"
    path.write_text("FORMAT dicom\n%header\n" + textwrap.dedent(recipe_text).strip() + "\n")
    return deidentify_dataset(ds, load_recipe(str(path), base=None), variables, functions=functions,
                              options=options, source="in/file.dcm")


def value(ds: Dataset, keyword: str) -> Any:
    """The element value as a re-read file would give it: absent / '' for blank text."""
    if keyword not in ds:
        return "absent"
    v = ds[keyword].value
    return "" if v is None else v


# -------------------------------------------------------------------------- the 36-case matrix
MATRIX_ACTIONS = {
    "ADD": "ADD StudyDate 20221128",
    "REPLACE": "REPLACE StudyDate 20221129",
    "JITTER": "JITTER StudyDate 5",
    "BLANK": "BLANK StudyDate",
    "KEEP": "KEEP StudyDate",
    "REMOVE": "REMOVE StudyDate",
}
# deid-semantics.md section 4.9, rows = first action, columns = second action
MATRIX = {
    "ADD": ["20221128", "20221129", "20221203", "", "20221128", "absent"],
    "REPLACE": ["20221128", "20221129", "20221204", "", "20230101", "20221129"],
    "JITTER": ["20221128", "20221129", "20230111", "", "20230101", "20230106"],
    "BLANK": ["20221128", "20221129", "", "", "20230101", "absent"],
    "KEEP": ["20221128", "20230101", "20230101", "20230101", "20230101", "20230101"],
    "REMOVE": ["20221128", "20221129", "20230106", "absent", "20230101", "absent"],
}
MATRIX_CASES = [(first, second, expected)
                for first, row in MATRIX.items()
                for second, expected in zip(MATRIX_ACTIONS, row, strict=True)]


@pytest.mark.parametrize(("first", "second", "expected"), MATRIX_CASES,
                         ids=[f"{a}-{b}" for a, b, _ in MATRIX_CASES])
def test_interaction_matrix_matches_deid(make_dataset, tmp_path, first, second, expected):
    ds = make_dataset()
    run(ds, MATRIX_ACTIONS[first] + "\n" + MATRIX_ACTIONS[second], tmp_path)
    assert value(ds, "StudyDate") == expected


# -------------------------------------------------------------------------- selectors
def test_keyword_and_tag_selectors_reach_nested_occurrences(make_dataset, tmp_path):
    for selector in ("AccessionNumber", "accessionnumber", "(0008,0050)", "00080050"):
        ds = make_dataset()
        run(ds, f"REMOVE {selector}", tmp_path)
        assert "AccessionNumber" not in ds
        assert "AccessionNumber" not in ds.RequestAttributesSequence[0]


def test_nested_uid_and_nested_name_select_only_the_nested_element(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, "REMOVE (0040,0275)__0__(0008,0050)\n"
            "REPLACE RequestAttributesSequence__StudyInstanceUID 9.9", tmp_path)
    assert ds.AccessionNumber == "ACC123"
    item = ds.RequestAttributesSequence[0]
    assert "AccessionNumber" not in item
    assert item.StudyInstanceUID == "9.9" and ds.StudyInstanceUID == "1.2.3.4"


def test_private_creator_selector_matches_the_private_element(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, 'REMOVE (0033,"MITRA OBJECT UTF8 ATTRIBUTES 1.0",1E)', tmp_path)
    assert 0x0033101E not in ds and 0x00330010 in ds


def test_wrong_private_creator_selects_nothing(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, 'REMOVE 0033,"MITRA OBJECT UTF8 ATTRIBUTES 1",1E', tmp_path)
    assert 0x0033101E in ds


def test_startswith_reaches_sequence_descendants(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, "BLANK startswith:RequestAttributes", tmp_path)
    assert len(ds.RequestAttributesSequence) == 0


def test_expanders_lowercase_the_expression_and_search_names_and_tags(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, "REMOVE endswith:Name\nREMOVE contains:0008103E\nREMOVE startswith:0010", tmp_path)
    for kw in ("PatientName", "OperatorsName", "PatientID", "PatientBirthDate"):
        assert kw not in ds
    assert "ManufacturerModelName" not in ds  # endswith:name on "manufacturermodelname"
    assert "Manufacturer" in ds


def test_except_keeps_everything_matching_as_substring(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, "REMOVE except:Manufacturer", tmp_path)
    top = {e.keyword for e in ds}
    assert top == {"Manufacturer", "ManufacturerModelName", "PixelData"}
    # file meta: only the skip-listed elements survive
    assert {e.keyword for e in ds.file_meta} == {"TransferSyntaxUID", "ImplementationClassUID"}


def test_select_vr_and_group(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, "BLANK select:VR:pn\nREMOVE select:group:0033", tmp_path)
    assert value(ds, "PatientName") == "" and value(ds, "OperatorsName") == ""
    assert 0x00330010 not in ds and 0x0033101E not in ds


def test_remove_contains_uid_strips_file_meta_media_storage_uids(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, "REMOVE contains:UID", tmp_path)
    assert "MediaStorageSOPInstanceUID" not in ds.file_meta
    assert "MediaStorageSOPClassUID" not in ds.file_meta
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian  # skip list
    assert "StudyInstanceUID" not in ds.RequestAttributesSequence[0]


def test_remove_all_leaves_pixels_and_protected_file_meta(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, "REMOVE ALL", tmp_path)
    assert [e.keyword for e in ds] == ["PixelData"]
    assert {e.keyword for e in ds.file_meta} == {"TransferSyntaxUID", "ImplementationClassUID"}


def test_disable_skip_lets_remove_all_take_the_pixels(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, "REMOVE ALL", tmp_path, options=EngineOptions(remove_private=False,
                                                          disable_skip=True))
    assert len(ds) == 0 and len(ds.file_meta) == 0


def test_keep_of_a_top_level_tag_protects_nested_copies(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, "KEEP AccessionNumber\nREMOVE contains:Accession", tmp_path)
    assert ds.AccessionNumber == "ACC123"
    assert ds.RequestAttributesSequence[0].AccessionNumber == "ACC123"


def test_keep_of_a_nested_only_selection_protects_nothing(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, "KEEP RequestAttributesSequence__AccessionNumber\nREMOVE AccessionNumber", tmp_path)
    assert "AccessionNumber" not in ds
    assert "AccessionNumber" not in ds.RequestAttributesSequence[0]


def test_values_list_removes_fields_containing_the_values(make_dataset, tmp_path):
    ds = make_dataset()
    path = tmp_path / "deid.values"
    path.write_text("FORMAT dicom\n%values names\nSPLIT PatientName by=\"^\";minlength=4\n"
                    "%header\nREMOVE values:names\n")
    deidentify_dataset(ds, load_recipe(str(path), base=None), options=KEEP_PRIVATE)
    assert "PatientName" not in ds          # SIMPSON, HOMER
    assert 0x0033101E not in ds             # private copy of the name
    assert "OperatorsName" in ds


def test_fields_list_re_expands_by_tag_number(make_dataset, tmp_path):
    ds = make_dataset()
    path = tmp_path / "deid.fields"
    path.write_text("FORMAT dicom\n%fields f\nFIELD RequestAttributesSequence__AccessionNumber\n"
                    "%header\nREMOVE fields:f\n")
    deidentify_dataset(ds, load_recipe(str(path), base=None), options=KEEP_PRIVATE)
    assert "AccessionNumber" not in ds  # deid quirk Q10: the top level goes too


# -------------------------------------------------------------------------- actions
def test_replace_converts_plain_values_by_vr(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, "REPLACE Rows 12\nREPLACE SliceThickness 2.5\nREPLACE PatientName X", tmp_path)
    assert ds.Rows == 12 and isinstance(ds.Rows, int)
    assert float(ds.SliceThickness) == 2.5
    assert ds.PatientName == "X"


def test_numeric_conversion_failure_leaves_the_value_with_a_warning(make_dataset, tmp_path):
    ds = make_dataset()
    result = run(ds, "REPLACE Rows abc", tmp_path)
    assert ds.Rows == 2
    assert any("not valid for VR US" in w for w in result.warnings)


def test_add_creates_top_level_only_and_hex_tags_get_vr_st(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, "ADD AccessionNumber NEW\nADD 11112221 SIMPSON\nADD PatientIdentityRemoved YES",
        tmp_path)
    assert ds.AccessionNumber == "NEW"
    assert ds.RequestAttributesSequence[0].AccessionNumber == "ACC123"
    assert ds[0x11112221].VR == "ST" and ds[0x11112221].value == "SIMPSON"
    assert ds.PatientIdentityRemoved == "YES"


def test_add_overwrites_skip_listed_file_meta(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, "ADD TransferSyntaxUID 1.2.840.10008.1.2", tmp_path)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"


def test_blank_keeps_the_element_with_an_empty_value(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, "BLANK PatientName\nBLANK Rows\nBLANK RequestAttributesSequence", tmp_path)
    assert ds["PatientName"].value in ("", None)
    assert ds["Rows"].value is None
    assert len(ds.RequestAttributesSequence) == 0


def test_removing_every_child_leaves_an_empty_item(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, "REMOVE startswith:RequestAttributesSequence__", tmp_path)
    assert len(ds.RequestAttributesSequence) == 1
    assert len(ds.RequestAttributesSequence[0]) == 0


def test_jitter_shifts_dates_and_datetimes_and_skips_empty(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, "JITTER StudyDate 1\nJITTER AcquisitionDateTime 1\nJITTER ContentDate 1\n"
            "JITTER 00291019 -1", tmp_path)
    assert ds.StudyDate == "20230102"
    assert ds.AcquisitionDateTime == "20230102011721.621000"
    assert ds.ContentDate == ""
    assert ds[0x00291019].value == "20221231"


def test_jitter_multi_valued_dates_each_shift(make_dataset, tmp_path):
    ds = make_dataset()
    ds.add_new(0x00181200, "DA", ["20131210", "20131215"])  # DateOfLastCalibration
    run(ds, "JITTER DateOfLastCalibration 10", tmp_path)
    assert list(ds.DateOfLastCalibration) == ["20131220", "20131225"]


def test_remove_with_func_condition_removes_only_true_fields(make_dataset, tmp_path):
    ds = make_dataset()

    def is_phi(dicom, value, field, item):
        return "hibbard" in str(field.element.value).lower()

    run(ds, "REMOVE ALL func:is_phi", tmp_path, functions={"is_phi": is_phi})
    assert "OperatorsName" not in ds and "PatientName" in ds


def test_remove_with_plain_value_is_an_always_true_condition_for_text(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, "REMOVE ALL anything", tmp_path)
    assert "PatientName" not in ds
    assert ds.Rows == 2  # numeric fields fail conversion -> None -> kept (deid Q13)


def test_func_receives_dicom_value_field_and_item(make_dataset, tmp_path):
    ds = make_dataset()
    seen = []

    def fn(dicom, value, field, item):
        seen.append((dicom is ds, value, field.uid, field.name, item["x"]))
        return "NEW"

    run(ds, "REPLACE AccessionNumber func:fn", tmp_path, variables={"x": 1},
        functions={"fn": fn})
    assert seen == [(True, "func:fn", "(0008,0050)", "AccessionNumber", 1),
                    (True, "func:fn", "(0040,0275)__0__(0008,0050)",
                     "RequestAttributesSequence__AccessionNumber", 1)]
    assert ds.AccessionNumber == "NEW"


def test_var_values_are_used_verbatim(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, "REPLACE PatientID var:pid\nADD PatientIdentityRemoved var:flag", tmp_path,
        variables={"pid": "NEW-ID", "flag": "YES"})
    assert ds.PatientID == "NEW-ID" and ds.PatientIdentityRemoved == "YES"


def test_put_actions_run_after_the_recipe(make_dataset, tmp_path):
    from deid_batch.recipe.parse import RecipeAction

    ds = make_dataset()
    options = EngineOptions(remove_private=False, put_actions=(
        RecipeAction("ADD", "PatientIdentityRemoved", "FROMCONFIG", "<config>", 0),))
    run(ds, "ADD PatientIdentityRemoved YES", tmp_path, options=options)
    assert ds.PatientIdentityRemoved == "FROMCONFIG"


# -------------------------------------------------------------------------- built-in functions
def test_pydicom_uuid_is_deterministic_per_original_value(make_dataset, tmp_path):
    a, b = make_dataset(), make_dataset()
    for ds in (a, b):
        run(ds, "REPLACE StudyInstanceUID deid_func:pydicom_uuid", tmp_path)
    expected = generate_uid(prefix="2.25.", entropy_srcs=["1.2.3.4"])
    assert a.StudyInstanceUID == b.StudyInstanceUID == expected
    assert a.RequestAttributesSequence[0].StudyInstanceUID == expected


def test_hmac_uid_is_deterministic_keyed_and_consistent_across_nesting(make_dataset, tmp_path):
    options = EngineOptions(remove_private=False, uid_key=b"k" * 32)
    a, b = make_dataset(), make_dataset()
    for ds in (a, b):
        run(ds, "REPLACE StudyInstanceUID deid_func:hmac_uid", tmp_path, options=options)
    assert a.StudyInstanceUID == b.StudyInstanceUID
    assert a.RequestAttributesSequence[0].StudyInstanceUID == a.StudyInstanceUID
    assert a.StudyInstanceUID.startswith("2.25.") and len(a.StudyInstanceUID) <= 64
    other = make_dataset()
    run(other, "REPLACE StudyInstanceUID deid_func:hmac_uid", tmp_path,
        options=EngineOptions(remove_private=False, uid_key=b"x" * 32))
    assert other.StudyInstanceUID != a.StudyInstanceUID


def test_hmac_uid_without_a_key_is_a_dataset_error(make_dataset, tmp_path):
    with pytest.raises(DatasetError) as info:
        run(make_dataset(), "REPLACE StudyInstanceUID deid_func:hmac_uid", tmp_path)
    assert info.value.reason == "deid-error"
    assert "in/file.dcm" in str(info.value) and "needs a key" in str(info.value)


def test_basic_uuid_is_random_like_deid(make_dataset, tmp_path):
    a, b = make_dataset(), make_dataset()
    for ds in (a, b):
        run(ds, "REPLACE PatientID deid_func:basic_uuid", tmp_path)
    assert a.PatientID != b.PatientID and len(a.PatientID) == 36


def test_deid_func_jitter_adds_days_and_years(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, "REPLACE StudyDate deid_func:jitter days=1 years=1", tmp_path)
    assert ds.StudyDate == "20240102"


# -------------------------------------------------------------------------- defaults, options
def test_default_recipe_keeps_pixels_and_pixel_module_and_remaps_uids(make_dataset):
    ds = make_dataset()
    result = deidentify_dataset(ds, None, options=EngineOptions(uid_key=b"k" * 32))
    kept = {e.keyword for e in ds}
    assert kept == {"PixelData", "Rows", "Columns", "BitsAllocated", "SOPClassUID", "Modality",
                    "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"}
    assert ds.SOPInstanceUID.startswith("2.25.") and ds.SOPInstanceUID != "1.2.3.4.5"
    assert result.warnings == []


def test_private_tags_are_removed_after_the_recipe_by_default(make_dataset, tmp_path):
    ds = make_dataset()
    run(ds, "REPLACE 0033101E X", tmp_path, options=EngineOptions())
    assert not any(e.tag.is_private for e in ds)


def test_private_tags_kept_when_asked_and_the_warning_text_is_phi_free():
    assert "private" in private_tags_warning()


def test_options_pickle_and_default_skip_matches_deid_config():
    import json
    from pathlib import Path

    import deid

    config = json.loads((Path(deid.__file__).parent / "dicom" / "config.json").read_text())
    assert DEFAULT_SKIP == tuple(config["get"]["skip"])
    options = EngineOptions(uid_key=b"secret")
    assert pickle.loads(pickle.dumps(options)) == options
    assert "secret" not in repr(options)


def test_the_same_dataset_object_is_returned(make_dataset, tmp_path):
    ds = make_dataset()
    assert run(ds, "REMOVE PatientID", tmp_path).dataset is ds


def test_string_recipe_is_loaded_on_the_fly(make_dataset, tmp_path):
    path = tmp_path / "deid.x"
    path.write_text("FORMAT dicom\n%header\nREMOVE PatientID\n")
    ds = make_dataset()
    deidentify_dataset(ds, str(path), options=KEEP_PRIVATE, base=None)
    assert "PatientID" not in ds


# -------------------------------------------------------------------------- failures
def test_failure_is_a_dataset_error_naming_file_and_line_but_no_value(make_dataset, tmp_path):
    ds = make_dataset(SliceThickness="5.0")
    with pytest.raises(DatasetError) as info:
        run(ds, "REMOVE PatientID\nREPLACE SliceThickness SECRETVALUE", tmp_path)
    message = str(info.value)
    assert info.value.reason == "deid-error"
    assert "in/file.dcm" in message and "deid.test:4" in message and "REPLACE" in message
    assert "SECRETVALUE" not in message and "5.0" not in message


def test_user_function_errors_become_dataset_errors(make_dataset, tmp_path):
    def boom(**kwargs):
        raise RuntimeError("leaks " + str(kwargs["field"].element.value))

    with pytest.raises(DatasetError) as info:
        run(make_dataset(), "REPLACE PatientName func:boom", tmp_path, functions={"boom": boom})
    assert "SIMPSON" not in str(info.value) and "RuntimeError" in str(info.value)


# -------------------------------------------------------------------------- properties
_identifier = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=4, max_size=12)


@settings(max_examples=40, deadline=None)
@given(name=_identifier, pid=_identifier, accession=_identifier, institution=_identifier)
def test_default_recipe_leaves_no_original_identifier_anywhere(name, pid, accession,
                                                              institution):
    ds = Dataset()
    ds.PatientName = f"PHI{name}^X"
    ds.PatientID = f"PHI{pid}"
    ds.AccessionNumber = f"PHI{accession}"
    ds.InstitutionName = f"PHI{institution}"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.Rows = 1
    item = Dataset()
    item.AccessionNumber = f"PHI{accession}"
    item.PatientID = f"PHI{pid}"
    ds.RequestAttributesSequence = Sequence([item])
    ds.add_new(0x00091001, "LO", f"PHI{name}")
    deidentify_dataset(ds, None, options=EngineOptions(uid_key=b"k" * 32))
    text = "\n".join(str(e.value) for e in ds.iterall())
    assert "PHI" not in text and "1.2.3.4" not in text


def test_deidentify_twice_with_the_same_key_is_idempotent_in_shape(make_dataset):
    options = EngineOptions(uid_key=b"k" * 32)
    a, b = make_dataset(), make_dataset()
    deidentify_dataset(a, None, options=options)
    deidentify_dataset(b, None, options=options)
    assert a == b


def test_concurrent_calls_on_different_datasets_equal_sequential_calls(make_dataset):
    from concurrent.futures import ThreadPoolExecutor

    recipe = load_recipe("dicom", base=None)
    options = EngineOptions(uid_key=b"k" * 32)

    def one(i: int) -> Dataset:
        ds = make_dataset(PatientID=f"P{i}", StudyDate=f"2023010{i % 9 + 1}")
        deidentify_dataset(ds, recipe, {"entity_id": f"E{i}"}, options=options)
        return ds

    sequential = [one(i) for i in range(24)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        concurrent = list(pool.map(one, range(24)))
    assert concurrent == sequential

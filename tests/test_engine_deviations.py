"""Each deliberate deviation from deid 0.4.13, pinned (see the README's deviations list)."""

from __future__ import annotations

import textwrap

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from deid_batch.errors import DatasetError
from deid_batch.recipe.engine import EngineOptions, deidentify_dataset
from deid_batch.recipe.parse import load_recipe

KEEP_PRIVATE = EngineOptions(remove_private=False)


@pytest.fixture
def make_dataset():
    def make(**values):
        ds = Dataset()
        ds.PatientName = "SIMPSON^HOMER"
        ds.PatientID = "PID42"
        ds.StudyDate = "20230101"
        ds.StudyTime = "011635.943000"
        ds.AccessionNumber = "ACC123"
        ds.Rows = 4
        ds.PregnancyStatus = 4
        ds.InstanceNumber = "20230101"
        item = Dataset()
        item.AccessionNumber = "ACC123"
        ds.RequestAttributesSequence = Sequence([item])
        ds.add_new(0x00330010, "LO", "CREATOR")
        ds.add_new(0x00331001, "LO", "SIMPSON")
        for key, value in values.items():
            setattr(ds, key, value)
        return ds

    return make


@pytest.fixture
def apply(tmp_path):
    def apply(ds, text, variables=None, functions=None, options=KEEP_PRIVATE):
        path = tmp_path / "deid.dev"
        path.write_text("FORMAT dicom\n%header\n" + textwrap.dedent(text).strip() + "\n")
        return deidentify_dataset(ds, load_recipe(str(path), base=None), variables, functions=functions,
                                  options=options, source="study/img.dcm")

    return apply


# ---------------------------------------------- 1. missing var:/func: removes, with a warning
def test_missing_variable_in_replace_removes_the_field_and_warns(make_dataset, apply):
    ds = make_dataset()
    result = apply(ds, "REPLACE PatientName var:new_name")
    assert "PatientName" not in ds
    (warning,) = result.warnings
    assert "study/img.dcm" in warning and "REPLACE PatientName" in warning
    assert "new_name" in warning and "SIMPSON" not in warning


def test_missing_variable_under_remove_all_does_not_leak_the_original(make_dataset, apply):
    ds = make_dataset()
    apply(ds, "REMOVE ALL\nREPLACE PatientID var:entity_id")
    assert "PatientID" not in ds  # deid keeps PID42 (excluded from REMOVE, then not replaced)


def test_missing_variable_in_add_removes_the_top_level_element_only(make_dataset, apply):
    ds = make_dataset()
    result = apply(ds, "ADD AccessionNumber var:item_id")
    assert "AccessionNumber" not in ds
    assert ds.RequestAttributesSequence[0].AccessionNumber == "ACC123"
    assert "ADD AccessionNumber" in result.warnings[0]


def test_missing_variable_in_add_of_an_absent_element_adds_nothing(make_dataset, apply):
    ds = make_dataset()
    result = apply(ds, "ADD PatientBirthDate var:entity_timestamp")
    assert "PatientBirthDate" not in ds and len(result.warnings) == 1


def test_missing_variable_in_jitter_removes_the_date(make_dataset, apply):
    ds = make_dataset()
    apply(ds, "JITTER StudyDate var:shift")
    assert "StudyDate" not in ds


def test_missing_condition_variable_in_remove_removes_the_field(make_dataset, apply):
    ds = make_dataset()
    apply(ds, "REMOVE PatientName var:is_phi")
    assert "PatientName" not in ds  # deid: None -> falsy -> kept


def test_missing_function_removes_every_matched_element(make_dataset, apply):
    ds = make_dataset()
    result = apply(ds, "REPLACE AccessionNumber func:new_accession")
    assert "AccessionNumber" not in ds
    assert "AccessionNumber" not in ds.RequestAttributesSequence[0]
    assert len(result.warnings) == 1 and "function 'new_accession'" in result.warnings[0]


def test_a_variable_given_as_none_counts_as_missing(make_dataset, apply):
    ds = make_dataset()
    apply(ds, "REPLACE PatientName var:new_name", variables={"new_name": None})
    assert "PatientName" not in ds


def test_a_function_returning_none_keeps_the_value_as_deid_does(make_dataset, apply):
    ds = make_dataset()
    result = apply(ds, "REPLACE PatientName func:nothing",
                   functions={"nothing": lambda **kwargs: None})
    assert ds.PatientName == "SIMPSON^HOMER" and result.warnings == []


# ---------------------------------------------- 3. JITTER never uses today's date
@pytest.mark.parametrize(("keyword", "value"), [
    ("StudyTime", "011635.943000"),      # TM: deid writes today's date + N days
    ("PregnancyStatus", 4),              # US: deid builds a date of the current month
    ("StudyDate", "2023"),               # partial DA: month/day from today
    ("StudyDate", "202301"),             # deid aborts
    ("StudyDate", "notadate"),           # deid aborts
])
def test_jitter_of_values_deid_would_date_from_today_or_abort_on_is_unchanged(
        make_dataset, apply, keyword, value):
    ds = make_dataset(**{keyword: value})
    result = apply(ds, f"JITTER {keyword} 5")
    assert ds[keyword].value == value
    assert len(result.warnings) == 1
    message = result.warnings[0].split(".dev:", 1)[-1]  # after the (tmp) recipe path
    assert f"JITTER {keyword}" in message and str(value) not in message.split(":", 1)[-1]


def test_jitter_of_a_complete_date_in_a_non_date_vr_still_works_as_in_deid(make_dataset, apply):
    ds = make_dataset()
    apply(ds, "JITTER InstanceNumber 1")
    assert str(ds.InstanceNumber) == "20230102"


def test_jitter_results_do_not_depend_on_the_day_they_run(make_dataset, apply):
    a, b = make_dataset(StudyDate="20230101"), make_dataset(StudyDate="20230101")
    apply(a, "JITTER StudyDate -400")
    apply(b, "JITTER StudyDate -400")
    assert a.StudyDate == b.StudyDate == "20211127"


# ---------------------------------------------- 4. one dataset's failure is that dataset's only
def test_a_failing_dataset_raises_and_the_next_one_is_processed(make_dataset, apply):
    bad = make_dataset()
    bad.add_new(0x00180050, "DS", "5.0")
    good = make_dataset()
    text = "REPLACE SliceThickness not-a-number\nREMOVE PatientID"
    with pytest.raises(DatasetError) as info:
        apply(bad, text)
    assert info.value.reason == "deid-error" and "study/img.dcm" in str(info.value)
    apply(good, text)
    assert "PatientID" not in good


# ---------------------------------------------- 5. private tags removed after the recipe
def test_private_values_feed_the_recipe_before_private_tags_are_removed(make_dataset, tmp_path):
    ds = make_dataset()
    path = tmp_path / "deid.priv"
    path.write_text("FORMAT dicom\n%values v\nFIELD 00331001\n%header\nREMOVE values:v\n")
    deidentify_dataset(ds, load_recipe(str(path), base=None), options=EngineOptions())
    assert "PatientName" not in ds          # matched the private copy's value
    assert not any(e.tag.is_private for e in ds)


def test_remove_private_false_keeps_private_tags(make_dataset, apply):
    ds = make_dataset()
    apply(ds, "REMOVE PatientID")
    assert 0x00331001 in ds


# ---------------------------------------------- ADD of a new numeric element is typed
def test_add_of_a_new_numeric_element_stores_a_number(apply):
    ds = Dataset()
    apply(ds, "ADD PregnancyStatus 4")
    assert ds.PregnancyStatus == 4 and isinstance(ds.PregnancyStatus, int)


def test_add_of_a_new_numeric_element_with_text_is_a_dataset_error(apply):
    with pytest.raises(DatasetError, match="not valid for VR US"):
        apply(Dataset(), "ADD PregnancyStatus four")

"""Every header action on one element of every VR, deid and deid_batch writing the same file.

The generated file holds one top-level element per VR (``factories.TOP_LEVEL_BY_VR``). Each case
is a one- or two-line recipe; the expectation is always "no difference between the two outputs"
and "deid changed the file" (so a case that selects nothing fails loudly).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import Comparison, assert_same_output
from .factories import TOP_LEVEL_BY_VR

VRS = sorted(TOP_LEVEL_BY_VR)
#: New elements deid can write: text VRs, and AT (pydicom parses its hex text). For the other
#: VRs deid stores the text unconverted and cannot save the file (see test_deviations.py).
VRS_DEID_CAN_ADD_NEW = ("AE", "AS", "AT", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
            "UI", "UR", "UT")

#: A plain recipe value per VR for REPLACE/ADD (deid converts it by the element's VR).
NEW_VALUE = {
    "AE": "NEWAE", "AS": "030Y", "AT": "00110077", "CS": "F", "DA": "19990101", "DS": "80.25",
    "DT": "20200101120000", "FD": "1.3", "FL": "2.5", "IS": "42", "LO": "REPLACED",
    "LT": "REPLACED TEXT", "OB": "x0000000001", "OD": "abcdefgh", "OF": "abcd", "OL": "abcd",
    "OV": "abcdefgh", "OW": "ab", "PN": "DOE^JANE", "SH": "NEWSH", "SL": "-7", "SS": "-3",
    "ST": "REPLACED ST", "SV": "-9", "TM": "120000", "UC": "UC VALUE", "UI": "1.2.3.4.5",
    "UL": "77", "UN": "unvalue", "UR": "http://example.org/x", "US": "9", "UT": "UT VALUE",
    "UV": "99",
}


def keyword(vr: str) -> str:
    return TOP_LEVEL_BY_VR[vr][0]


@pytest.mark.parametrize("vr", VRS)
def test_blank_of_each_vr_matches_deid(vr: str, run_both: Callable[..., Comparison]) -> None:
    assert_same_output(run_both(f"BLANK {keyword(vr)}"))


@pytest.mark.parametrize("vr", VRS)
def test_remove_of_each_vr_matches_deid(vr: str, run_both: Callable[..., Comparison]) -> None:
    assert_same_output(run_both(f"REMOVE {keyword(vr)}"))


@pytest.mark.parametrize("vr", [vr for vr in VRS if vr != "SQ"])  # REPLACE of a SQ crashes deid
def test_replace_of_each_vr_matches_deid(vr: str, run_both: Callable[..., Comparison]) -> None:
    assert_same_output(run_both(f"REPLACE {keyword(vr)} {NEW_VALUE[vr]}"))


@pytest.mark.parametrize("vr", [vr for vr in VRS if vr != "SQ"])  # ADD of a SQ crashes deid
def test_add_over_an_existing_element_of_each_vr_matches_deid(
    vr: str, run_both: Callable[..., Comparison]
) -> None:
    assert_same_output(run_both(f"ADD {keyword(vr)} {NEW_VALUE[vr]}"))


@pytest.mark.parametrize("vr", VRS_DEID_CAN_ADD_NEW)
def test_add_of_a_new_element_matches_deid(
    vr: str, run_both: Callable[..., Comparison], generated_file: Callable[..., object]
) -> None:
    source = generated_file(lambda ds: delattr(ds, keyword(vr)))
    assert_same_output(run_both(f"ADD {keyword(vr)} {NEW_VALUE[vr]}", source))


@pytest.mark.parametrize("vr", VRS)
def test_keep_of_each_vr_survives_remove_all_like_deid(
    vr: str, run_both: Callable[..., Comparison]
) -> None:
    result = run_both(f"KEEP {keyword(vr)}\nREMOVE ALL")
    assert_same_output(result)


@pytest.mark.parametrize(
    "recipe",
    [
        "JITTER StudyDate 5",
        "JITTER PatientBirthDate -365",
        "JITTER AcquisitionDateTime 10",
        "JITTER ContextGroupLocalVersion +3",  # DT three levels deep
        "JITTER select:VR:DA 1",
        "JITTER select:VR:DT 1",
        "JITTER 00091002 1",  # private DA, top level
        "JITTER 00091007 1",  # private LO holding a full date: parsed as %Y%m%d
        "JITTER 00291009 1",  # known-creator private LO date
    ],
)
def test_jitter_of_full_dates_and_datetimes_matches_deid(
    recipe: str, run_both: Callable[..., Comparison]
) -> None:
    assert_same_output(run_both(recipe))


def test_jitter_of_an_empty_date_changes_nothing_like_deid(
    run_both: Callable[..., Comparison],
) -> None:
    result = run_both("JITTER ContentDate 1")
    assert result.deid_changes() == []
    assert result.diffs == []


@pytest.mark.parametrize(
    "recipe, disable_skip",
    [("REMOVE ALL", False), ("REMOVE ALL", True), ("BLANK ALL", False), ("BLANK ALL", True)],
)
def test_all_selector_actions_match_deid(
    recipe: str, disable_skip: bool, run_both: Callable[..., Comparison]
) -> None:
    assert_same_output(run_both(recipe, disable_skip=disable_skip))


def setter(keyword: str, value: object) -> Callable[[Any], None]:
    return lambda ds: setattr(ds, keyword, value)


JITTER_FORMATS = [
    # (id, recipe, edit of the generated file)
    ("da-multi-valued", "JITTER SeriesDate 10", setter("SeriesDate", ["20131210", "20131215"])),
    ("da-dashed-spelling", "JITTER SeriesDate 1", setter("SeriesDate", "2023-01-05")),
    ("da-words", "JITTER SeriesDate 1", setter("SeriesDate", "Jan 5 2023")),
    ("da-leap-day-backwards", "JITTER SeriesDate -1", setter("SeriesDate", "20240301")),
    ("dt-with-offset", "JITTER AcquisitionDateTime 1",
     setter("AcquisitionDateTime", "20230101011721.621000+0100")),
    ("dt-without-fraction", "JITTER AcquisitionDateTime 10",
     setter("AcquisitionDateTime", "20131210081530")),
    ("dt-date-only", "JITTER AcquisitionDateTime 1", setter("AcquisitionDateTime", "20230101")),
    ("dt-minutes-only", "JITTER AcquisitionDateTime 1",
     setter("AcquisitionDateTime", "202301010117")),
    ("dt-short-fraction", "JITTER AcquisitionDateTime 1",
     setter("AcquisitionDateTime", "20230101011721.6")),
    ("dt-multi-valued", "JITTER AcquisitionDateTime 1",
     setter("AcquisitionDateTime", ["20230101", "20240229120000"])),
    ("lo-datetime-text", "JITTER InstitutionName 1",
     setter("InstitutionName", "20230101120000.5")),
    ("lo-dashed-date-text", "JITTER InstitutionName 1", setter("InstitutionName", "2023-01-01")),
]


@pytest.mark.parametrize("case_id, recipe, edit", JITTER_FORMATS,
                         ids=[j[0] for j in JITTER_FORMATS])
def test_jitter_of_date_spellings_matches_deid(
    case_id: str, recipe: str, edit: Callable[[Any], None],
    run_both: Callable[..., Comparison], generated_file: Callable[..., Path],
) -> None:
    assert_same_output(run_both(recipe, generated_file(edit)))

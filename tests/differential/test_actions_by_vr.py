"""Every header action on one element of every VR, deid and deid_batch writing the same file.

The generated file holds one top-level element per VR (``factories.TOP_LEVEL_BY_VR``). Each case
is a one- or two-line recipe; the expectation is always "no difference between the two outputs"
and "deid changed the file" (so a case that selects nothing fails loudly).
"""

from __future__ import annotations

from collections.abc import Callable

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

"""How recipe text is read (quotes, spaces, comments, sections) and how recipes combine
(lists of recipes, ``base=True``): deid and deid_batch write the same file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import Comparison, assert_same_output
from .harness import Case

LEXICAL = [
    Case("quotes-are-kept", 'REPLACE PatientName "O Brien"'),
    Case("apostrophe-splits-tokens", "REPLACE PatientName O'Brien"),
    Case("spaces-outside-quotes-collapse", "REPLACE PatientName   a   b   c"),
    Case("spaces-inside-quotes-kept", 'REPLACE InstitutionName "John  Doe"'),
    Case("trailing-comment-leaves-trailing-space", "REPLACE PatientName foo # c"),
    Case("backslash-makes-multi-valued", r"REPLACE OperatorsName A\B\C"),
    Case("non-ascii-value", "REPLACE InstitutionName Krankenhaus Zürich"),
    Case("comments-blank-lines-and-indentation", """
        FORMAT dicom
        # a comment

        %header   # a comment after a section
            REMOVE PatientID
        # REMOVE StudyID
        """),
    Case("upper-case-section-and-format", "FORMAT   DICOM\n%HEADER\nREMOVE PatientID"),
    Case("repeated-header-sections-append", """
        FORMAT dicom
        %header
        REPLACE PatientID FIRST
        %values v
        FIELD Manufacturer
        %header
        REPLACE PatientID SECOND
        REMOVE values:v
        """),
    Case("labels-section-is-parsed-and-unused", """
        FORMAT dicom
        %labels
        REMOVE PatientID
        %header
        REMOVE StudyID
        """),
    Case("filter-section-is-ignored-for-headers", """
        FORMAT dicom
        %filter graylist
        LABEL Some Scanner
        contains Manufacturer SIEMENS
        coordinates 0,0,2,2
        %header
        REMOVE StudyID
        """),
    Case("remove-of-no-such-field-is-a-no-op", "REMOVE jitter\nREMOVE StudyID"),
    Case("var-prefix-is-case-sensitive-literal", "REPLACE InstitutionName VAR"),
]


@pytest.mark.parametrize("case", LEXICAL, ids=str)
def test_recipe_text_is_read_like_deid(case: Case, run_case: Callable[[Case], Comparison]) -> None:
    assert_same_output(run_case(case), case)


def test_a_list_of_recipes_runs_their_headers_in_order_like_deid(
    run_both: Callable[..., Comparison], write_recipe: Callable[..., Path],
) -> None:
    first = write_recipe("""
        FORMAT dicom
        %values v
        FIELD Manufacturer
        %header
        REPLACE PatientID FIRST
        REMOVE values:v
        """)
    second = write_recipe("""
        FORMAT dicom
        %header
        REPLACE PatientID SECOND
        REMOVE values:v
        JITTER StudyDate 2
        """)
    assert_same_output(run_both([first, second]))


#: The default recipe ADDs these; without them our ADDs remove the field (deviation 1, see
#: test_deviations.py), which shows when the user's recipe shields PatientID or StudyDate.
DEFAULT_RECIPE_VARIABLES = {"entity_timestamp": "19800101", "item_timestamp": "20200202",
                            "entity_id": "ENT-1", "item_id": "ITEM-1"}


def test_a_list_with_a_bundled_recipe_matches_deid(
    run_both: Callable[..., Comparison], write_recipe: Callable[..., Path],
) -> None:
    mine = write_recipe("REPLACE PatientName ANON\nKEEP StudyDate\nKEEP SeriesDate")
    assert_same_output(run_both([mine, "dicom"], "ctbrain2", variables=DEFAULT_RECIPE_VARIABLES))


def test_base_appends_the_default_recipe_after_the_user_recipe_like_deid(
    run_both: Callable[..., Comparison], write_recipe: Callable[..., Path],
) -> None:
    mine = write_recipe("REPLACE PatientID SUBJ\nADD PatientIdentityRemoved NO")
    assert_same_output(run_both(mine, "ctbrain1", base=True, variables=DEFAULT_RECIPE_VARIABLES))

"""``%values`` (FIELD and SPLIT) and ``%fields`` groups, used through ``values:``/``fields:``
selectors: deid and deid_batch write the same file."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .conftest import Comparison, assert_same_output
from .harness import Case

GROUPS = [
    Case("values-field-remove", """
        FORMAT dicom
        %values ids
        FIELD PatientID
        %header
        REMOVE values:ids
        """),
    Case("values-caret-in-a-name-is-a-regex-anchor", """
        FORMAT dicom
        %values names
        FIELD PatientName
        %header
        REMOVE values:names
        """, changes=False),
    Case("values-split-by-caret-minlength", """
        FORMAT dicom
        %values physicians
        SPLIT contains:Physician by="^";minlength=4
        %header
        REMOVE values:physicians
        """),
    Case("values-split-private-by-space", """
        FORMAT dicom
        %values private_words
        SPLIT 00291008 by=" ";minlength=4
        %header
        REMOVE values:private_words
        """),
    Case("values-field-and-split-together", """
        FORMAT dicom
        %values mixed
        FIELD contains:Manufacturer
        SPLIT ReferringPhysicianName by="^";minlength=3
        %header
        BLANK values:mixed
        """),
    Case("values-multi-valued-field", """
        FORMAT dicom
        %values types
        FIELD ImageType
        %header
        REMOVE values:types
        """),
    Case("values-nested-source", """
        FORMAT dicom
        %values codes
        FIELD (0040,0275)__0__(0032,1064)__0__(0008,0121)__0__(0008,0104)
        %header
        REMOVE values:codes
        """),
    Case("values-jitter", """
        FORMAT dicom
        %values birth
        FIELD PatientBirthDate
        %header
        JITTER values:birth 1
        """),
    Case("values-empty-field-gives-empty-list", """
        FORMAT dicom
        %values nothing
        FIELD ContentDate
        %header
        REMOVE values:nothing
        """, changes=False),
    Case("values-unknown-name-matches-nothing", "REMOVE values:undefined", changes=False),
    Case("values-regex-metacharacters-are-live", """
        FORMAT dicom
        %values thickness
        FIELD SliceThickness
        %header
        REMOVE values:thickness
        """),
    Case("values-from-caller-variable", "REMOVE values:given",
         variables={"given": ["SIMPSON", "ACC0001"]}),
    Case("values-group-overrides-caller-variable", """
        FORMAT dicom
        %values given
        FIELD Manufacturer
        %header
        REMOVE values:given
        """, variables={"given": ["SIMPSON"]}),
    Case("fields-remove", """
        FORMAT dicom
        %fields ids
        FIELD PatientID
        FIELD contains:Collimator
        FIELD 00090010
        %header
        REMOVE fields:ids
        """),
    Case("fields-replace", """
        FORMAT dicom
        %fields people
        FIELD select:VR:PN
        %header
        REPLACE fields:people ANON^ANON
        """),
    Case("fields-blank-sequence", """
        FORMAT dicom
        %fields seqs
        FIELD OtherPatientIDsSequence
        %header
        BLANK fields:seqs
        """),
    Case("fields-nested-entry-reexpands-by-tag", """
        FORMAT dicom
        %fields nested
        FIELD RequestAttributesSequence__AccessionNumber
        %header
        REMOVE fields:nested
        """),
    Case("fields-private-creator-entry-reexpands-by-tag", """
        FORMAT dicom
        %fields mitra
        FIELD (0033,"MITRA OBJECT UTF8 ATTRIBUTES 1.0",1E)
        %header
        REMOVE fields:mitra
        """),
    Case("fields-keep-protects-nothing", """
        FORMAT dicom
        %fields kept
        FIELD PatientID
        %header
        KEEP fields:kept
        REMOVE PatientID
        """),
    Case("fields-replace-does-not-shield-from-remove", """
        FORMAT dicom
        %fields who
        FIELD PatientName
        %header
        REPLACE fields:who ANON
        REMOVE PatientName
        """),
    Case("values-and-fields-computed-before-actions", """
        FORMAT dicom
        %values sex
        FIELD PatientSex
        %fields sexfield
        FIELD PatientSex
        %header
        REPLACE PatientSex F
        REMOVE values:sex
        BLANK fields:sexfield
        """),
    Case("repeated-values-section-appends", """
        FORMAT dicom
        %values ids
        FIELD PatientID
        %header
        REMOVE values:ids
        %values ids
        FIELD StudyID
        """),
]


@pytest.mark.parametrize("case", GROUPS, ids=str)
def test_group_selectors_match_deid(case: Case, run_case: Callable[[Case], Comparison]) -> None:
    assert_same_output(run_case(case), case)

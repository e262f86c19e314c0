"""deid's behavioural quirks that we reproduce on purpose (spec section 9.1), one golden case each.
(The quirks we deliberately do not reproduce are in ``test_deviations.py``.)"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .conftest import Comparison, assert_same_output
from .harness import Case

QUIRKS = [
    Case("q2-trailing-comment-leaves-a-trailing-space", "REPLACE InstitutionName foo # c"),
    Case("q3-quotes-kept-in-values", 'REPLACE InstitutionName "quoted value"'),
    Case("q6-keyword-reaches-every-depth", "REPLACE StudyInstanceUID 1.2.3"),
    Case("q7-startswith-matches-descendants", "BLANK startswith:OtherPatientIDs"),
    Case("q8-expression-lower-cased", r"REMOVE contains:\D{3}"),
    Case("q9-values-match-whole-sequences", "REMOVE values:given", variables={"given": ["BART"]}),
    Case("q10-fields-reexpand-by-tag", """
        FORMAT dicom
        %fields deep
        FIELD (0040,0275)__0__(0032,1064)__0__(0008,0121)__0__(0008,0100)
        %header
        REPLACE fields:deep CODE
        """),
    Case("q12-numeric-conversion-failure-leaves-us", "REPLACE PregnancyStatus abc",
         changes=False),
    Case("q12-numeric-conversion-failure-leaves-fd", "REPLACE ExposureInmAs abc", changes=False),
    Case("q13-plain-remove-value-is-always-true", "REMOVE ALL values:x"),
    Case("q13-documented-regex-condition-is-always-true", r"REMOVE ALL contains:(\d{7})"),
    Case("q14-replace-shields-from-remove-all", "REPLACE endswith:Name XXX\nREMOVE ALL"),
    Case("q14-jitter-shields-from-remove-all", "JITTER endswith:Date 1\nREMOVE ALL"),
    Case("q14-keep-shields-from-all-but-add", "KEEP PatientSex\nBLANK PatientSex\n"
         "REPLACE PatientSex F\nREMOVE PatientSex\nADD PatientSex O"),
    Case("q14-fields-replace-does-not-shield", """
        FORMAT dicom
        %fields sex
        FIELD PatientSex
        %header
        REPLACE fields:sex F
        REMOVE ALL
        """),
    Case("q21-contains-uid-strips-file-meta-uids", "REMOVE contains:UID"),
    Case("add-overwrites-a-skipped-element", "ADD TransferSyntaxUID 1.2.840.10008.1.2.1\n"
         "ADD ImplementationClassUID 1.2.3.4"),
    Case("add-only-touches-the-top-level", "ADD AccessionNumber NEWACC"),
    Case("blank-sequence-hides-children-from-later-actions", "BLANK RequestAttributesSequence\n"
         "REPLACE AccessionNumber X"),
    Case("remove-exclusion-evaluated-on-the-current-index", "ADD PatientIdentityRemoved YES\n"
         "REMOVE PatientIdentityRemoved\nREPLACE contains:IdentityRemoved NO"),
]


@pytest.mark.parametrize("case", QUIRKS, ids=str)
def test_deid_quirk_is_reproduced(case: Case, run_case: Callable[[Case], Comparison]) -> None:
    assert_same_output(run_case(case), case)

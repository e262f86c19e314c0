"""Sequences nested three deep, empty sequences and empty items: both tools write the same file.

The generated file has RequestAttributesSequence > RequestedProcedureCodeSequence >
EquivalentCodeSequence (2 items, each with a private block), OtherPatientIDsSequence (2 items, each
with a 1-item sub-sequence), an empty ReferencedPatientSequence, a ReferencedPerformed-
ProcedureStepSequence holding one empty item, and a private sequence (0009,1010).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .conftest import Comparison, assert_same_output
from .harness import Case

SEQUENCES = [
    Case("replace-at-every-depth", "REPLACE CodeValue NEWCODE"),
    Case("blank-at-every-depth", "BLANK CodeMeaning"),
    Case("remove-at-every-depth", "REMOVE CodingSchemeDesignator"),
    Case("jitter-at-depth-two", "JITTER ScheduledProcedureStepStartDate 3"),
    Case("jitter-at-depth-three", "JITTER ContextGroupVersion 1"),
    Case("remove-leaves-empty-items", "REMOVE contains:UID"),
    Case("remove-all-children-of-an-item", "REMOVE ReferencedSOPClassUID\n"
         "REMOVE ReferencedSOPInstanceUID"),
    Case("remove-parent-then-replace-child", "REMOVE (0032,1064)\nREPLACE (0008,0104) Anonymized"),
    Case("blank-parent-then-replace-child", 'BLANK (0032,1064)\nREPLACE (0008,0104) "Anonymized"'),
    Case("replace-child-shields-it-from-remove-of-parent-selector",
         "REMOVE startswith:RequestAttributes\nREPLACE AccessionNumber X"),
    Case("blank-sequence", "BLANK RequestAttributesSequence"),
    Case("remove-middle-sequence", "REMOVE RequestedProcedureCodeSequence"),
    Case("remove-deepest-sequence", "REMOVE EquivalentCodeSequence"),
    Case("blank-empty-sequence", "BLANK ReferencedPatientSequence", changes=False),
    Case("remove-empty-sequence", "REMOVE ReferencedPatientSequence"),
    Case("remove-sequence-with-empty-item", "REMOVE ReferencedPerformedProcedureStepSequence"),
    Case("replace-in-second-items", "REPLACE IssuerOfPatientID ISSUER"),
    Case("three-deep-private-in-standard-sequence", "REPLACE (0009,1002) 20000101"),
    Case("remove-all-keeps-nothing-nested", "REMOVE ALL"),
    Case("blank-select-vr-sq", "BLANK select:VR:SQ"),
    Case("nested-uid-of-a-sequence", "REMOVE (0040,0275)__0__(0032,1064)"),
    Case("nested-name-three-deep",
         "REPLACE RequestAttributesSequence__RequestedProcedureCodeSequence__"
         "EquivalentCodeSequence__CodeValue DEEP"),
]

SAMPLE_SEQUENCES = [
    Case(f"ctbrain2-{action.split()[0].lower()}-{field}", f"{action.split()[0]} {field}"
         + (f" {action.split()[1]}" if " " in action else ""), source="ctbrain2")
    for field in ("PatientName", "00110009", "00150002", "00150003", "00150006",
                  "AccessionNumber")
    for action in ("REPLACE ReplacementValue", "BLANK", "REMOVE")
] + [
    Case(f"ctbrain2-jitter-{field}", f"JITTER {field} 1", source="ctbrain2")
    for field in ("StudyDate", "00110017", "00150012", "00150013", "00150016")
]


@pytest.mark.parametrize("case", SEQUENCES + SAMPLE_SEQUENCES, ids=str)
def test_sequence_handling_matches_deid(case: Case, run_case: Callable[[Case], Comparison]) -> None:
    assert_same_output(run_case(case), case)

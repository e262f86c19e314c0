"""``var:`` and ``func:`` value sources, incl. conditional REMOVE: the same variables and the
same callables are handed to both tools (deid in ``ids``; deid_batch in ``variables=`` and
``functions=``, and once more with the callables among the variables, as deid takes them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydicom.uid import generate_uid

from .conftest import Comparison, assert_same_output
from .harness import Case

# deid calls user functions with keyword arguments dicom=, value=, field=, item= (field is a
# DicomField-like object for REPLACE/JITTER/REMOVE and the field string for ADD).


def contains_hibbard(*, dicom: Any, value: Any, field: Any, item: Any) -> bool:
    return "hibbard" in str(field.element.value).lower()


def is_private(*, dicom: Any, value: Any, field: Any, item: Any) -> bool:
    return bool(field.element.tag.is_private)


def is_date(*, dicom: Any, value: Any, field: Any, item: Any) -> bool:
    return field.element.VR in ("DA", "DT")


def hashuid(*, dicom: Any, value: Any, field: Any, item: Any) -> str:
    return generate_uid(entropy_srcs=[str(field.element.value)])


def upper_copy(**kwargs: Any) -> str:
    return str(kwargs["field"].element.value).upper() + "-X"


def name_from_patient_id(*, dicom: Any, value: Any, field: Any, item: Any) -> str:
    return f"ANON^{dicom.PatientID}"  # reads the dataset as it is at that moment


def recipe_value(*, dicom: Any, value: Any, field: Any, item: Any) -> str:
    return str(value).replace(":", "-")  # the raw recipe value, e.g. "func:recipe_value"


def from_lookup(*, dicom: Any, value: Any, field: Any, item: Any) -> str:
    return str(item["suffix"])  # the lookup holds the caller's variables


def constant_for_add(**kwargs: Any) -> str:
    return "ADDED_BY_FUNC"


def three_days(**kwargs: Any) -> int:
    return 3


FUNCS = {
    f.__name__: f
    for f in (contains_hibbard, is_private, is_date, hashuid, upper_copy, name_from_patient_id,
              recipe_value, from_lookup, constant_for_add, three_days)
}

CASES = [
    Case("var-replace", "REPLACE PatientID var:new_id", variables={"new_id": "SUBJ-001"}),
    Case("var-replace-nested-and-top", "REPLACE contains:StudyInstanceUID var:uid",
         variables={"uid": "1.2.3.4.5.6"}),
    Case("var-add-new", "ADD PatientIdentityRemoved var:flag", variables={"flag": "YES"}),
    Case("var-add-private-bare-hex", "ADD 11112221 var:myVar", variables={"myVar": "SIMPSON"}),
    Case("var-add-over-existing", "ADD PatientID var:new_id", variables={"new_id": "SUBJ-002"}),
    Case("var-list-is-multi-valued", "REPLACE OperatorsName var:names",
         variables={"names": ["A^B", "C^D"]}),
    Case("var-int-into-us", "REPLACE PregnancyStatus var:n", variables={"n": 2}),
    Case("var-jitter-int", "JITTER StudyDate var:days", variables={"days": 3}),
    Case("var-jitter-string", "JITTER select:VR:DA var:days", variables={"days": "-2"}),
    Case("var-remove-condition-true", "REMOVE PatientID var:yes", variables={"yes": True}),
    Case("var-remove-condition-false", "REMOVE PatientID var:no", variables={"no": False},
         changes=False),
    Case("default-recipe-adds-with-variables", "bundled:dicom", source="ctbrain2",
         variables={"entity_timestamp": "19800101", "item_timestamp": "20200202",
                    "entity_id": "ENT-1", "item_id": "ITEM-1"}),
    Case("func-remove-all-condition", "REMOVE ALL func:contains_hibbard"),
    Case("func-remove-all-condition-ctbrain1", "REMOVE ALL func:contains_hibbard",
         source="ctbrain1"),
    Case("func-remove-private-only", "REMOVE ALL func:is_private"),
    Case("func-remove-dates-with-exclusion", "REMOVE ALL func:is_date\nREPLACE StudyDate 20000101"),
    Case("func-hashuid-everywhere", "REPLACE StudyInstanceUID func:hashuid"),
    Case("func-hashuid-select-ui", "REPLACE select:VR:UI func:hashuid", source="ctbrain2"),
    Case("func-sees-current-dataset", "REPLACE PatientID NEWID\n"
         "REPLACE PatientName func:name_from_patient_id"),
    Case("func-receives-raw-recipe-value", "REPLACE InstitutionName func:recipe_value"),
    Case("func-receives-lookup", "REPLACE StudyID func:from_lookup", variables={"suffix": "S9"}),
    Case("func-field-element", "REPLACE endswith:Name func:upper_copy"),
    Case("func-add", "ADD PatientIdentityRemoved func:constant_for_add"),
    Case("func-jitter-days", "JITTER endswith:Date func:three_days"),
    Case("deid-func-pydicom-uuid", "REPLACE SOPInstanceUID deid_func:pydicom_uuid"),
    Case("deid-func-pydicom-uuid-prefix",
         "REPLACE select:VR:UI deid_func:pydicom_uuid prefix=1.55."),
    Case("deid-func-jitter", "REPLACE AcquisitionDate deid_func:jitter days=1 years=1"),
    Case("deid-func-jitter-negative-days", "REPLACE select:VR:DA deid_func:jitter days=-40"),
    Case("deid-func-pydicom-uuid-unstable-is-one-constant",  # deid bug Q17, reproduced
         "REPLACE select:VR:UI deid_func:pydicom_uuid stable_remapping=false"),
]


def functions_of(case: Case) -> dict[str, Callable[..., Any]]:
    return {name: fn for name, fn in FUNCS.items() if f"func:{name}" in case.recipe}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_variables_and_functions_give_the_same_output_as_deid(
    case: Case, run_both: Callable[..., Comparison]
) -> None:
    result = run_both(case.recipe, case.source, variables=case.variables,
                      functions=functions_of(case))
    assert_same_output(result, case)


@pytest.mark.parametrize("case", [c for c in CASES if functions_of(c)], ids=str)
def test_functions_passed_among_the_variables_work_as_in_deid(
    case: Case, run_both: Callable[..., Comparison]
) -> None:
    result = run_both(case.recipe, case.source, variables=case.variables,
                      functions=functions_of(case), functions_via="variables")
    assert_same_output(result, case)


def test_functions_are_called_once_per_match_in_deids_order_with_the_same_fields(
    run_both: Callable[..., Comparison],
) -> None:
    """deid calls a func: once per matched field, breadth-first (top level, file meta, then
    sequence items level by level); the field carries uid, name and element."""
    calls: list[tuple[Any, ...]] = []

    def record(*, dicom: Any, value: Any, field: Any, item: Any) -> bool:
        calls.append((field.uid, field.name, str(field.element.tag), str(field.element.value)))
        return False

    result = run_both("REMOVE ALL func:record", functions={"record": record})
    half = len(calls) // 2
    assert half > 100 and calls[:half] == calls[half:]  # deid's calls, then ours
    assert result.diffs == []

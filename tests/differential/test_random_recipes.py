"""Random recipes (hypothesis): for any recipe built from the pool below, deid and deid_batch
write the same file. The pool avoids what deid crashes on (REPLACE of a sequence, JITTER of a
non-date) and our deliberate deviations (missing variables, JITTER of TM/IS/US), so any
difference is a bug; hypothesis shrinks it to a minimal recipe.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deid_batch.errors import DatasetError

from .factories import make_dicom_file
from .harness import (
    SAMPLES,
    diff_files,
    engine_available,
    recipe_text,
    run_deid,
    run_ours,
    with_tempdir,
)

#: Selectors for REMOVE / BLANK / KEEP: any form, any depth, private, file meta, sequences.
ANY_SELECTOR = [
    "PatientName", "AccessionNumber", "(0008,0050)", "00100020", "StudyDate", "CodeValue",
    "RequestAttributesSequence", "RequestedProcedureCodeSequence", "OtherPatientIDsSequence",
    "(0040,0275)__0__(0008,0050)", "RequestAttributesSequence__StudyInstanceUID",
    "contains:UID", "contains:Patient", "startswith:Request", "endswith:Date", "endswith:Name",
    "endswith:ID", "except:Patient", "select:VR:PN", "select:VR:SQ", "select:group:0009",
    "0033101E", '(0033,"MITRA OBJECT UTF8 ATTRIBUTES 1.0",1E)', "00091001", "00091010",
    '(0021,"Siemens: Thorax/Multix FD Post Processing",15)', "contains:0009",
    "MediaStorageSOPInstanceUID", "ImplementationVersionName", "ALL", "values:v", "fields:f",
]
#: REPLACE / ADD targets with a value valid for every element they can match.
VALUED = [
    ("PatientName", "ANON^ANON"), ("AccessionNumber", "ACC-NEW"), ("(0008,0050)", "ACC-TAG"),
    ("StudyDate", "19990101"), ("select:VR:DA", "20000101"), ("endswith:Date", "20010101"),
    ("contains:InstanceUID", "1.2.3.4"), ("select:VR:PN", "X^Y"), ("CodeMeaning", "MEANING"),
    ("00091001", "PRIV"), ("PatientWeight", "99.5"), ("PregnancyStatus", "2"),
    ("ExposureInmAs", "3.25"), ("MediaStorageSOPInstanceUID", "1.2.3.4.5"),
    ("InstitutionName", "INST"), ("startswith:Manufacturer", "MAKER"),
]
ADDABLE = [
    ("PatientIdentityRemoved", "YES"), ("PatientID", "NEWID"), ("StudyDate", "20221128"),
    ("DeidentificationMethod", "deid_batch"), ("11112221", "SIMPSON"), ("InstitutionName", "I"),
    ("SourceApplicationEntityTitle", "NEWAE"),
]
#: JITTER targets: DA/DT (or full-date text) only, so deid never needs today's date.
JITTERABLE = ["StudyDate", "select:VR:DA", "endswith:Date", "AcquisitionDateTime",
              "ContextGroupVersion", "00091002", "00091007", "PatientBirthDate"]

GROUPS = "%values v\nFIELD Manufacturer\nFIELD PatientID\n%fields f\nFIELD contains:Study\n"


def is_hibbard(**kwargs: object) -> bool:
    return "hibbard" in str(kwargs["field"].element.value).lower()  # type: ignore[attr-defined]


def rehash(**kwargs: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(kwargs["field"].element.value)])  # type: ignore


VARIABLES = {"new_id": "SUBJ-9", "days": 7, "flag": True, "uid": "1.2.3.9", "given": ["SIEMENS"]}
FUNCTIONS = {"is_hibbard": is_hibbard, "rehash": rehash}
VALUED += [("PatientID", "var:new_id"), ("contains:InstanceUID", "var:uid"),
           ("select:VR:UI", "func:rehash"), ("StudyInstanceUID", "deid_func:pydicom_uuid"),
           ("SeriesInstanceUID", "deid_func:pydicom_uuid prefix=1.55.")]
ADDABLE += [("PatientID", "var:new_id")]

lines = st.one_of(
    st.builds(lambda a, s: f"{a} {s}", st.sampled_from(["REMOVE", "BLANK", "KEEP"]),
              st.sampled_from(ANY_SELECTOR)),
    st.builds(lambda fv: f"REPLACE {fv[0]} {fv[1]}", st.sampled_from(VALUED)),
    st.builds(lambda fv: f"ADD {fv[0]} {fv[1]}", st.sampled_from(ADDABLE)),
    st.builds(lambda s, d: f"JITTER {s} {d}", st.sampled_from(JITTERABLE),
              st.one_of(st.integers(-400, 400), st.just("var:days"))),
    st.builds(lambda s, c: f"REMOVE {s} {c}", st.sampled_from(ANY_SELECTOR),
              st.sampled_from(["func:is_hibbard", "var:flag"])),
)
recipes = st.lists(lines, min_size=1, max_size=5)


@pytest.fixture(scope="module", params=["generated", "ctbrain2"])
def source(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if request.param == "generated":
        return make_dicom_file(tmp_path_factory.mktemp("random") / "input.dcm")
    return SAMPLES[request.param]


@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=recipes)
def test_any_recipe_from_the_pool_gives_the_same_file_in_both_tools(
    body: list[str], source: Path
) -> None:
    if not engine_available():
        pytest.skip("deid_batch.recipe.engine is not importable yet")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        undo = with_tempdir(work / "tempfile")
        try:
            recipe = work / "deid.recipe"
            recipe.write_text(recipe_text("FORMAT dicom\n" + GROUPS + "%header\n"
                                          + "\n".join(body)))
            try:
                deid_out = run_deid(source, recipe, work / "deid",
                                    ids={**VARIABLES, **FUNCTIONS})
            except Exception:  # deid crashed: ours must fail for this dataset too
                with pytest.raises((DatasetError, OSError, ValueError)):
                    run_ours(source, recipe, work / "ours", variables=VARIABLES,
                             functions=FUNCTIONS)
                return
            ours = run_ours(source, recipe, work / "ours", variables=VARIABLES,
                            functions=FUNCTIONS)
            assert diff_files(deid_out, ours.path) == []
        finally:
            undo()

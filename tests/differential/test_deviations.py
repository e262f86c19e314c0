"""Our documented deviations from deid 0.4.13, each asserted as the expected difference.

1. A missing ``var:``/``func:`` removes the matched field and warns (naming action, field and
   file, never the value); deid keeps the original value.
2. Recipe lines deid drops, misreads or crashes on are a RecipeError at load time naming the file
   and line; deid does something else (asserted too).
3. JITTER of TM/IS/US values or partial dates leaves the value unchanged with a warning; deid
   writes a date built from today (or fails to write).
4. One dataset's failure never stops the others; deid aborts the whole call.
5. Private tags are removed by default, after the recipe; deid removes them (when asked) before.
6. A ``KEEP (gggg,"CREATOR",ee)`` line keeps that private element and its creator element through
   the removal of private tags; deid's ``remove_private=True`` removes it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.tag import Tag

from .conftest import Comparison
from .factories import TOP_LEVEL_BY_VR
from .harness import Difference, diff_files, flatten_file, run_deid, run_ours
from .test_actions_by_vr import NEW_VALUE

PHI = ("PID-12345", "ACC0001", "011635.943000", "SIMPSON")


def get(path: Path, keyword: str) -> Any:
    ds = pydicom.dcmread(path, force=True)
    return ds[keyword].value if keyword in ds else "absent"


def assert_warned(warnings: list[str], action: str, field: str | tuple[str, ...],
                  source: Path) -> None:
    fields = (field,) if isinstance(field, str) else field
    assert any(action in w and any(f in w for f in fields) and str(source) in w
               for w in warnings), warnings
    assert not [w for w in warnings if any(v in w for v in PHI)], "a warning shows a value"


# --------------------------------------------------------------------------------------------
# 1. missing var:/func:

MISSING = [
    # (id, recipe, variables, removed tag paths, warned action, warned field names)
    ("replace-var", "REPLACE PatientName var:missing", {},
     ["(0010,0010)", "(0009,1010)[0]/(0010,0010)", "(0009,1010)[1]/(0010,0010)"],
     "REPLACE", ("PatientName", "(0010,0010)")),
    ("replace-func", "REPLACE StudyID func:missing", {}, ["(0020,0010)"],
     "REPLACE", ("StudyID", "(0020,0010)")),
    ("replace-var-top-and-nested", "REPLACE AccessionNumber var:missing", {"other": "x"},
     ["(0008,0050)", "(0040,0275)[0]/(0008,0050)"], "REPLACE", ("AccessionNumber", "(0008,0050)")),
    ("jitter-var", "JITTER StudyDate var:missing", {}, ["(0008,0020)"],
     "JITTER", ("StudyDate", "(0008,0020)")),
    ("remove-condition-var", "REMOVE StudyTime var:missing", {}, ["(0008,0030)"],
     "REMOVE", ("StudyTime", "(0008,0030)")),
    ("remove-all-keeps-replaced-field-in-deid", "REMOVE ALL\nREPLACE StudyID var:missing", {},
     ["(0020,0010)"], "REPLACE", ("StudyID", "(0020,0010)")),
    ("add-over-existing", "ADD StudyID var:missing", {}, ["(0020,0010)"],
     "ADD", ("StudyID", "(0020,0010)")),
    ("variable-given-as-none-counts-as-missing", "REPLACE StudyID var:nothing",
     {"nothing": None}, ["(0020,0010)"], "REPLACE", ("StudyID", "(0020,0010)")),
]


@pytest.mark.parametrize("case_id, recipe, variables, removed, action, fields", MISSING,
                         ids=[m[0] for m in MISSING])
def test_a_missing_variable_removes_the_field_and_warns_where_deid_keeps_it(
    case_id: str, recipe: str, variables: dict[str, Any], removed: list[str], action: str,
    fields: tuple[str, ...], run_both: Callable[..., Comparison],
) -> None:
    result = run_both(recipe, variables=variables)
    assert {(d.path, d.kind) for d in result.diffs} == {(p, "only-in-a") for p in removed}
    assert_warned(result.ours.warnings, action, fields, result.source)


def test_the_default_recipe_without_its_variables_removes_fields_the_user_recipe_shields(
    run_both: Callable[..., Comparison], write_recipe: Callable[..., Path],
) -> None:
    """``ADD PatientID var:entity_id`` / ``ADD StudyDate var:item_timestamp`` of the default
    recipe, appended by ``base=True``: deid keeps the REPLACEd PatientID and the KEPT StudyDate;
    ours removes both and says why."""
    mine = write_recipe("REPLACE PatientID SUBJ\nKEEP StudyDate")
    result = run_both(mine, "ctbrain1", base=True)
    assert {(d.path, d.kind) for d in result.diffs} == {("(0010,0020)", "only-in-a"),
                                                         ("(0008,0020)", "only-in-a")}
    assert_warned(result.ours.warnings, "ADD", ("PatientID", "(0010,0020)"), result.source)
    assert_warned(result.ours.warnings, "ADD", ("StudyDate", "(0008,0020)"), result.source)


def test_a_missing_variable_for_an_absent_field_adds_nothing_in_both_tools_and_warns(
    run_both: Callable[..., Comparison],
) -> None:
    result = run_both("ADD PatientIdentityRemoved var:missing")
    assert result.deid_changes() == []
    assert result.diffs == []
    assert_warned(result.ours.warnings, "ADD", ("PatientIdentityRemoved", "(0012,0062)"),
                  result.source)


# --------------------------------------------------------------------------------------------
# 2. recipe lines deid drops or misreads -> RecipeError with file and line

H = "FORMAT dicom\n%header\nREMOVE StudyID\n"
UNCHANGED_BUT_STUDY_ID = "drops the line"  # deid applies the rest (REMOVE StudyID) only
RECIPE_ERRORS = [
    # (id, recipe text, bad line number, what deid does)
    ("lower-case-action", H + "replace PatientName x\n", 4, UNCHANGED_BUT_STUDY_ID),
    ("mixed-case-action", H + "Remove PatientID\n", 4, UNCHANGED_BUT_STUDY_ID),
    ("unknown-action-with-action-prefix", H + "REMOVEX PatientID\n", 4, UNCHANGED_BUT_STUDY_ID),
    ("trailing-comment-empties-remove", H + "REMOVE PatientID   # note\n", 4,
     UNCHANGED_BUT_STUDY_ID),
    ("unknown-expander", H + "REMOVE allfields:x\n", 4, UNCHANGED_BUT_STUDY_ID),
    ("empty-except-selects-nothing", H + "REMOVE except:\n", 4, UNCHANGED_BUT_STUDY_ID),
    ("select-of-another-attribute", H + "REMOVE select:name:x\n", 4, UNCHANGED_BUT_STUDY_ID),
    ("unknown-deid-func", H + "REPLACE PatientID deid_func:simple_uuid\n", 4,
     UNCHANGED_BUT_STUDY_ID),
    ("lower-case-group-keyword", "FORMAT dicom\n%values v\nfield PatientID\n%header\n"
     "REMOVE values:v\nREMOVE StudyID\n", 3, UNCHANGED_BUT_STUDY_ID),
    ("add-with-expander", H + "ADD contains:Patient x\n", 4, "ValueError"),
    ("add-with-paren-tag", H + "ADD (0010,0010) x\n", 4, "ValueError"),
    ("add-all", H + "ADD ALL x\n", 4, "ValueError"),
    ("add-lower-case-keyword", H + "ADD patientid x\n", 4, "ValueError"),
    ("add-sequence-from-text", H + "ADD ReferencedImageSequence x\n", 4, "TypeError"),
    ("hash-inside-a-value", H + "REPLACE PatientName a#b\n", 4, "changed: PatientName 'a'"),
    ("blank-with-a-value", H + "BLANK PatientSex ignored value\n", 4, "blanks PatientSex"),
    ("keep-with-a-value", H + "KEEP StudyID ignored\n", 4, "unchanged"),  # kept from REMOVE
    ("label-in-header", H + "LABEL foo\n", 4, UNCHANGED_BUT_STUDY_ID),
    ("jitter-not-a-whole-number", H + "JITTER StudyDate 1.5\n", 4, "ValueError"),
    ("split-minlength-quoted", "FORMAT dicom\n%values v\nSPLIT PatientName by=\"^\";"
     "minlength='4'\n%header\nREMOVE values:v\n", 3, "ValueError"),
    ("missing-format", "%header\nREMOVE PatientID\n", 0, "KeyError"),
    ("lower-case-format", "format dicom\n%header\nREMOVE PatientID\n", 1, "SystemExit"),
    ("comment-on-format", "FORMAT dicom # c\n%header\nREMOVE PatientID\n", 1, "SystemExit"),
    ("action-before-section", "FORMAT dicom\nREMOVE PatientID\n%header\nREMOVE StudyID\n", 2,
     "UnboundLocalError"),
    ("named-header-section", "FORMAT dicom\n%header main\nREMOVE PatientID\n", 2,
     "AttributeError"),
    ("unknown-section", "FORMAT dicom\n%foo\nREMOVE PatientID\n", 2, "SystemExit"),
    ("missing-value", H + "REPLACE PatientID\n", 4, "SystemExit"),
    ("split-in-fields", "FORMAT dicom\n%fields f\nSPLIT PatientID by=\" \"\n%header\n"
     "REMOVE fields:f\n", 3, "SystemExit"),
    ("values-without-name", "FORMAT dicom\n%values\nFIELD PatientID\n%header\n"
     "REMOVE PatientID\n", 2, "SystemExit"),
]


def deid_outcome(source: Path, recipe: Path, out: Path, baseline: Path) -> str:
    try:
        written = run_deid(source, recipe, out)
    except (Exception, SystemExit) as exc:  # deid exits or crashes on some recipes
        return type(exc).__name__
    changes = [(d.path, d.kind, d.b) for d in diff_files(baseline, written)]
    if changes == [("(0020,0010)", "only-in-a", "")]:
        return UNCHANGED_BUT_STUDY_ID
    if changes == [("(0010,0040)", "value", "''"), ("(0020,0010)", "only-in-a", "")]:
        return "blanks PatientSex"
    if changes == []:
        return "unchanged"
    if {c[0] for c in changes} == {"(0010,0010)", "(0009,1010)[0]/(0010,0010)",
                                   "(0009,1010)[1]/(0010,0010)", "(0020,0010)"} and \
            str(get(written, "PatientName")) == "a":
        return "changed: PatientName 'a'"
    return f"changed: {changes}"


def baseline_of(source: Path, tmp_path: Path) -> Path:
    ds = pydicom.dcmread(source, force=True)
    for _ in ds.iterall():
        pass
    out = tmp_path / "baseline.dcm"
    ds.save_as(out)
    return out


def problem_lines(error: Exception, recipe: Path) -> set[int]:
    return {p.line for p in error.problems  # type: ignore[attr-defined]
            if Path(p.source).resolve() == recipe.resolve()}


@pytest.mark.parametrize("case_id, text, line, deid_does", RECIPE_ERRORS,
                         ids=[r[0] for r in RECIPE_ERRORS])
def test_a_recipe_line_deid_mishandles_is_an_error_naming_file_and_line(
    case_id: str, text: str, line: int, deid_does: str, tmp_path: Path,
    generated_file: Callable[..., Path], write_recipe: Callable[..., Path],
) -> None:
    source = generated_file()
    recipe = write_recipe(text, raw=True)
    assert deid_outcome(source, recipe, tmp_path / "deid", baseline_of(source, tmp_path)) \
        == deid_does
    recipe_mod = pytest.importorskip("deid_batch.recipe.parse")
    errors = pytest.importorskip("deid_batch.errors")
    with pytest.raises(errors.RecipeError) as caught:
        recipe_mod.load_recipe(str(recipe), base=None)
    assert line in problem_lines(caught.value, recipe), str(caught.value)
    assert str(recipe) in str(caught.value) or recipe.name in str(caught.value)


def test_every_bad_line_of_a_recipe_is_reported_at_once(
    write_recipe: Callable[..., Path],
) -> None:
    recipe = write_recipe(H + "replace PatientName x\nREMOVE allfields:x\nADD (0010,0010) x\n",
                          raw=True)
    recipe_mod = pytest.importorskip("deid_batch.recipe.parse")
    errors = pytest.importorskip("deid_batch.errors")
    with pytest.raises(errors.RecipeError) as caught:
        recipe_mod.load_recipe(str(recipe), base=None)
    assert {4, 5, 6} <= problem_lines(caught.value, recipe)


def test_a_recipe_path_that_does_not_exist_is_an_error_where_deid_applies_nothing(
    tmp_path: Path, generated_file: Callable[..., Path],
) -> None:
    source = generated_file()
    missing = tmp_path / "no-such.recipe"
    assert deid_outcome(source, missing, tmp_path / "deid", baseline_of(source, tmp_path)) \
        == "unchanged"
    recipe_mod = pytest.importorskip("deid_batch.recipe.parse")
    errors = pytest.importorskip("deid_batch.errors")
    with pytest.raises(errors.RecipeError, match="no-such.recipe"):
        recipe_mod.load_recipe(str(missing), base=None)


def test_values_of_a_second_recipe_are_an_error_where_deid_drops_them(
    tmp_path: Path, generated_file: Callable[..., Path], write_recipe: Callable[..., Path],
) -> None:
    first = write_recipe("REMOVE StudyID")
    second = write_recipe("FORMAT dicom\n%values w\nFIELD PatientSex\n%header\n"
                          "REMOVE values:w\n", raw=True)
    source = generated_file()
    written = run_deid(source, [first, second], tmp_path / "deid")
    assert [(d.path, d.kind) for d in diff_files(baseline_of(source, tmp_path), written)] == [
        ("(0020,0010)", "only-in-a")]  # the list w does not exist: REMOVE values:w is a no-op
    recipe_mod = pytest.importorskip("deid_batch.recipe.parse")
    errors = pytest.importorskip("deid_batch.errors")
    with pytest.raises(errors.RecipeError) as caught:
        recipe_mod.load_recipe([str(first), str(second)], base=None)
    assert str(second) in str(caught.value)


def test_an_upper_case_var_prefix_is_an_error_where_deid_writes_it_literally(
    tmp_path: Path, generated_file: Callable[..., Path], write_recipe: Callable[..., Path],
) -> None:
    source = generated_file()
    recipe = write_recipe("REPLACE PatientName Var:x")
    assert str(get(run_deid(source, recipe, tmp_path / "deid"), "PatientName")) == "Var:x"
    recipe_mod = pytest.importorskip("deid_batch.recipe.parse")
    errors = pytest.importorskip("deid_batch.errors")
    with pytest.raises(errors.RecipeError) as caught:
        recipe_mod.load_recipe(str(recipe), base=None)
    assert 5 in problem_lines(caught.value, recipe)


# --------------------------------------------------------------------------------------------
# 3. JITTER of TM / IS / US / partial dates


def dates_from_today(days: int) -> set[str]:
    """deid's result for a value parsed as 'today': today or, across midnight, tomorrow."""
    today = dt.date.today()
    return {(today + dt.timedelta(days=days + k)).strftime("%Y%m%d") for k in (0, 1)}


JITTER_CASES = [
    # (id, recipe, keyword, original value, edit of the generated file)
    ("tm", "JITTER StudyTime 1", "StudyTime", "011635.943000", None),
    ("is", "JITTER InstanceNumber 1", "InstanceNumber", "7", None),
    ("partial-date", "JITTER SeriesDate 1", "SeriesDate", "2023",
     lambda ds: setattr(ds, "SeriesDate", "2023")),
]


@pytest.mark.parametrize("case_id, recipe, keyword, original, edit", JITTER_CASES,
                         ids=[j[0] for j in JITTER_CASES])
def test_jitter_of_a_non_date_keeps_the_value_and_warns_where_deid_uses_today(
    case_id: str, recipe: str, keyword: str, original: str, edit: Any,
    generated_file: Callable[..., Path], run_both: Callable[..., Comparison],
) -> None:
    result = run_both(recipe, generated_file(edit))
    deid_value = str(get(result.deid, keyword))
    if case_id == "partial-date":  # month and day come from today
        assert deid_value[:4] == "2023" and deid_value[4:] in {d[4:] for d in dates_from_today(1)}
    elif case_id == "is":  # '7' parses as the 7th of this month
        today = dt.date.today()
        assert deid_value == (today.replace(day=7) + dt.timedelta(days=1)).strftime("%Y%m%d")
    else:
        assert deid_value in dates_from_today(1)
    assert str(get(result.ours.path, keyword)) == original
    tag_path = str(Tag(tag_for_keyword(keyword)))
    assert [(d.path, d.kind) for d in result.diffs] == [(tag_path, "value")]
    assert_warned(result.ours.warnings, "JITTER", (keyword,), result.source)


def test_jitter_of_a_us_value_keeps_it_and_warns_where_deid_cannot_write_the_file(
    tmp_path: Path, generated_file: Callable[..., Path], write_recipe: Callable[..., Path],
) -> None:
    source, recipe = generated_file(), write_recipe("JITTER PregnancyStatus 1")
    with pytest.raises(OSError, match="ushort format"):
        run_deid(source, recipe, tmp_path / "deid")
    pytest.importorskip("deid_batch.recipe.engine")
    ours = run_ours(source, recipe, tmp_path / "ours")
    assert get(ours.path, "PregnancyStatus") == 4
    assert_warned(ours.warnings, "JITTER", ("PregnancyStatus", "(0010,21C0)"), source)


# --------------------------------------------------------------------------------------------
# 4. one dataset's failure never aborts the others


def test_a_failing_dataset_does_not_stop_the_next_one_where_deid_aborts_the_call(
    tmp_path: Path, generated_file: Callable[..., Path], write_recipe: Callable[..., Path],
) -> None:
    bad = generated_file(lambda ds: setattr(ds, "StudyDate", "notadate"), name="bad.dcm")
    good = generated_file(name="good.dcm")
    recipe = write_recipe("JITTER StudyDate 1\nREMOVE PatientID")
    from deid.config import DeidRecipe
    from deid.dicom import replace_identifiers

    out = tmp_path / "deid-batch-call"
    out.mkdir()
    with pytest.raises(Exception):  # noqa: B017 - dateutil's ParserError, whatever its type
        replace_identifiers([str(bad), str(good)], deid=DeidRecipe(str(recipe), base=False),
                            save=True, output_folder=str(out))
    assert not (out / "good.dcm").exists()
    reference = run_deid(good, recipe, tmp_path / "deid-good-alone")

    engine = pytest.importorskip("deid_batch.recipe.engine")
    errors = pytest.importorskip("deid_batch.errors")
    from deid_batch.recipe.parse import load_recipe

    compiled = load_recipe(str(recipe), base=None)
    options = engine.EngineOptions(remove_private=False)
    try:
        engine.deidentify_dataset(pydicom.dcmread(bad), recipe=compiled, options=options,
                                  source=str(bad))
    except errors.DatasetError:
        pass  # a per-dataset error is fine; what matters is that the next dataset is processed
    ds = pydicom.dcmread(good)
    result = engine.deidentify_dataset(ds, recipe=compiled, options=options, source=str(good))
    written = tmp_path / "ours-good.dcm"
    result.dataset.save_as(written)
    assert diff_files(reference, written) == []


# --------------------------------------------------------------------------------------------
# 5. private tags: removed by default, after the recipe


def test_private_tags_are_removed_by_default_after_the_recipe(
    tmp_path: Path, generated_file: Callable[..., Path], write_recipe: Callable[..., Path],
) -> None:
    source = generated_file()
    recipe = write_recipe("REMOVE PatientID")
    deid_then_strip = run_deid(source, recipe, tmp_path / "deid", remove_private_after=True)
    engine = pytest.importorskip("deid_batch.recipe.engine")
    from deid_batch.recipe.parse import load_recipe

    result = engine.deidentify_dataset(pydicom.dcmread(source), recipe=load_recipe(str(recipe), base=None),
                                       source=str(source))
    ours = tmp_path / "ours.dcm"
    result.dataset.save_as(ours)
    assert diff_files(deid_then_strip, ours) == []
    assert engine.EngineOptions().remove_private is True


def test_private_values_still_feed_values_lists_because_removal_comes_after_the_recipe(
    tmp_path: Path, generated_file: Callable[..., Path], write_recipe: Callable[..., Path],
    run_both: Callable[..., Comparison],
) -> None:
    """deid's remove_private=True strips private tags first, so a %values list fed by a private
    element is empty there; ours strips them last, so the public copy of the value goes too."""
    source = generated_file(lambda ds: setattr(ds, "PatientComments", "PRIVATE-LO-VALUE"))
    recipe = write_recipe("FORMAT dicom\n%values priv\nFIELD 00091001\n%header\n"
                          "REMOVE values:priv\n")
    deid_private_first = run_deid(source, recipe, tmp_path / "deid-first", remove_private=True)
    assert get(deid_private_first, "PatientComments") == "PRIVATE-LO-VALUE"
    result = run_both(recipe, source, remove_private=True)  # oracle: deid, then strip
    assert result.diffs == []
    assert get(result.ours.path, "PatientComments") == "absent"
    assert Difference("(0010,4000)", "only-in-a", "'PRIVATE-LO-VALUE'", "") in diff_files(
        deid_private_first, result.ours.path)


@pytest.mark.parametrize("recipe", [
    "REPLACE PatientWeight abc",  # DS conversion fails in pydicom
    "REPLACE FrameIncrementPointer (0011,0077)",  # AT takes only 8-hex text
    "REPLACE ALL X",  # hits a sequence
])
def test_a_dataset_deid_crashes_on_is_a_dataset_error_for_that_dataset_only(
    recipe: str, tmp_path: Path, generated_file: Callable[..., Path],
    write_recipe: Callable[..., Path],
) -> None:
    source, recipe_path = generated_file(), write_recipe(recipe)
    with pytest.raises((ValueError, TypeError)):
        run_deid(source, recipe_path, tmp_path / "deid")
    errors = pytest.importorskip("deid_batch.errors")
    with pytest.raises(errors.DatasetError) as caught:
        run_ours(source, recipe_path, tmp_path / "ours")
    assert str(source) in str(caught.value)
    assert not [v for v in PHI if v in str(caught.value)]


# --------------------------------------------------------------------------------------------
# 3b. JITTER of a DA deid cannot parse or overflows: deid raises, ours keeps it and warns


@pytest.mark.parametrize("recipe, edit", [
    ("JITTER StudyDate 1", lambda ds: setattr(ds, "StudyDate", "notadate")),
    ("JITTER StudyDate 1", lambda ds: setattr(ds, "StudyDate", "202301")),
    ("JITTER StudyDate 3000000", None),
], ids=["not-a-date", "year-month-only", "overflow"])
def test_jitter_of_an_unusable_date_keeps_it_and_warns_where_deid_aborts(
    recipe: str, edit: Any, tmp_path: Path, generated_file: Callable[..., Path],
    write_recipe: Callable[..., Path],
) -> None:
    source, recipe_path = generated_file(edit), write_recipe(recipe)
    original = get(source, "StudyDate")
    with pytest.raises((ValueError, OverflowError)):
        run_deid(source, recipe_path, tmp_path / "deid")
    pytest.importorskip("deid_batch.recipe.engine")
    ours = run_ours(source, recipe_path, tmp_path / "ours")
    assert get(ours.path, "StudyDate") == original
    assert_warned(ours.warnings, "JITTER", ("StudyDate", "(0008,0020)"), source)


# --------------------------------------------------------------------------------------------
# Not in the documented list (reported to the lead): ADD of a new numeric or binary element.
# deid stores the recipe text in the new element and cannot write the file; ours converts the
# text by VR, exactly as deid does when the element already exists - which is the oracle here.

NUMERIC_AND_BINARY = {vr: NEW_VALUE[vr] for vr in
                      ("FD", "FL", "SL", "SS", "SV", "UL", "US", "UV",
                       "OB", "OD", "OF", "OL", "OV", "OW", "UN")}


@pytest.mark.parametrize("vr", sorted(NUMERIC_AND_BINARY))
def test_add_of_a_new_numeric_or_binary_element_is_written_where_deid_cannot_write_the_file(
    vr: str, tmp_path: Path, generated_file: Callable[..., Path],
    write_recipe: Callable[..., Path],
) -> None:
    keyword = TOP_LEVEL_BY_VR[vr][0]
    recipe = write_recipe(f"ADD {keyword} {NUMERIC_AND_BINARY[vr]}")
    absent = generated_file(lambda ds: delattr(ds, keyword))
    with pytest.raises((OSError, TypeError)):
        run_deid(absent, recipe, tmp_path / "deid-new")
    over_existing = run_deid(generated_file(), recipe, tmp_path / "deid-existing")
    pytest.importorskip("deid_batch.recipe.engine")
    ours = run_ours(absent, recipe, tmp_path / "ours")
    tag_path = str(Tag(tag_for_keyword(keyword)))
    assert flatten_file(ours.path)[tag_path] == flatten_file(over_existing)[tag_path]


# --------------------------------------------------------------------------------------------
# Nondeterministic built-ins: same shape, different values


UUID4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


@pytest.mark.parametrize("recipe, keyword, pattern", [
    ("REPLACE ReferringPhysicianName deid_func:basic_uuid", "ReferringPhysicianName",
     f"^{UUID4}$"),
    ("REPLACE SeriesInstanceUID deid_func:suffix_uuid", "SeriesInstanceUID",
     f"^seriesinstanceuid-{UUID4}$"),
    ("REPLACE SOPInstanceUID deid_func:dicom_uuid org_root=1.2.826.0.1.3680043.10.188",
     "SOPInstanceUID", r"^1\.2\.826\.0\.1\.3680043\.10\.188\.\d+$"),
])
def test_random_uid_functions_give_values_of_deids_shape(
    recipe: str, keyword: str, pattern: str, run_both: Callable[..., Comparison],
) -> None:
    import re

    result = run_both(recipe)
    deid_value, ours_value = str(get(result.deid, keyword)), str(get(result.ours.path, keyword))
    assert re.match(pattern, deid_value) and re.match(pattern, ours_value)
    if "dicom_uuid" not in recipe:  # uuid4().int has a varying number of digits
        assert len(ours_value) == len(deid_value)
    assert len(ours_value) <= 64
    tag_path = str(Tag(tag_for_keyword(keyword)))
    assert [(d.path, d.kind) for d in result.diffs] == [(tag_path, "value")]


# --------------------------------------------------------------------------------------------
# 6. KEEP of a private element by creator survives the private-tag removal


def test_a_private_element_kept_by_creator_survives_the_removal_where_deid_strips_it(
    run_both: Callable[..., Comparison],
) -> None:
    from .test_selectors import MITRA

    result = run_both(f"KEEP (0033,{MITRA},1E)\nREMOVE PatientName", remove_private=True)
    assert {(d.path, d.kind) for d in result.diffs} == {("(0033,0010)", "only-in-b"),
                                                        ("(0033,101E)", "only-in-b")}
    assert not any(d.path.startswith("(0010,0010)") for d in result.diffs)

"""Recipe loading: deid's grammar and combining rules, and every refusal (RecipeError)."""

from __future__ import annotations

import pickle
import textwrap

import pytest

from deid_batch.errors import RecipeError
from deid_batch.recipe.parse import Recipe, RecipeAction, load_deid, load_recipe

deid = pytest.importorskip("deid")


@pytest.fixture
def write_recipe(tmp_path):
    """Write recipe text (dedented) to a file and return its path as a string."""
    counter = iter(range(1000))

    def write(text: str, name: str | None = None) -> str:
        path = tmp_path / (name or f"deid.recipe{next(counter)}")
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return str(path)

    return write


def header(recipe: Recipe) -> list[tuple[str, str, str | None]]:
    return [(a.action, a.field, a.value) for a in recipe.header]


# ------------------------------------------------------------------------------- tokenisation
def test_quotes_are_kept_and_spaces_outside_quotes_collapse(write_recipe):
    path = write_recipe("""
        FORMAT dicom
        %header
        REPLACE PatientName "O  Brien"
        REPLACE   PatientID   a   b   c
        REMOVE (0033,"MITRA OBJECT UTF8 ATTRIBUTES 1.0",1E)
    """)
    assert header(load_recipe(path)) == [
        ("REPLACE", "PatientName", '"O  Brien"'),
        ("REPLACE", "PatientID", "a b c"),
        ("REMOVE", '(0033,"MITRA OBJECT UTF8 ATTRIBUTES 1.0",1E)', None),
    ]


def test_trailing_comment_leaves_a_trailing_space_in_the_value_like_deid(write_recipe):
    path = write_recipe("""
        FORMAT dicom
        %header
        REPLACE PatientName foo # a note
    """)
    assert header(load_recipe(path)) == [("REPLACE", "PatientName", "foo ")]


def test_unpaired_apostrophe_splits_tokens_as_deid_does(write_recipe):
    path = write_recipe("""
        FORMAT dicom
        %header
        REPLACE PatientName O'Brien
    """)
    assert header(load_recipe(path)) == [("REPLACE", "PatientName", "O Brien")]


def test_sections_are_case_insensitive_and_repeat_into_the_same_list(write_recipe):
    path = write_recipe("""
        FORMAT   DICOM
        %HEADER # comment after a section is fine
        REMOVE PatientID
        %values names
        FIELD PatientName
        %header
        BLANK StudyDate
        %values names
        SPLIT OperatorsName by="^";minlength=3
        %labels
        KEEP Modality
    """)
    recipe = load_recipe(path)
    assert header(recipe) == [("REMOVE", "PatientID", None), ("BLANK", "StudyDate", None)]
    assert [(a.action, a.field, a.value) for a in dict(recipe.values)["names"]] == [
        ("FIELD", "PatientName", None), ("SPLIT", "OperatorsName", 'by="^";minlength=3')]
    assert [(a.action, a.field) for a in recipe.labels] == [("KEEP", "Modality")]


def test_actions_remember_their_file_and_line(write_recipe):
    path = write_recipe("""
        FORMAT dicom

        # comment
        %header
        REMOVE PatientID
    """)
    (action,) = load_recipe(path).header
    assert (action.source, action.line) == (path, 5)


def test_filter_sections_parse_and_do_not_disturb_the_header(write_recipe):
    path = write_recipe("""
        FORMAT dicom
        %filter graylist
        LABEL Dose Report # note
          contains Modality CT
          + contains Manufacturer GE || missing PatientName
          ctpcoordinates 0,0,512,110
          coordinates 1,2,3,4
        %header
        REMOVE PatientID
    """)
    recipe = load_recipe(path)
    assert header(recipe) == [("REMOVE", "PatientID", None)]
    shape = recipe.as_dict()["filter"]["graylist"]
    assert shape == [{
        "name": "LABEL Dose Report",
        "filters": [
            {"action": ["contains"], "field": ["Modality"], "operator": None,
             "InnerOperators": [], "value": ["CT"]},
            {"action": ["contains", "missing"], "field": ["Manufacturer", "PatientName"],
             "operator": "and", "InnerOperators": ["or"], "value": ["GE"]},
        ],
        "coordinates": [[0, "0,0,512,110"], [0, "1,2,3,4"]],
    }]


# ------------------------------------------------------------------------------- deid parity
@pytest.mark.parametrize("name", ["dicom", "dicom.ultrasound", "dicom.xray.chest"])
def test_bundled_recipes_load_to_the_same_dict_as_deid(name):
    from deid.config import DeidRecipe

    ours = load_deid(name)
    theirs = DeidRecipe(name, base=False).deid
    assert ours == {k: v for k, v in theirs.items()}


def test_deid_spellings_of_bundled_names_are_accepted():
    assert load_recipe("deid.dicom") == load_recipe("dicom")


def test_load_deid_shape_of_a_simple_recipe(write_recipe):
    path = write_recipe("""
        FORMAT dicom
        %fields f
        FIELD PatientID
        %header
        ADD PatientIdentityRemoved Yes
        REMOVE fields:f
    """)
    assert load_deid(path) == {
        "format": "dicom",
        "fields": {"f": [{"action": "FIELD", "field": "PatientID"}]},
        "header": [{"action": "ADD", "field": "PatientIdentityRemoved", "value": "Yes"},
                   {"action": "REMOVE", "field": "fields:f"}],
    }


def test_dict_recipe_in_deid_shape_is_accepted_and_round_trips():
    shape = {"format": "dicom",
             "header": [{"action": "REMOVE", "field": "PatientID"},
                        {"action": "REPLACE", "field": "PatientName", "value": "x"}]}
    recipe = load_recipe(shape)
    assert recipe.as_dict() == shape


def test_combining_appends_headers_and_first_supplies_values(write_recipe):
    first = write_recipe("""
        FORMAT dicom
        %values v
        FIELD PatientName
        %filter graylist
        LABEL A
          missing PatientName
        %header
        REMOVE PatientID
    """)
    second = write_recipe("""
        FORMAT dicom
        %filter graylist
        LABEL B
          missing Modality
        %header
        REMOVE values:v
    """)
    recipe = load_recipe([first, second])
    assert header(recipe) == [("REMOVE", "PatientID", None), ("REMOVE", "values:v", None)]
    # deid's quirk: a same-named filter group of a later recipe replaces the earlier one
    assert [lab.name for lab in dict(recipe.filters)["graylist"]] == ["LABEL B"]
    assert recipe.sources == (first, second)


def test_combined_recipe_equals_deid_combination(write_recipe):
    from deid.config import DeidRecipe

    first = write_recipe("""
        FORMAT dicom
        %header
        REMOVE PatientID
    """)
    ours = load_recipe([first], base=True).as_dict()
    theirs = DeidRecipe([first], base=True).deid
    assert ours == dict(theirs)


def test_base_true_appends_deids_dicom_recipe_after_ours(write_recipe):
    path = write_recipe("""
        FORMAT dicom
        %header
        KEEP PatientID
    """)
    recipe = load_recipe(path, base=True)
    assert header(recipe)[0] == ("KEEP", "PatientID", None)
    assert len(recipe.header) == 1 + 73


def test_default_recipe_removes_all_and_remaps_uids():
    recipe = load_recipe()
    assert header(recipe)[0] == ("REMOVE", "ALL", None)
    replaced = {a.field: a.value for a in recipe.header if a.action == "REPLACE"}
    assert replaced == {f: "deid_func:hmac_uid" for f in
                        ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")}
    kept = {a.field for a in recipe.header if a.action == "KEEP"}
    assert {"SOPClassUID", "Rows", "Columns", "BitsAllocated", "PhotometricInterpretation",
            "RescaleSlope", "WindowCenter"} <= kept


def test_folder_with_one_deid_file_is_used(tmp_path, write_recipe):
    write_recipe("FORMAT dicom\n%header\nREMOVE PatientID\n", name="deid.mine")
    (tmp_path / "notes.txt").write_text("not a recipe")
    assert header(load_recipe(str(tmp_path))) == [("REMOVE", "PatientID", None)]


def test_folder_with_several_deid_files_is_refused(tmp_path, write_recipe):
    write_recipe("FORMAT dicom\n%header\nREMOVE PatientID\n", name="deid.a")
    write_recipe("FORMAT dicom\n%header\nREMOVE PatientName\n", name="deid.b")
    with pytest.raises(RecipeError, match="several recipe files"):
        load_recipe(str(tmp_path))


def test_recipe_object_is_returned_as_is():
    recipe = load_recipe()
    assert load_recipe(recipe) is recipe


# ------------------------------------------------------------------------------- value objects
def test_recipe_pickles_hashes_and_has_a_stable_digest():
    recipe = load_recipe("dicom")
    clone = pickle.loads(pickle.dumps(recipe))
    assert clone == recipe
    assert hash(clone) == hash(recipe)
    assert clone.digest == recipe.digest == load_recipe("dicom").digest
    assert len(recipe.digest) == 64


def test_digest_changes_with_content(write_recipe):
    a = load_recipe(write_recipe("FORMAT dicom\n%header\nREMOVE PatientID\n"))
    b = load_recipe(write_recipe("FORMAT dicom\n%header\nREMOVE PatientName\n"))
    assert a.digest != b.digest


def test_recipe_action_is_frozen():
    action = RecipeAction("REMOVE", "PatientID", None, "x", 1)
    with pytest.raises(AttributeError):
        action.field = "y"  # type: ignore[misc]


# ------------------------------------------------------------------------------- refusals
BAD_LINES = [
    ("replace PatientName x", "unknown action 'replace'"),
    ("REMOVEX PatientID", "unknown action 'REMOVEX'"),
    ("Remove PatientID", "unknown action 'Remove'"),
    ("REMOVE PatientID # note", "empty condition"),
    ("ADD (0010,0021) x", "ADD needs a DICOM keyword"),
    ("ADD contains:Patient x", "ADD needs a DICOM keyword"),
    ("ADD ALL x", "ADD needs a DICOM keyword"),
    ("ADD values:v x", "ADD needs a DICOM keyword"),
    ("ADD patientid x", "ADD needs a DICOM keyword"),
    ("ADD 0x00100021 x", "ADD needs a DICOM keyword"),
    ("ADD ReferencedStudySequence x", "sequence"),
    ("REMOVE 0x00100010", "cannot read the field selector"),
    ("REMOVE (0010,0010", "cannot read the field selector"),
    ("REMOVE allfields:x", "unknown expander 'allfields:'"),
    ("REMOVE Contains(x", "cannot read the field selector"),
    ("REMOVE contains:a(b", "not a valid regular expression"),
    ("REMOVE select:VR", "select:"),
    ("REMOVE select:VR:XX", "two-letter VR"),
    ("REMOVE select:group:zz", "hex group"),
    ("REMOVE select:name:x", "supports VR and group"),
    ("REMOVE except:", "empty expression"),
    ("REMOVE fields:nosuch", "names no %fields section"),
    ("REMOVE valuesx", "values:NAME"),
    ("REPLACE PatientName deid_func:simple_uuid", "unknown deid_func 'simple_uuid'"),
    ("ADD PatientID deid_func:pydicom_uuid", "cannot be used with ADD"),
    ("REPLACE StudyDate deid_func:jitter days=1.5", "must be an integer"),
    ("REPLACE PatientName Var:x", "must be lower case"),
    ("REPLACE PatientName func:a b", "one name without spaces"),
    ("JITTER StudyDate 1.5", "whole number of days"),
    ("JITTER StudyDate abc", "whole number of days"),
    ("ADD PatientIdentityRemoved", "needs a value"),
    ("REPLACE PatientName", "needs a value"),
    ("JITTER StudyDate # comment", "needs a value"),
    ("REPLACE PatientName a#b", "values cannot contain '#'"),
    ('REPLACE PatientName "a #b"', "values cannot contain '#'"),
    ("LABEL x", "only meaningful in a %filter"),
    ("BLANK PatientName something", "takes no value"),
    ("WHATEVER", "not recognised"),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_each_silently_dropped_or_crashing_line_is_a_recipe_error(write_recipe, line, message):
    path = write_recipe(f"FORMAT dicom\n%header\n{line}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert message in str(info.value)
    assert [p.line for p in info.value.problems] == [3]


BAD_FILES = [
    ("format dicom\n%header\nREMOVE PatientID\n", "invalid FORMAT"),
    ("FORMAT dicom # c\n%header\nREMOVE PatientID\n", "invalid FORMAT"),
    ("FORMAT nifti\n%header\nREMOVE PatientID\n", "invalid FORMAT"),
    ("%header\nREMOVE PatientID\n", "missing 'FORMAT dicom'"),
    ("FORMAT dicom\n%header main\nREMOVE PatientID\n", "%header takes no name"),
    ("FORMAT dicom\nREMOVE PatientID\n", "before any section"),
    ("FORMAT dicom\n%values\nFIELD PatientID\n", "%values needs a name"),
    ("FORMAT dicom\n%stuff\n", "unknown section"),
    ("FORMAT dicom\n%fields f\nSPLIT PatientID\n", "only supports FIELD"),
    ("FORMAT dicom\n%values v\nfield PatientID\n", "upper case"),
    ("FORMAT dicom\n%values v\nSPLIT PatientName minlength='4'\n", "bare integer"),
    ("FORMAT dicom\n%values v\nSPLIT PatientName by\n", "exactly one '='"),
    ("FORMAT dicom\n%values v\nFIELD values:x\n", "cannot be used here"),
    ("FORMAT dicom\n%values v\nREMOVE PatientID\n", "not allowed in %values"),
    ("FORMAT dicom\n%filter f\nLABEL a\n  REMOVE PatientID\n", "not a valid filter criterion"),
    ("FORMAT dicom\n%filter f\nLABEL a\n  ctpcoordinates 1,2\n", "four integers"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_structural_problems_are_recipe_errors(write_recipe, text, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(")):
        load_recipe(write_recipe(text))


def test_every_problem_is_reported_together_with_its_line(write_recipe):
    path = write_recipe("""
        FORMAT dicom
        %header
        REMOVE PatientID
        replace PatientName x
        ADD (0010,0021) y
        REMOVE allfields:x
        JITTER StudyDate soon
        REPLACE PatientID deid_func:nope
    """)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    problems = info.value.problems
    assert [p.line for p in problems] == [4, 5, 6, 7, 8]
    assert all(p.source == path for p in problems)
    text = str(info.value)
    assert "5 problems" in text and f"{path}:4:" in text


def test_missing_recipe_path_is_an_error_not_a_silent_skip(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(str(tmp_path / "nope.deid"))


def test_missing_item_in_a_list_is_reported_with_the_others(tmp_path, write_recipe):
    good = write_recipe("FORMAT dicom\n%header\nreplace X y\n")
    with pytest.raises(RecipeError) as info:
        load_recipe([good, str(tmp_path / "nope")])
    assert len(info.value.problems) == 2


def test_later_recipes_values_sections_are_refused_not_dropped(write_recipe):
    first = write_recipe("FORMAT dicom\n%header\nREMOVE PatientID\n")
    second = write_recipe("FORMAT dicom\n%values v\nFIELD PatientName\n%header\nREMOVE values:v\n")
    with pytest.raises(RecipeError, match="other than the first"):
        load_recipe([first, second])


def test_bundled_name_without_deid_installed_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "deid", None)  # what an uninstalled package looks like
    with pytest.raises(RecipeError, match=r"deid_batch\[deid\]"):
        load_recipe("dicom")


def test_a_byte_order_mark_before_format_is_tolerated(tmp_path):
    path = tmp_path / "deid.bom"
    path.write_text("\ufeffFORMAT dicom\n%header\nREMOVE PatientID\n", encoding="utf-8")
    assert header(load_recipe(str(path))) == [("REMOVE", "PatientID", None)]

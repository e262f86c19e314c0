"""Issue 8.0: a user's recipe runs on the remove-everything base, as deid's docs show; the base is
explicit (``--base NAME|none``), and the effective stack is stated in the summary and ``_run.json``."""

from __future__ import annotations

import json

import pydicom
import pytest

from deid_batch import EngineOptions, deidentify_dataset
from deid_batch.cli import main
from deid_batch.errors import RecipeError
from deid_batch.recipe import load_recipe
from deid_batch.recipe.builtins import BUILTINS, DEFAULT_BASE


@pytest.fixture
def one_line_recipe(tmp_path):
    path = tmp_path / "my.recipe"
    path.write_text("FORMAT dicom\n%header\nREPLACE PatientID var:id\n")
    return path


@pytest.fixture
def mapping(tmp_path, small_archive):
    ids = {pydicom.dcmread(p, stop_before_pixels=True).PatientID for p in small_archive.rglob("*") if p.is_file()}
    path = tmp_path / "mapping.csv"
    path.write_text("PatientID,id\n" + "".join(f"{pid},SUBJ-{i}\n" for i, pid in enumerate(sorted(ids))))
    return path


def _apply(*args: str) -> int:
    return main(["apply", *args, "--workers", "0", "--no-progress"])


def test_readme_workflow_with_a_one_line_recipe_removes_everything_else(
        small_archive, tmp_path, one_line_recipe, mapping, key_file, capsys):
    out = tmp_path / "out"
    assert _apply(str(small_archive), "--out", str(out), "--recipe", str(one_line_recipe),
                  "--vars", str(mapping), "--key-file", key_file) == 0
    printed = capsys.readouterr().out
    assert f"recipe:   {DEFAULT_BASE} (base) + {one_line_recipe}" in printed
    outputs = [p for p in out.rglob("*.dcm")]
    assert len(outputs) == 24
    for path in outputs:
        ds = pydicom.dcmread(path)
        assert ds.PatientID.startswith("SUBJ-")
        for gone in ("PatientName", "PatientBirthDate", "StudyDate", "AccessionNumber", "InstitutionName"):
            assert gone not in ds, gone
    run = json.loads((tmp_path / "out.manifest" / "_run.json").read_text())
    assert run["recipe_stack"] == [f"{DEFAULT_BASE} (base)", str(one_line_recipe)]
    effective = json.loads((tmp_path / "out.manifest" / "_recipe.json").read_text())
    assert effective["stack"] == run["recipe_stack"]
    again = load_recipe(effective["recipe"], base=None)
    assert again.digest == load_recipe(str(one_line_recipe), base=DEFAULT_BASE).digest


def test_base_none_is_deids_recipe_only_behaviour(small_archive, tmp_path, one_line_recipe, mapping, key_file):
    out = tmp_path / "out"
    assert _apply(str(small_archive), "--out", str(out), "--recipe", str(one_line_recipe), "--base", "none",
                  "--vars", str(mapping), "--key-file", key_file) == 0
    for path in out.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        assert ds.PatientID.startswith("SUBJ-") and "PatientName" in ds and "StudyDate" in ds


def test_the_same_recipe_file_behaves_the_same_in_the_api_the_cli_and_inspect(
        small_archive, tmp_path, one_line_recipe, capsys):
    from deid_batch import replace_identifiers

    source = sorted(p for p in small_archive.rglob("*") if p.is_file())[0]
    ds = pydicom.dcmread(source)
    result = deidentify_dataset(ds, str(one_line_recipe), {"id": "X"}, options=EngineOptions(uid_key=b"k" * 32))
    assert "PatientName" not in result.dataset and result.dataset.PatientID == "X"
    [written] = replace_identifiers([str(source)], recipe=str(one_line_recipe), client="sync",
                                    output_folder=str(tmp_path / "api"))
    assert "PatientName" not in pydicom.dcmread(written)
    assert main(["inspect", str(source), "--recipe", str(one_line_recipe)]) == 0
    assert f"# recipe: {DEFAULT_BASE} (base) + {one_line_recipe}" in capsys.readouterr().out


def test_filter_only_builtins_get_the_base(name="dicom.ultrasound"):
    assert load_recipe(name, base=DEFAULT_BASE).stack == (f"{DEFAULT_BASE} (base)", name)


@pytest.mark.parametrize("name", ["dicom", "deid.dicom", "remove-everything"])
def test_a_complete_builtin_first_is_the_base_itself(name):
    recipe = load_recipe([name], base=DEFAULT_BASE)
    assert recipe.stack == (name,)
    assert load_recipe([name], base=DEFAULT_BASE).header == load_recipe(name, base=None).header


def test_a_complete_builtin_later_in_the_stack_gets_the_base_under_the_first(one_line_recipe):
    recipe = load_recipe([str(one_line_recipe), "dicom"], base=DEFAULT_BASE)
    assert recipe.stack == (f"{DEFAULT_BASE} (base)", str(one_line_recipe), "dicom")
    base = load_recipe(DEFAULT_BASE, base=None)
    assert recipe.header[:len(base.header)] == base.header


def test_base_runs_first_so_add_and_replace_show_through_remove_all(tmp_path):
    path = tmp_path / "r"
    path.write_text("FORMAT dicom\n%header\nADD PatientIdentityRemoved YES\nREPLACE PatientName X\n")
    ds = pydicom.Dataset()
    ds.PatientName, ds.PatientID, ds.StudyDate = "Doe^Jane", "MRN1", "20200101"
    out = deidentify_dataset(ds, str(path), options=EngineOptions(uid_key=b"k" * 32)).dataset
    assert out.PatientIdentityRemoved == "YES" and out.PatientName == "X"
    assert "PatientID" not in out and "StudyDate" not in out


def test_base_names_another_builtin_or_a_file(tmp_path, one_line_recipe):
    recipe = load_recipe(str(one_line_recipe), base="dicom")
    assert recipe.stack == ("dicom (base)", str(one_line_recipe))
    assert load_recipe(str(one_line_recipe), base=str(one_line_recipe)).stack[0] == f"{one_line_recipe} (base)"


def test_no_recipe_and_no_base_is_refused(tmp_path, small_archive):
    with pytest.raises(RecipeError, match="no recipe to apply"):
        load_recipe(None, base="none")
    assert _apply(str(small_archive), "--out", str(tmp_path / "o"), "--base", "none") == 2
    assert not (tmp_path / "o").exists()


def test_every_builtin_has_a_name_a_description_and_loads():
    for name, entry in BUILTINS.items():
        assert entry.description
        stack = [entry.refines, name] if entry.refines else name  # an option after its profile
        assert load_recipe(stack, base=None).header or not entry.complete


def test_a_user_file_named_like_a_builtin_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "remove-everything").write_text("FORMAT dicom\n%header\nREMOVE PatientName\n")
    recipe = load_recipe("remove-everything", base=None)
    assert [a.field for a in recipe.header] == ["PatientName"]

"""Recipes are data (issue 4, part 7): nothing in a recipe can import or run code.

``func:NAME`` resolves only functions given through the Python API (``functions=`` or callables
in ``ids``) and ``deid_func:NAME`` only the built-ins; names that look like Python (``os.system``,
``__import__``, ``eval``, dotted module paths) never resolve, and nothing runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deid_batch.api import run_apply
from deid_batch.errors import RecipeError
from tests.hostile import make_dicom, manifest_rows

ATTEMPTS = [
    "func:os.system",
    "func:__import__",
    "func:eval",
    "func:builtins.exec",
    "func:subprocess.run",
    "func:tests.test_safety_recipes.touch",
    "func:touch",
    "deid_func:os.system",
    "deid_func:eval",
    "deid_func:__import__",
    "deid_func:tests.test_safety_recipes.touch",
]

MARKER: list[str] = []


def touch(*args: object, **kwargs: object) -> str:
    MARKER.append("ran")
    return "ran"


@pytest.mark.parametrize("value", ATTEMPTS)
def test_a_recipe_cannot_name_python_code(tmp_path: Path, value: str) -> None:
    make_dicom(tmp_path / "in" / "a.dcm")
    recipe = tmp_path / "deid.evil"
    recipe.write_text(f"FORMAT dicom\n\n%header\n\nREPLACE PatientName {value}\nREPLACE PatientID {value} id\n")
    MARKER.clear()
    try:
        report = run_apply(tmp_path / "in", recipe=str(recipe), output_folder=str(tmp_path / "out"))
    except RecipeError:
        assert MARKER == []
        return
    assert MARKER == []
    rows = manifest_rows(report.manifest)
    assert len(rows) == 1
    _, output, status, code, warnings = rows[0]
    if status == "written":  # the lookup was treated as missing: nothing ran, the value did not stay
        import pydicom

        ds = pydicom.dcmread(output)
        assert str(ds.get("PatientName", "")) != "Zyxwvut^Qwertyname00000"
    else:
        assert code == "deid-error"


def test_a_function_given_through_the_api_is_the_only_way_to_run_code(tmp_path: Path) -> None:
    make_dicom(tmp_path / "in" / "a.dcm")
    recipe = tmp_path / "deid.ok"
    recipe.write_text("FORMAT dicom\n\n%header\n\nREPLACE PatientName func:touch\n")
    MARKER.clear()
    report = run_apply(tmp_path / "in", recipe=str(recipe), output_folder=str(tmp_path / "out"),
                       functions={"touch": touch})
    assert MARKER == ["ran"]
    assert manifest_rows(report.manifest)[0][2] == "written"

"""Fixtures of the differential suite: input files, and a runner that applies one recipe with
deid 0.4.13 and with deid_batch and returns both written files and their differences."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest

from .factories import make_dicom_file
from .harness import (
    SAMPLES,
    Case,
    Difference,
    OursRun,
    diff_files,
    engine_available,
    recipe_text,
    run_deid,
    run_ours,
    with_tempdir,
)

#: ``DEID_DIFF_SELF_CHECK=1`` replaces deid_batch by a second deid run: every comparison must then
#: pass, which checks the harness and the cases themselves (deviation tests fail, as they should).
SELF_CHECK = os.environ.get("DEID_DIFF_SELF_CHECK") == "1"


@pytest.fixture(autouse=True)
def _deid_tempdir(tmp_path: Path) -> Iterator[None]:
    """deid creates temp folders through ``tempfile``; keep them inside the test's tmp_path."""
    undo = with_tempdir(tmp_path / "tempfile")
    yield
    undo()


@pytest.fixture
def generated_file(tmp_path: Path) -> Callable[..., Path]:
    """Factory: the representative DICOM file (``factories.build_dataset``), optionally edited.

    ``generated_file(edit=lambda ds: ..., implicit=False, name="input.dcm")`` writes a new file
    in its own folder under ``tmp_path`` and returns its path.
    """
    counter = itertools.count()

    def make(
        edit: Callable[[Any], object] | None = None, *, implicit: bool = False,
        name: str = "input.dcm",
    ) -> Path:
        return make_dicom_file(tmp_path / "inputs" / str(next(counter)) / name, edit,
                               implicit=implicit)

    return make


@pytest.fixture
def write_recipe(tmp_path: Path) -> Callable[[str], Path]:
    """Factory: write a recipe (``harness.recipe_text`` of the body) and return its path."""
    counter = itertools.count()

    def write(body: str, *, raw: bool = False) -> Path:
        folder = tmp_path / "recipes" / str(next(counter))
        folder.mkdir(parents=True)
        path = folder / "deid.recipe"
        path.write_text(body if raw else recipe_text(body), encoding="utf-8")
        return path

    return write


@dataclass
class Comparison:
    """Both tools' outputs for one input and recipe."""

    source: Path
    baseline: Path  # the input re-saved by pydicom, for "did deid change anything" checks
    deid: Path
    ours: OursRun

    @property
    def diffs(self) -> list[Difference]:
        return diff_files(self.deid, self.ours.path)

    def deid_changes(self) -> list[Difference]:
        return diff_files(self.baseline, self.deid)

    def ours_changes(self) -> list[Difference]:
        return diff_files(self.baseline, self.ours.path)


@pytest.fixture
def run_both(
    tmp_path: Path, generated_file: Callable[..., Path], write_recipe: Callable[[str], Path]
) -> Callable[..., Comparison]:
    """Factory: run one recipe with deid and with deid_batch on one input.

    ``run_both(recipe, source="generated", variables={}, functions={}, remove_private=False,
    disable_skip=False, functions_via="functions", base=False)``. ``recipe`` is a recipe body
    (see ``harness.recipe_text``), a path, ``"bundled:<tag>"`` or a list of paths/tags;
    ``source`` is ``"generated"``, a sample
    name (``harness.SAMPLES``) or a path. deid receives variables and functions together in
    ``ids``; deid_batch receives them as ``variables=``/``functions=`` (or all as variables with
    ``functions_via="variables"``). With ``remove_private=True`` deid's output is stripped of
    private tags afterwards, the oracle for ours. The deid side always runs; the test is skipped
    after it when the engine is not importable yet.
    """
    counter = itertools.count()

    def run(
        recipe: str | Path,
        source: str | Path = "generated",
        *,
        variables: Mapping[str, Any] | None = None,
        functions: Mapping[str, Callable[..., Any]] | None = None,
        remove_private: bool = False,
        disable_skip: bool = False,
        functions_via: str = "functions",
        base: bool = False,
    ) -> Comparison:
        n = next(counter)
        if isinstance(source, Path):
            src = source
        elif source == "generated":
            src = generated_file()
        else:
            src = SAMPLES[source]
        recipe_ref: Path | str | list[Path | str]
        if isinstance(recipe, str) and recipe.startswith("bundled:"):
            recipe_ref = recipe.removeprefix("bundled:")
        elif isinstance(recipe, Path | list):
            recipe_ref = recipe
        else:
            recipe_ref = write_recipe(recipe)
        variables = dict(variables or {})
        functions = dict(functions or {})
        baseline = tmp_path / "baseline" / str(n) / src.name
        baseline.parent.mkdir(parents=True)
        plain = pydicom.dcmread(src, force=True)
        for _ in plain.iterall():  # decode every element, as both tools do, so padding and
            pass                   # re-encoding are the same as in their outputs
        plain.save_as(baseline)
        deid_out = run_deid(src, recipe_ref, tmp_path / "deid" / str(n), base=base,
                            ids={**variables, **functions},
                            remove_private_after=remove_private, disable_skip=disable_skip)
        if SELF_CHECK:  # harness self-check: "ours" is a second deid run
            again = run_deid(src, recipe_ref, tmp_path / "ours" / str(n), base=base,
                             ids={**variables, **functions},
                             remove_private_after=remove_private, disable_skip=disable_skip)
            return Comparison(src, baseline, deid_out, OursRun(again, []))
        if not engine_available():
            pytest.skip("deid_batch.recipe.engine is not importable yet (deid side ran)")
        if functions_via == "variables":
            variables, functions = {**variables, **functions}, {}
        ours = run_ours(src, recipe_ref, tmp_path / "ours" / str(n), base=base,
                        variables=variables,
                        functions=functions, remove_private=remove_private,
                        disable_skip=disable_skip)
        return Comparison(src, baseline, deid_out, ours)

    return run


@pytest.fixture
def run_case(run_both: Callable[..., Comparison]) -> Callable[[Case], Comparison]:
    """Run a golden :class:`~.harness.Case` with both tools."""

    def run(case: Case, *, remove_private: bool = False) -> Comparison:
        return run_both(case.recipe, case.source, variables=case.variables,
                        functions=case.functions, disable_skip=case.disable_skip,
                        remove_private=remove_private)

    return run


#: Identifying values of the generated file and the samples; no warning may contain them.
PHI_VALUES = ("SIMPSON", "HIBBARD", "PID-12345", "ACC0001", "19700215", "MÜLLER", "OTHER-0",
              "SMITH^ANNA", "HOSPITAL A", "General Hospital")


def assert_same_output(result: Comparison, case: Case | None = None) -> None:
    """deid_batch wrote the same header as deid (and the case did change something), and its
    warnings show no header value."""
    if case is None or case.changes:
        assert result.deid_changes(), "deid changed nothing: the case selects nothing"
    else:
        assert result.deid_changes() == []
    assert result.diffs == []
    leaks = [w for w in result.ours.warnings if any(v.lower() in w.lower() for v in PHI_VALUES)]
    assert leaks == [], "a warning shows a header value"

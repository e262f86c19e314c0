"""Many files: the whole product (``deid_batch.replace_identifiers``, synchronous scheduler)
against deid on a folder of files - every output equals deid's, once deid's file is given the two
changes our writer makes on purpose (zeroed preamble; the file meta rebuilt complete, with our
ImplementationClassUID) - and one compiled recipe applied to many
datasets in turn, in both orders, with nothing leaking from one dataset into the next."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from .harness import SAMPLES, diff_files, run_deid


def as_our_writer_writes(deid_output: Path, target: Path, output_name: str, source: Path) -> Path:
    """deid's file with our writer's documented changes: zeroed preamble and the rebuilt file meta
    (README Deviations 7; its rules are tested in ``tests/test_real_files.py``), made by the
    writer itself so that only the data set is compared with deid's."""
    from deid_batch.dicom.reading import sop_class_of
    from deid_batch.dicom.writing import encode

    ds = pydicom.dcmread(deid_output, force=True)
    sop_class = sop_class_of(pydicom.dcmread(source, force=True))  # the input's, as apply passes it
    target.write_bytes(encode(ds, sop_class=sop_class, instance_seed=output_name))
    return target


@pytest.mark.parametrize("remove_private", [False, True])
@pytest.mark.parametrize("recipe_body", [
    "bundled:dicom",
    "REPLACE PatientName ANON\nJITTER endswith:Date 3\nREMOVE contains:Physician",
    "KEEP PatientSex\nREMOVE ALL",
], ids=["default-recipe", "mixed", "remove-all"])
def test_the_batch_api_writes_deids_output_up_to_the_writers_documented_changes(
    recipe_body: str, remove_private: bool, tmp_path: Path,
    generated_file: Callable[..., Path], write_recipe: Callable[..., Path],
) -> None:
    api = pytest.importorskip("deid_batch.api")
    inputs = tmp_path / "archive"
    inputs.mkdir()
    sources = [generated_file()]
    for name in ("ctbrain1", "ctbrain2", "cookie2"):
        sources.append(Path(shutil.copy(SAMPLES[name], inputs / f"{name}.dcm")))
    recipe: Path | str = (recipe_body.removeprefix("bundled:") if recipe_body.startswith("bundled:")
                          else write_recipe(recipe_body))
    outputs = api.replace_identifiers([str(s) for s in sources], recipe=str(recipe), base=None,
                                      output_folder=str(tmp_path / "ours"),
                                      remove_private=remove_private, client="sync")
    assert len(outputs) == len(sources)
    for i, (source, ours) in enumerate(zip(sources, outputs)):
        deid_out = run_deid(source, recipe, tmp_path / "deid" / str(i),
                            remove_private_after=remove_private)
        expected = as_our_writer_writes(deid_out, tmp_path / f"expected-{i}.dcm", Path(ours).name,
                                        source)
        assert diff_files(expected, Path(ours)) == [], source.name




def test_one_compiled_recipe_applied_to_many_datasets_gives_each_file_deids_output(
    tmp_path: Path, generated_file: Callable[..., Path], write_recipe: Callable[..., Path],
) -> None:
    recipe = write_recipe("""
        FORMAT dicom
        %values ids
        FIELD PatientID
        SPLIT PatientName by="^";minlength=4
        %fields people
        FIELD select:VR:PN
        %header
        REMOVE values:ids
        REPLACE fields:people ANON
        JITTER StudyDate var:days
        ADD PatientIdentityRemoved YES
        """)
    sources = [generated_file(lambda ds, i=i: setattr(ds, "PatientID", f"PATIENT-{i}"),
                              name=f"in{i}.dcm") for i in range(3)]
    sources += [SAMPLES["ctbrain1"], SAMPLES["ctbrain2"]]
    variables = [{"days": d} for d in (1, -5, 30, 2, 9)]
    expected = [run_deid(s, recipe, tmp_path / "deid" / str(i), ids=v)
                for i, (s, v) in enumerate(zip(sources, variables))]
    engine = pytest.importorskip("deid_batch.recipe.engine")
    from deid_batch.recipe.parse import load_recipe

    compiled = load_recipe(str(recipe), base=None)
    options = engine.EngineOptions(remove_private=False)
    for order in (range(5), reversed(range(5))):
        for i in order:
            result = engine.deidentify_dataset(pydicom.dcmread(sources[i]), recipe=compiled,
                                               variables=variables[i], options=options,
                                               source=str(sources[i]))
            written = tmp_path / "ours" / f"{i}.dcm"
            written.parent.mkdir(exist_ok=True)
            result.dataset.save_as(written)
            assert diff_files(expected[i], written) == [], sources[i].name

"""deid's ``config.json`` (skip list and "put" actions) against ``EngineOptions(skip=...,
put_actions=...)``: the same configuration gives the same file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from .harness import diff_files

DEFAULT_SKIP = ["PixelData", "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData",
                "BluePaletteColorLookupTableData", "VOILUTSequence",
                "FileMetaInformationGroupLength", "FileMetaInformationVersion",
                "TransferSyntaxUID", "ImplementationClassUID"]

CONFIGS = [
    # (id, recipe body, skip list, put actions as (action, field, value))
    ("put-add-overrides-recipe", "ADD PatientIdentityRemoved YES",
     DEFAULT_SKIP, [("ADD", "PatientIdentityRemoved", "FROMCONFIG")]),
    ("put-remove-and-replace", "REMOVE StudyID",
     DEFAULT_SKIP, [("REPLACE", "PatientName", "CONFIG^NAME"), ("REMOVE", "contains:Time", None),
                    ("KEEP", "PixelData", None)]),
    ("skip-without-file-meta", "REMOVE ALL", ["PixelData"], [("KEEP", "PixelData", None)]),
    ("skip-a-keyword-and-a-tag", "REMOVE ALL", DEFAULT_SKIP + ["PatientName", "(0010,0020)"],
     []),
    ("skip-a-sequence", "REMOVE contains:UID", DEFAULT_SKIP + ["RequestAttributesSequence"], []),
]


@pytest.mark.parametrize("case_id, body, skip, put", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_a_custom_config_gives_the_same_file_as_deid(
    case_id: str, body: str, skip: list[str], put: list[tuple[str, str, str | None]],
    tmp_path: Path, generated_file: Callable[..., Path], write_recipe: Callable[..., Path],
) -> None:
    from deid.config import DeidRecipe
    from deid.dicom import replace_identifiers
    from deid.dicom.fields import _get_fields_inner

    source, recipe = generated_file(), write_recipe(body)
    config = tmp_path / "config.json"
    actions = [{"action": a, "field": f, **({"value": v} if v is not None else {})}
               for a, f, v in put]
    config.write_text(json.dumps({"get": {"skip": skip, "ids": {}}, "put": {"actions": actions}}))
    (tmp_path / "deid").mkdir()
    [deid_out] = replace_identifiers([str(source)], deid=DeidRecipe(str(recipe), base=False),
                                     ids={os.path.abspath(source): {}}, save=True,
                                     output_folder=str(tmp_path / "deid"), config=str(config))
    _get_fields_inner.cache_clear()

    engine = pytest.importorskip("deid_batch.recipe.engine")
    from deid_batch.recipe.parse import RecipeAction, load_recipe

    options = engine.EngineOptions(
        remove_private=False, skip=tuple(skip),
        put_actions=tuple(RecipeAction(a, f, v, str(config), 0) for a, f, v in put))
    result = engine.deidentify_dataset(pydicom.dcmread(source), recipe=load_recipe(str(recipe), base=None),
                                       options=options, source=str(source))
    ours = tmp_path / "ours.dcm"
    result.dataset.save_as(ours)
    assert diff_files(Path(deid_out), ours) == []


def test_the_default_options_are_deids_default_config() -> None:
    from deid.dicom.parser import here
    from deid.utils import read_json

    config = read_json(os.path.join(here, "config.json"))
    engine = pytest.importorskip("deid_batch.recipe.engine")
    options = engine.EngineOptions()
    assert list(options.skip) == config["get"]["skip"]
    assert [(a.action, a.field, a.value) for a in options.put_actions] == [
        (a["action"], a["field"], a.get("value")) for a in config["put"]["actions"]]
    assert options.disable_skip is False

"""Every file in configs/ loads with the tool that uses it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deid_batch.recipe.parse import load_recipe
from deid_batch.stages.mapping import join_variables, load_mapping

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
FILES = sorted(p for p in CONFIGS.iterdir() if p.is_file())


def test_configs_folder_is_not_empty():
    kinds = {p.suffix for p in FILES}
    assert {".csv", ".yaml"} <= kinds
    assert any(p.name.startswith("deid.") for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_config_file_loads(path):
    if path.name.startswith("deid."):
        recipe = load_recipe(str(path))
        assert recipe.header
    elif path.suffix == ".csv":
        import pyarrow as pa

        mapping = load_mapping(str(path))
        keys = pa.table({"source": ["/x"], "entity_id": ["H4821937"], "item_id": ["1.2"]})
        assert join_variables(keys, mapping, "PatientID", "SOPInstanceUID").variables
    elif path.suffix == ".yaml":
        import dask.config

        data = yaml.safe_load(path.read_text())
        assert isinstance(data, dict) and data
        dask.config.update({}, data)
    else:
        pytest.fail(f"no test knows how to load {path.name}; add one")


def test_remove_everything_recipe_in_configs_equals_the_builtin_default():
    builtin = load_recipe(None)
    shipped = load_recipe(str(CONFIGS / "deid.remove-everything"))
    assert [(a.action, a.field, a.value) for a in shipped.header] == [
        (a.action, a.field, a.value) for a in builtin.header]

"""deid's three bundled recipes on deid-data's sample files and on generated files.

Each bundled recipe is parsed once per session on the deid side (``bundled_deid_recipe``) and
loaded by name on ours. Outputs are compared with private tags kept (``remove_private=False``) and
with our default (``remove_private=True``, oracle: deid's output, then ``remove_private_tags()``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import Comparison, assert_same_output
from .harness import BUNDLED

SOURCES = ["generated", "generated-implicit", "ctbrain1", "ctbrain2", "cat", "us-greyscale",
           "us-rgb"] + [f"cookie{i}" for i in range(1, 8)]


def resolve(source: str, generated_file: Callable[..., Path]) -> str | Path:
    return generated_file(implicit=True) if source == "generated-implicit" else source


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("recipe", BUNDLED)
def test_bundled_recipe_gives_the_same_output_as_deid(
    recipe: str, source: str, run_both: Callable[..., Comparison],
    generated_file: Callable[..., Path],
) -> None:
    result = run_both(f"bundled:{recipe}", resolve(source, generated_file))
    if recipe == "dicom.xray.chest":  # filters only, no header actions
        assert result.deid_changes() == []
        assert result.diffs == []
    else:
        assert_same_output(result)


@pytest.mark.parametrize("source", ["generated", "ctbrain2", "cat", "cookie1"])
@pytest.mark.parametrize("recipe", BUNDLED)
def test_bundled_recipe_with_private_tags_removed_matches_deid_then_strip(
    recipe: str, source: str, run_both: Callable[..., Comparison]
) -> None:
    result = run_both(f"bundled:{recipe}", source, remove_private=True)
    assert result.diffs == []


def test_default_recipe_on_the_43_mb_ultrasound_multiframe_matches_deid(
    run_both: Callable[..., Comparison],
) -> None:
    assert_same_output(run_both("bundled:dicom.ultrasound", "us-multiframe"))

"""The 6x6 action interaction matrix (spec section 4.9): both tools give the table's values.

Each cell is a two-line recipe acting on StudyDate (originally ``20230101``) - the row action
first, the column action second. ``ABSENT`` means the element was removed. The table is the one
verified against deid 0.4.13 on ctbrain1; it is replayed on ctbrain1 and on the generated file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from .conftest import Comparison

ABSENT = "absent"
LINES = {
    "ADD": "ADD StudyDate 20221128",
    "REPLACE": "REPLACE StudyDate 20221129",
    "JITTER": "JITTER StudyDate 5",
    "BLANK": "BLANK StudyDate",
    "KEEP": "KEEP StudyDate",
    "REMOVE": "REMOVE StudyDate",
}
COLUMNS = ("ADD", "REPLACE", "JITTER", "BLANK", "KEEP", "REMOVE")
MATRIX = {
    "ADD": ("20221128", "20221129", "20221203", "", "20221128", ABSENT),
    "REPLACE": ("20221128", "20221129", "20221204", "", "20230101", "20221129"),
    "JITTER": ("20221128", "20221129", "20230111", "", "20230101", "20230106"),
    "BLANK": ("20221128", "20221129", "", "", "20230101", ABSENT),
    "KEEP": ("20221128", "20230101", "20230101", "20230101", "20230101", "20230101"),
    "REMOVE": ("20221128", "20221129", "20230106", ABSENT, "20230101", ABSENT),
}
CELLS = [
    pytest.param(first, second, MATRIX[first][j], id=f"{first}-then-{second}")
    for first in MATRIX
    for j, second in enumerate(COLUMNS)
]


def study_date(path: Path) -> str:
    ds = pydicom.dcmread(path, force=True)
    return ABSENT if "StudyDate" not in ds else str(ds.StudyDate)


def test_the_matrix_has_36_cells() -> None:
    assert len(CELLS) == 36


@pytest.mark.parametrize("source", ["ctbrain1", "generated"])
@pytest.mark.parametrize("first, second, expected", CELLS)
def test_two_actions_on_one_field_give_the_table_value_in_both_tools(
    first: str, second: str, expected: str, source: str, run_both: Callable[..., Comparison]
) -> None:
    result = run_both(f"{LINES[first]}\n{LINES[second]}", source)
    assert study_date(result.deid) == expected
    assert study_date(result.ours.path) == expected
    assert result.diffs == []

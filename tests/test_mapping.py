"""The variable mapping: loading and the Arrow left outer join."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deid_batch.errors import MappingError
from deid_batch.stages.mapping import from_lookup, join_variables, load_mapping, mapping_digest

KEYS = pa.table({
    "source": ["/a/1.dcm", "/a/2.dcm", "/b/3.dcm", "/c/4.dcm"],
    "entity_id": ["P1", "P1", "P2", None],
    "item_id": ["1.1", "1.2", "2.1", "9.9"],
})


def _vars(result):
    return dict(zip(result.sources.to_pylist(), result.table.to_pylist()))


def test_item_level_rows_win_over_entity_level_rows():
    mapping = pa.table({"PatientID": ["P1", "P1", "P2"], "SOPInstanceUID": [None, "1.2", None],
                        "id": ["sub-1", "sub-1-item", "sub-2"]})
    got = _vars(join_variables(KEYS, mapping, "PatientID", "SOPInstanceUID"))
    assert got["/a/1.dcm"]["id"] == "sub-1"
    assert got["/a/2.dcm"]["id"] == "sub-1-item"
    assert got["/b/3.dcm"]["id"] == "sub-2"


def test_unmapped_files_are_kept_and_counted_in_input_order():
    mapping = pa.table({"PatientID": ["P2"], "id": ["sub-2"]})
    result = join_variables(KEYS, mapping, "PatientID", "SOPInstanceUID")
    assert result.sources.to_pylist() == KEYS.column("source").to_pylist()
    assert result.unused_rows == 0
    assert result.unmapped == 3
    assert result.variables == ("id",)


def test_duplicate_entity_key_is_a_mapping_error_without_the_value():
    mapping = pa.table({"PatientID": ["SECRET-P1", "SECRET-P1"], "id": ["x", "y"]})
    with pytest.raises(MappingError) as info:
        join_variables(KEYS, mapping, "PatientID", "SOPInstanceUID")
    assert "more than once" in str(info.value)
    assert "SECRET" not in str(info.value)


def test_duplicate_item_key_is_a_mapping_error():
    mapping = pa.table({"PatientID": ["P1", "P1"], "SOPInstanceUID": ["1.1", "1.1"], "id": ["x", "y"]})
    with pytest.raises(MappingError, match="more than once"):
        join_variables(KEYS, mapping, "PatientID", "SOPInstanceUID")


def test_mapping_without_key_column_names_the_expected_column():
    mapping = pa.table({"patient": ["P1"], "id": ["x"]})
    with pytest.raises(MappingError, match="'PatientID'"):
        join_variables(KEYS, mapping, "PatientID", "SOPInstanceUID")


def test_csv_and_parquet_and_dataframe_load_the_same(tmp_path):
    table = pa.table({"PatientID": ["P1", "P2"], "id": ["a", "b"]})
    csv = tmp_path / "m.csv"
    csv.write_text("PatientID,id\nP1,a\nP2,b\n")
    pq.write_table(table, tmp_path / "m.parquet")
    pd = pytest.importorskip("pandas")
    for source in (str(csv), tmp_path / "m.parquet", pd.DataFrame({"PatientID": ["P1", "P2"], "id": ["a", "b"]})):
        loaded = load_mapping(source)
        assert _vars(join_variables(KEYS, loaded, "PatientID", "SOPInstanceUID"))["/b/3.dcm"]["id"] == "b"


def test_missing_mapping_file_is_a_mapping_error(tmp_path):
    with pytest.raises(MappingError, match="does not exist"):
        load_mapping(tmp_path / "nope.csv")


def test_deid_lookup_dict_becomes_item_rows_and_functions():
    def shout(**kwargs):
        return "X"

    table, functions = from_lookup({"P1": {"1.1": {"id": "cookiemonster", "fn": shout}}},
                                   "PatientID", "SOPInstanceUID")
    assert functions == {"fn": shout}
    got = _vars(join_variables(KEYS, table, "PatientID", "SOPInstanceUID"))
    assert got["/a/1.dcm"]["id"] == "cookiemonster"
    assert got["/a/2.dcm"]["id"] is None


def test_mapping_digest_changes_with_content():
    a = pa.table({"PatientID": ["P1"], "id": ["a"]})
    b = pa.table({"PatientID": ["P1"], "id": ["b"]})
    assert mapping_digest(a) == mapping_digest(a)
    assert mapping_digest(a) != mapping_digest(b)
    assert mapping_digest(None) == "none"

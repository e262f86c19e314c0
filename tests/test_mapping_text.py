"""Issue 8.1/8.2/8.7 and 9.4: mapping cells are text, variable names belong to the user, deid's
functions-only ``ids``, and mapping diagnostics."""

from __future__ import annotations

import csv
import io

import pandas as pd
import pyarrow as pa
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deid_batch.api import run_apply
from deid_batch.errors import MappingError
from deid_batch.recipe import load_recipe
from deid_batch.stages.mapping import join_variables, load_mapping


def _keys(*rows):
    return pa.table({"source": [r[0] for r in rows], "entity_id": [r[1] for r in rows],
                     "item_id": [r[2] for r in rows]})


def _vars(result):
    return dict(result.per_source())


def _spreadsheet_csv(rows, delimiter=","):
    """A CSV the way spreadsheets write it: csv.writer quoting, CRLF line ends."""
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return buf.getvalue()


# ------------------------------------------------------------------------------ 8.1: cells are text
def test_leading_zeros_and_numeric_looking_cells_stay_text(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(_spreadsheet_csv([["PatientID", "AccessionNumber", "StudyDate", "id"],
                                      ["00012345", "00777", "20000101", "0042"]]))
    mapping = load_mapping(path)
    assert all(mapping.schema.field(n).type == pa.string() for n in mapping.column_names)
    got = _vars(join_variables(_keys(("/a", "00012345", "1.2")), mapping, "PatientID", "SOPInstanceUID"))
    assert got["/a"] == {"AccessionNumber": "00777", "StudyDate": "20000101", "id": "0042"}


cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r\n"),
               min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=cell, value=st.one_of(cell, st.from_regex(r"0[0-9]{1,8}", fullmatch=True),
                                 st.sampled_from(["NA", "null", "N/A", "nan", "TRUE", "1e5", " a b ", '"q"', "a,b"])))
def test_any_cell_round_trips_exactly_as_written(tmp_path, key, value):
    path = tmp_path / "m.csv"
    path.write_text(_spreadsheet_csv([["PatientID", "v"], [key, value]]), encoding="utf-8")
    got = _vars(join_variables(_keys(("/a", key, "1")), load_mapping(path), "PatientID", "SOPInstanceUID"))
    assert got["/a"] == {"v": value}


def test_an_empty_cell_is_not_provided(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("PatientID,id,other\nP1,,x\n")
    got = _vars(join_variables(_keys(("/a", "P1", "1")), load_mapping(path), "PatientID", "SOPInstanceUID"))
    assert got["/a"] == {"other": "x"}


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolon_and_tab_separated_files_are_recognised(tmp_path, delimiter):
    path = tmp_path / "m.csv"
    path.write_text(_spreadsheet_csv([["PatientID", "id"], ["007", "S1"]], delimiter))
    got = _vars(join_variables(_keys(("/a", "007", "1")), load_mapping(path), "PatientID", "SOPInstanceUID"))
    assert got["/a"] == {"id": "S1"}


def test_a_byte_order_mark_and_unicode_are_read(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes("PatientID,name\nP1,Müller^Zoë 山田\n".encode("utf-8-sig"))
    got = _vars(join_variables(_keys(("/a", "P1", "1")), load_mapping(path), "PatientID", "SOPInstanceUID"))
    assert got["/a"] == {"name": "Müller^Zoë 山田"}


def test_a_non_utf8_file_gets_a_clear_error(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes("PatientID,name\nP1,M\xfcller\n".encode("cp1252"))
    with pytest.raises(MappingError, match="not UTF-8"):
        load_mapping(path)


def test_typed_tables_integers_become_decimal_text_floats_are_refused():
    table = pa.table({"PatientID": pa.array([12345], pa.int64()), "n": pa.array([7], pa.int32())})
    got = _vars(join_variables(_keys(("/a", "12345", "1")), load_mapping(table), "PatientID", "SOPInstanceUID"))
    assert got["/a"] == {"n": "7"}
    with pytest.raises(MappingError, match="'weight'.*double"):
        load_mapping(pd.DataFrame({"PatientID": ["P1"], "weight": [70.5]}))
    with pytest.raises(MappingError, match="'PatientID'"):
        load_mapping(pd.DataFrame({"PatientID": [1.0, None], "v": ["a", "b"]}))


def _patient_ids(archive):
    return sorted({pydicom.dcmread(p, stop_before_pixels=True).PatientID for p in archive.rglob("*") if p.is_file()})


def _apply_with(archive, tmp_path, key_file, csv_text, recipe_lines):
    path = tmp_path / "m.csv"
    path.write_text(csv_text)
    recipe = tmp_path / "r"
    recipe.write_text("FORMAT dicom\n%header\n" + "".join(line + "\n" for line in recipe_lines))
    return run_apply(str(archive), recipe=str(recipe), variables=str(path), client="sync",
                     output_folder=str(tmp_path / "out"), key_file=key_file)


def test_a_numeric_looking_value_is_written_not_a_write_error(small_archive, tmp_path, key_file):
    pids = _patient_ids(small_archive)
    report = _apply_with(small_archive, tmp_path, key_file,
                         "PatientID,acc,pid\n" + "".join(f"{p},00777,000{i}\n" for i, p in enumerate(pids)),
                         ["REPLACE AccessionNumber var:acc", "REPLACE PatientID var:pid"])
    assert report.summary.by_status == {"written": 24}
    for out in report.outputs:
        ds = pydicom.dcmread(out)
        assert ds.AccessionNumber == "00777" and ds.PatientID.startswith("000")


# --------------------------------------------------------------------- 8.2: names belong to the user
def _bundled_variable_names():
    names = set()
    for name in ("dicom", "dicom.ultrasound", "dicom.xray.chest", "remove-everything"):
        for action in load_recipe(name, base=None).header:
            if action.value and action.value.startswith("var:"):
                names.add(action.value[4:])
    return names


INTERNAL = {"source", "entity_id", "item_id", "__entity", "__item", "__row", "__hit", "__hit_e", "__hit_i",
            "id__i", "id__e", "partition", "status", "output", "reason", "warnings", "fields"}


@pytest.mark.parametrize("variable", sorted(_bundled_variable_names() | INTERNAL))
def test_no_variable_name_is_shadowed_by_an_internal_name(variable):
    assert {"entity_id", "item_id", "entity_timestamp", "item_timestamp"} <= _bundled_variable_names()
    keys = _keys(("/a", "MRN777", "1.1"), ("/b", "MRN888", "2.2"))
    entity_level = pa.table({"PatientID": ["MRN777", "MRN888"], variable: ["SUBJ2", "SUBJ3"]})
    assert _vars(join_variables(keys, entity_level, "PatientID", "SOPInstanceUID")) == {
        "/a": {variable: "SUBJ2"}, "/b": {variable: "SUBJ3"}}
    item_level = pa.table({"PatientID": ["MRN777", "MRN888"], "SOPInstanceUID": ["1.1", None],
                           variable: ["ITEM", "SUBJ3"]})
    assert _vars(join_variables(keys, item_level, "PatientID", "SOPInstanceUID")) == {
        "/a": {variable: "ITEM"}, "/b": {variable: "SUBJ3"}}


def test_the_issue_reproduction_entity_id_replaces_patient_id(small_archive, tmp_path, key_file):
    pids = _patient_ids(small_archive)
    report = _apply_with(small_archive, tmp_path, key_file,
                         "PatientID,entity_id\n" + "".join(f"{p},SUBJ{i}\n" for i, p in enumerate(pids)),
                         ["REPLACE PatientID var:entity_id"])
    new = {pydicom.dcmread(o).PatientID for o in report.outputs}
    assert new == {f"SUBJ{i}" for i in range(len(pids))}
    assert not new & set(pids)


# ---------------------------------------------------------------------------- 8.7: deid's func: form
def test_an_ids_dict_holding_only_functions_is_accepted(small_archive, tmp_path, key_file):
    from deid_batch import as_lookup, get_identifiers, replace_identifiers

    def new_id(item, value, field, dicom):
        return "FROM-FUNC"

    ids = as_lookup(get_identifiers(small_archive))
    only_functions = {e: {i: {"new_id": new_id} for i in items} for e, items in ids.items()}
    recipe = tmp_path / "r"
    recipe.write_text("FORMAT dicom\n%header\nREPLACE PatientID func:new_id\n")
    outputs = replace_identifiers(str(small_archive), recipe=str(recipe), ids=only_functions,
                                  output_folder=str(tmp_path / "out"), key_file=key_file)
    assert len(outputs) == 24
    assert {pydicom.dcmread(o).PatientID for o in outputs} == {"FROM-FUNC"}


# ------------------------------------------------------------------------------ 9.4: diagnostics
def test_duplicate_keys_name_the_rows_not_the_values(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("PatientID,id\nSECRET1,a\nP2,b\nSECRET1,c\n")
    with pytest.raises(MappingError) as info:
        join_variables(_keys(("/a", "x", "1")), load_mapping(path), "PatientID", "SOPInstanceUID")
    assert "rows 2, 4" in str(info.value) and "SECRET1" not in str(info.value)


def test_a_missing_key_column_says_how_to_name_it(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("MRN,id\nP1,a\n")
    with pytest.raises(MappingError) as info:
        join_variables(_keys(("/a", "P1", "1")), load_mapping(path), "PatientID", "SOPInstanceUID")
    assert "'MRN'" in str(info.value) and "--entity-id" in str(info.value)


def test_rows_matching_no_file_are_counted():
    mapping = pa.table({"PatientID": ["P1", "GHOST", "P2"], "id": ["a", "b", "c"]})
    result = join_variables(_keys(("/a", "P1", "1"), ("/b", "P3", "2")), mapping, "PatientID", "SOPInstanceUID")
    assert result.unused_rows == 2 and result.unmapped == 1


def test_an_identifiers_table_of_another_archive_is_refused(small_archive, tmp_path, key_file):
    from deid_batch import get_identifiers
    from deid_batch.errors import ConfigError
    from deid_batch.synth import generate_archive

    other = tmp_path / "other"
    generate_archive(str(other), n_files=3, seed=9)
    ids = tmp_path / "other.parquet"
    import pyarrow.parquet as pq

    pq.write_table(get_identifiers(str(other)), ids)
    mapping = tmp_path / "m.csv"
    mapping.write_text("PatientID,id\nP1,a\n")
    with pytest.raises(ConfigError, match="holds none of the 24 input files"):
        run_apply(str(small_archive), ids=str(ids), variables=str(mapping), client="sync",
                  output_folder=str(tmp_path / "out"), key_file=key_file)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.manifest").exists()

"""Suspect values get a warning, not silence (issue 9, item 5): a REPLACE/ADD value invalid for
its VR is written as deid writes it, with a warning naming the element (never the value); outputs
that end with the same SOPInstanceUID are reported at the end of the run."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil

import pyarrow as pa
import pyarrow.csv as pacsv
import pydicom
import pytest

from deid_batch import get_identifiers, read_manifest, replace_identifiers
from deid_batch.cli import main

DOCS_RECIPE = """FORMAT dicom

%header

ADD PatientIdentityRemoved YES
REPLACE PatientID var:id
REPLACE SOPInstanceUID var:source_id
ADD StudyDate var:study_date
"""


@pytest.fixture
def one_file(small_archive, tmp_path):
    source = next(small_archive.rglob("*.dcm"))
    (tmp_path / "in").mkdir()
    return shutil.copy(source, tmp_path / "in" / "IM0001.dcm")


def _deid_output(path: str, recipe: str, variables: dict[str, str], folder) -> pydicom.Dataset:
    """deid 0.4.13's own replace_identifiers on one file (the oracle)."""
    dicom = pytest.importorskip("deid.dicom")
    folder.mkdir()
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            (out,) = dicom.replace_identifiers([path], deid=recipe, ids={path: dict(variables)}, save=True,
                                               output_folder=str(folder), overwrite=True)
    finally:
        logging.disable(logging.NOTSET)
    return pydicom.dcmread(out)


def test_a_value_invalid_for_its_vr_is_written_as_deid_does_with_a_warning_naming_the_element(
        one_file, tmp_path, key_file):
    recipe = tmp_path / "deid.docs"
    recipe.write_text(DOCS_RECIPE)
    variables = {"id": "cookiemonster", "source_id": "cookiemonster-image-4", "study_date": "2020"}
    theirs = _deid_output(str(one_file), str(recipe), variables, tmp_path / "deid-out")
    ids = get_identifiers(str(tmp_path / "in"))
    lookup = {r["entity_id"]: {r["item_id"]: dict(variables)} for r in ids.to_pylist()}
    (output,) = replace_identifiers(str(tmp_path / "in"), deid=str(recipe), ids=lookup,
                                    output_folder=str(tmp_path / "out"), remove_private=False,
                                    key_file=key_file)
    ours = pydicom.dcmread(output)
    for keyword in ("SOPInstanceUID", "PatientID", "StudyDate"):
        assert ours[keyword].value == theirs[keyword].value, keyword
    assert ours.SOPInstanceUID == "cookiemonster-image-4"

    (row,) = read_manifest(str(tmp_path / "out.manifest")).to_pylist()
    warnings = row["warnings"]
    assert any("REPLACE SOPInstanceUID" in w and "SOPInstanceUID (UI) is not valid" in w for w in warnings)
    assert any("ADD StudyDate" in w and "StudyDate (DA) is not valid" in w for w in warnings)
    assert not any("PatientID" in w for w in warnings)  # cookiemonster is a valid LO
    assert not any(v in w for w in warnings for v in variables.values())  # never the value
    assert row["sop_instance_uid"] == "cookiemonster-image-4"


def _mapping(archive, path, uid_of) -> None:
    keys = get_identifiers(str(archive)).select(["entity_id", "item_id"])
    items = keys.column("item_id").to_pylist()
    pacsv.write_csv(pa.table({"PatientID": keys.column("entity_id"), "SOPInstanceUID": items,
                              "source_id": [uid_of(i, item) for i, item in enumerate(items)]}), path)


def test_outputs_that_end_with_the_same_sop_instance_uid_are_reported_at_the_end(
        small_archive, tmp_path, key_file, capsys):
    recipe = tmp_path / "deid.uids"
    recipe.write_text("FORMAT dicom\n%header\nREPLACE SOPInstanceUID var:source_id\n")
    mapping = tmp_path / "mapping.csv"
    _mapping(small_archive, mapping, lambda i, _item: f"2.25.{1000 + i % 12}")  # 24 files, 12 UIDs
    out = tmp_path / "out"
    assert main(["apply", str(small_archive), "--out", str(out), "--recipe", str(recipe), "--vars",
                 str(mapping), "--workers", "0", "--no-progress", "--key-file", key_file]) == 0
    captured = capsys.readouterr()
    assert "same SOPInstanceUID: 24 outputs share 12 UIDs" in captured.out
    assert "2.25.10" not in captured.out + captured.err  # counts, never the UIDs
    uids = read_manifest(str(out) + ".manifest").column("sop_instance_uid").to_pylist()
    assert len(uids) == 24 and len(set(uids)) == 12


def test_a_run_with_distinct_uids_reports_no_sharing(small_archive, tmp_path, key_file, capsys):
    out = tmp_path / "out"
    assert main(["apply", str(small_archive), "--out", str(out), "--workers", "0", "--no-progress",
                 "--key-file", key_file]) == 0
    assert "same SOPInstanceUID" not in capsys.readouterr().out
    uids = read_manifest(str(out) + ".manifest").column("sop_instance_uid").to_pylist()
    assert None not in uids and len(set(uids)) == 24

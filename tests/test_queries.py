"""Issue 12.4: the identifiers table and the manifest are tables duckdb reads directly; the README's
queries run as written."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pydicom
import pytest

from deid_batch.cli import main
from deid_batch.schemas import QUERY_COLUMNS

README = Path(__file__).parent.parent / "README.md"


def _readme_queries() -> list[str]:
    text = README.read_text()
    block = text.split("<!-- queries -->", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    return [q.strip() for q in block.split(";") if q.strip()]


@pytest.fixture(scope="module")
def run(tmp_path_factory, small_archive):
    root = tmp_path_factory.mktemp("q")
    ids = root / "ids.parquet"
    assert main(["scan", str(small_archive), "--ids", str(ids), "--workers", "0", "--no-progress"]) == 0
    pids = sorted(set(pq.read_table(ids, columns=["PatientID"]).column("PatientID").to_pylist()))
    mapping = root / "mapping.csv"
    mapping.write_text("PatientID,id\n" + f"{pids[0]},SUBJ-1\n")
    (root / "junk.dcm").write_bytes(b"not a dicom file at all")
    out = root / "out"
    main(["apply", str(small_archive), str(root / "junk.dcm"), "--out", str(out), "--vars", str(mapping),
          "--ids", str(ids), "--workers", "0", "--no-progress"])
    return root, ids, pids


def test_key_fields_are_columns_named_by_keyword(run, small_archive):
    _root, ids, _pids = run
    table = pq.read_table(ids)
    for name in QUERY_COLUMNS:
        assert name in table.column_names
    row = table.to_pylist()[0]
    ds = pydicom.dcmread(row["source"], stop_before_pixels=True)
    assert row["PatientID"] == ds.PatientID and row["StudyInstanceUID"] == ds.StudyInstanceUID
    assert row["Modality"] == ds.Modality and row["SOPInstanceUID"] == ds.SOPInstanceUID
    assert any(f["path"] == "PatientName" for f in row["fields"])  # the full element list stays


def test_the_readme_queries_run_with_duckdb(run, monkeypatch):
    root, _ids, pids = run
    monkeypatch.chdir(root)
    queries = _readme_queries()
    assert len(queries) == 5
    results = [duckdb.sql(q).fetchall() for q in queries]
    per_patient, failures, per_modality, outputs_by_study, unmapped = results
    assert sum(n for _p, n in per_patient) == 24 and {p for p, _n in per_patient} == set(pids)
    assert ("not-dicom", 1) in [(r, n) for r, n in failures]
    assert sum(n for _m, n in per_modality) >= 1
    assert len(outputs_by_study) == 24 and all(re.fullmatch(r".*/[0-9a-f]{32}\.dcm", o) for _s, o in outputs_by_study)
    assert {p for (p,) in unmapped} == set(pids[1:])

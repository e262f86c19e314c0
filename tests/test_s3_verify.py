"""verify and inspect on object storage (issue 12 leftover): OUTDIR, the identifiers table and
the manifest folder as s3:// URLs with --storage-options, against moto's S3 server on 127.0.0.1;
the linkage files of a keyed run are in the manifest prefix, not under OUTDIR."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest

from deid_batch import get_identifiers, read_manifest
from deid_batch.api import run_apply, run_verify
from deid_batch.cli import main
from tests.test_s3 import S3, bucket, fs, s3, s3_server, upload_archive  # noqa: F401 - fixtures

pytestmark = pytest.mark.s3


def test_verify_and_inspect_read_urls(s3: S3, bucket: str, tmp_path: Path,  # noqa: F811
                                      capsys: pytest.CaptureFixture[str]) -> None:
    inputs = upload_archive(s3, bucket, tmp_path / "pacs", 4)
    options = json.dumps(s3.options)
    ids = get_identifiers(f"s3://{bucket}/in", storage_options=s3.options)
    sink = io.BytesIO()
    pq.write_table(ids, sink)
    fs(s3).pipe_file(f"{bucket}/ids.parquet", sink.getvalue())
    out = f"s3://{bucket}/out"
    run_apply(f"s3://{bucket}/in", recipe="ps3.15-basic", output_folder=out, storage_options=s3.options)
    manifest = read_manifest(f"{out}.manifest", s3.options).to_pylist()
    written = [r for r in manifest if r["status"] == "written"]
    assert len(written) == 4
    assert fs(s3).exists(f"{bucket}/out.manifest/uid_mapping.csv")  # linkage: manifest prefix only
    assert not [k for k in fs(s3).find(f"{bucket}/out") if k.endswith(".csv")]

    report = run_verify(out, f"s3://{bucket}/ids.parquet", storage_options=s3.options)
    assert report.files == 4 and report.hits == [] and report.broken_references == []
    assert main(["verify", out, "--ids", f"s3://{bucket}/ids.parquet", "--storage-options", options,
                 "--workers", "0", "--no-progress"]) == 0
    assert "verify: 0 hit(s) in 0 of 4 file(s)" in capsys.readouterr().out

    # an output put back with its patient's original name is found, by URL and tag path
    leaky = written[0]
    key = leaky["output"].split("://", 1)[1]
    ds = pydicom.dcmread(io.BytesIO(fs(s3).cat_file(key)))
    ds.PatientName = pydicom.dcmread(io.BytesIO(fs(s3).cat_file(leaky["source"].split("://", 1)[1]))).PatientName
    buf = io.BytesIO()
    ds.save_as(buf)
    fs(s3).pipe_file(key, buf.getvalue())
    hits = run_verify(out, f"s3://{bucket}/ids.parquet", storage_options=s3.options).hits
    assert {(h.file, h.tag_path) for h in hits} == {(leaky["output"], "PatientName")}

    dicom = next(u for u in inputs if u.endswith(".dcm") and not u.endswith("empty.dcm"))
    assert main(["inspect", dicom, "--storage-options", options]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"# {dicom}") and "(0010,0020)" in printed

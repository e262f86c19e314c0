"""Object storage (issue 12.1): every path may be an ``s3://`` URL, against a real S3 server.

The server is moto's server mode (a real HTTP S3 endpoint on 127.0.0.1, started by the fixture);
the library reaches it the standard way: ``AWS_ENDPOINT_URL`` and the AWS credential variables
(what workers inherit), or ``storage_options`` / ``--storage-options``.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pydicom
import pytest

from deid_batch.api import get_identifiers, run_apply
from deid_batch.errors import ConfigError
from deid_batch.stages import storage
from deid_batch.stages.discover import discover
from deid_batch.stages.manifest import read_manifest
from deid_batch.synth import generate_archive

pytestmark = pytest.mark.s3

KEY = b"0123456789abcdef0123456789abcdef"
_LAYOUT = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{32}\.dcm$")


@dataclass(frozen=True)
class S3:
    endpoint: str

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint}

    @property
    def options(self) -> dict[str, Any]:
        """The same server given explicitly (what ``--storage-options`` carries)."""
        return {"key": "testing", "secret": "testing", "endpoint_url": self.endpoint}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield S3(f"http://{host}:{port}")
    server.stop()


@pytest.fixture
def s3(s3_server: S3, monkeypatch: pytest.MonkeyPatch) -> S3:
    """The server, with the AWS variables set (inherited by worker processes started in the test)."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return s3_server


def fs(s3: S3) -> Any:
    import s3fs

    return s3fs.S3FileSystem(**s3.options, use_listings_cache=False)


@pytest.fixture
def bucket(s3: S3) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    fs(s3).mkdir(name)
    return name


def upload_archive(s3: S3, bucket: str, local: Path, n: int, seed: int = 3) -> list[str]:
    """A generated archive under ``local``, uploaded to ``s3://bucket/in/``; returns the input URLs."""
    generate_archive(local, n, seed=seed, patients=3)
    (local / "notes.txt").write_text("not a DICOM file\n")
    (local / "empty.dcm").write_bytes(b"")
    fs(s3).put(str(local) + "/", f"{bucket}/in/", recursive=True)
    return sorted(f"s3://{k}" for k in fs(s3).find(f"{bucket}/in"))


def objects(s3: S3, prefix: str) -> dict[str, bytes]:
    """{key relative to prefix: content} of every object under ``s3://prefix``."""
    f = fs(s3)
    return {k[len(prefix) + 1:]: f.cat_file(k) for k in f.find(prefix)}


def digests(blobs: Any) -> list[str]:
    return sorted(hashlib.sha256(b).hexdigest() for b in blobs)


def local_files(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.rglob("*.dcm"))]


# ------------------------------------------------------------------------------------------ storage
def test_urls_are_normalised_and_compared_by_prefix_not_by_text() -> None:
    assert storage.normalise("s3://bkt//in/./a/") == "s3://bkt/in/a"
    assert storage.normalise("file:///tmp/x/../y") == "/tmp/y"
    assert not storage.is_url("file:///tmp/x") and storage.is_url("S3://bkt")
    assert storage.inside("s3://bkt/in/out", "s3://bkt/in/")
    assert storage.inside("s3://bkt/in", "s3://bkt//in")
    assert not storage.inside("s3://bkt/input2", "s3://bkt/input")  # a prefix of the name is not a folder
    assert not storage.inside("s3://bkt/in", "/bkt/in")


def test_discovery_lists_every_object_once_in_key_order(s3: S3, bucket: str, tmp_path: Path) -> None:
    urls = upload_archive(s3, bucket, tmp_path / "a", 8)
    found = discover([f"s3://{bucket}/in/", f"s3://{bucket}/in", urls[0]])
    assert found == urls  # sorted by key, each once though given three times
    with pytest.raises(ConfigError, match="input not found.*no object has this prefix"):
        discover(f"s3://{bucket}/nothing-here")


def test_a_url_without_its_filesystem_package_is_a_clear_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no filesystem for nosuch:// URLs.*install its fsspec package"):
        discover("nosuch://bucket/in")
    generate_archive(tmp_path / "in", 1)
    with pytest.raises(ConfigError, match="nosuch://"):
        run_apply(tmp_path / "in", output_folder="nosuch://bucket/out", client="sync")
    assert not (tmp_path / "in.manifest").exists()


def test_cli_verify_on_a_url_without_outputs_is_a_clear_error(s3: S3, bucket: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import pyarrow.parquet as pq

    from deid_batch.cli import main
    from deid_batch.schemas import IDENTIFIERS

    pq.write_table(IDENTIFIERS.empty_table(), tmp_path / "ids.parquet")
    assert main(["verify", f"s3://{bucket}/out", "--ids", str(tmp_path / "ids.parquet")]) == 2
    assert "does not exist; give the --out folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ apply
def test_apply_from_s3_to_s3_puts_complete_dicom_objects_and_a_row_per_input(
        s3: S3, bucket: str, tmp_path: Path) -> None:
    urls = upload_archive(s3, bucket, tmp_path / "in", 12)
    (tmp_path / "key").write_bytes(KEY)
    before = objects(s3, f"{bucket}/in")
    report = run_apply(f"s3://{bucket}/in", output_folder=f"s3://{bucket}/out", key_file=str(tmp_path / "key"),
                       client="sync", storage_options=s3.options)
    assert report.manifest == f"s3://{bucket}/out.manifest"
    rows = read_manifest(report.manifest, s3.options).to_pylist()
    assert sorted(r["source"] for r in rows) == urls  # one row per input object
    by_status: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_status.setdefault(r["status"], []).append(r)
    assert len(by_status["written"]) == 12
    assert sorted(r["reason"].split(":")[0] for r in by_status["failed"]) == ["empty", "not-dicom"]
    written = objects(s3, f"{bucket}/out")
    assert sorted(f"s3://{bucket}/out/{k}" for k in written) == sorted(r["output"] for r in by_status["written"])
    assert all(_LAYOUT.match(k) for k in written)  # outputs only: no temporary object was ever left
    for data in written.values():  # complete DICOM objects
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert len(ds.PixelData) == ds.Rows * ds.Columns * ds.BitsAllocated // 8 * ds.get("SamplesPerPixel", 1)
    # verify-equivalent: no original identifier survives in any output
    ids = get_identifiers(tmp_path / "in", client="sync")
    assert isinstance(ids, pa.Table)
    originals = {v for name in ("entity_id", "item_id", "PatientName", "StudyInstanceUID", "AccessionNumber")
                 if name in ids.column_names for v in ids.column(name).to_pylist() if v and len(v) > 3}
    assert originals
    assert not [v for v in originals for data in written.values() if v.encode() in data]
    # the same run on local paths with the same key writes the same bytes
    local = run_apply(tmp_path / "in", output_folder=str(tmp_path / "ref"), key_file=str(tmp_path / "key"),
                      client="sync")
    assert local.summary.by_status == report.summary.by_status
    assert digests(written.values()) == digests(local_files(tmp_path / "ref"))
    # the run's files are in the manifest prefix; the input is untouched
    assert {"_run.json", "_recipe.json"} <= set(objects(s3, f"{bucket}/out.manifest"))
    assert objects(s3, f"{bucket}/in") == before


def test_rerun_reports_exists_while_resume_and_retry_recognise_their_own_objects(
        s3: S3, bucket: str, tmp_path: Path) -> None:
    upload_archive(s3, bucket, tmp_path / "in", 6)
    args: dict[str, Any] = {"output_folder": f"s3://{bucket}/out", "client": "sync",
                            "storage_options": s3.options}
    first = run_apply(f"s3://{bucket}/in", **args)
    assert first.summary.by_status["written"] == 6
    assert "_key" in objects(s3, f"{bucket}/out.manifest")  # generated key kept beside the output
    stamp = fs(s3).metadata(first.outputs[0]).get(storage.STAMP_KEY)
    assert stamp and stamp.isdigit()
    out_before = objects(s3, f"{bucket}/out")
    again = run_apply(f"s3://{bucket}/in", **args)  # a new run: the objects are an earlier run's
    assert again.summary.by_status["exists"] == 6 and not again.summary.by_status.get("written")
    resumed = run_apply(f"s3://{bucket}/in", resume=True, **args)  # nothing left to do
    assert resumed.summary.by_status == again.summary.by_status
    overwritten = run_apply(f"s3://{bucket}/in", overwrite=True, **args)
    assert overwritten.summary.by_status["written"] == 6
    assert objects(s3, f"{bucket}/out") == out_before  # same key, same bytes, nothing doubled


def test_a_retried_put_of_the_same_run_counts_as_written_once(s3: S3, bucket: str) -> None:
    from deid_batch.dicom.writing import Outcome

    url = f"s3://{bucket}/out/aa/bb/x.dcm"
    assert storage.put_object(url, b"DICM-bytes", overwrite=False, stamp_ns=42) is Outcome.WRITTEN
    assert storage.put_object(url, b"DICM-bytes", overwrite=False, stamp_ns=42) is Outcome.IDENTICAL
    assert storage.put_object(url, b"DICM-bytes", overwrite=False, stamp_ns=43) is Outcome.EXISTS
    assert storage.put_object(url, b"other", overwrite=False, stamp_ns=42) is Outcome.EXISTS
    assert fs(s3).cat_file(url) == b"DICM-bytes"


@pytest.mark.parametrize("out, manifest, message", [
    ("s3://{b}/in/out", None, "is inside input"),
    ("s3://{b}//in/", None, "is inside input"),
    ("s3://{b}", None, "inside output folder"),
    ("s3://{b}/out", "s3://{b}/out/m", "overlap"),
    ("s3://{b}/out", "s3://{b}/in/m", "inside an input folder"),
])
def test_output_and_manifest_locations_are_checked_on_urls(
        s3: S3, bucket: str, tmp_path: Path, out: str, manifest: str | None, message: str) -> None:
    upload_archive(s3, bucket, tmp_path / "in", 2)
    with pytest.raises(ConfigError, match=message):
        run_apply(f"s3://{bucket}/in", output_folder=out.format(b=bucket),
                  manifest=manifest.format(b=bucket) if manifest else None, client="sync")
    assert not [k for k in fs(s3).find(bucket) if "/in/" not in k]  # nothing was written


def test_file_urls_are_local_paths(tmp_path: Path) -> None:
    generate_archive(tmp_path / "in", 4, seed=1)
    report = run_apply(f"file://{tmp_path}/in", output_folder=f"file://{tmp_path}/out", client="sync")
    assert report.output_folder == str(tmp_path / "out")
    assert report.summary.by_status["written"] == 4
    assert len(local_files(tmp_path / "out")) == 4
    with pytest.raises(ConfigError, match="inside input"):
        run_apply(f"file://{tmp_path}/in", output_folder=str(tmp_path / "in" / "o"), client="sync")


# ------------------------------------------------------------------------------------------ CLI
def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "deid_batch", *args]


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*args), env=env, capture_output=True, text=True, timeout=300)


def test_cli_scan_then_apply_with_ids_vars_and_key_on_s3(s3: S3, bucket: str, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    upload_archive(s3, bucket, tmp_path / "in", 12)
    f = fs(s3)
    f.pipe_file(f"{bucket}/secret/key", KEY)
    env = dict(os.environ, **s3.env, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    scan = run_cli(env, "scan", f"s3://{bucket}/in", "--ids", f"s3://{bucket}/private/ids.parquet",
                   "--workers", "0", "--no-progress")
    assert scan.returncode == 1, scan.stderr  # two inputs are not DICOM
    ids = pq.read_table(io.BytesIO(f.cat_file(f"{bucket}/private/ids.parquet")))
    assert ids.num_rows == 12
    assert f.exists(f"{bucket}/private/ids.errors.parquet")
    patients = sorted(set(ids.column("entity_id").to_pylist()))
    mapping = "PatientID,code\n" + "".join(f"{p},C{i}\n" for i, p in enumerate(patients))
    f.pipe_file(f"{bucket}/private/mapping.csv", mapping.encode())
    recipe = tmp_path / "deid.recipe"
    recipe.write_text("FORMAT dicom\n\n%header\n\nREPLACE PatientID var:code\n")
    # the endpoint and credentials given as --storage-options only (no AWS variables)
    bare = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    import json

    apply = run_cli(bare, "apply", f"s3://{bucket}/in", "--out", f"s3://{bucket}/share/deid",
                    "--recipe", str(recipe), "--ids", f"s3://{bucket}/private/ids.parquet",
                    "--vars", f"s3://{bucket}/private/mapping.csv", "--key-file", f"s3://{bucket}/secret/key",
                    "--manifest", f"s3://{bucket}/private/manifest", "--workers", "0", "--no-progress",
                    "--storage-options", json.dumps(s3.options))
    assert apply.returncode == 1, apply.stderr
    assert "written  12" in apply.stdout
    rows = read_manifest(f"s3://{bucket}/private/manifest", s3.options).to_pylist()
    assert sum(r["mapped"] is True for r in rows) == 12
    codes = set()
    for r in rows:
        if r["output"]:
            codes.add(pydicom.dcmread(io.BytesIO(f.cat_file(r["output"]))).PatientID)
    assert codes == {f"C{i}" for i in range(len(patients))}
    assert not f.exists(f"{bucket}/private/manifest/_key")  # the given key is never copied
    missing = run_cli(bare, "apply", f"s3://{bucket}/in", "--out", f"s3://{bucket}/o2", "--workers", "0",
                      "--vars", f"s3://{bucket}/private/nope.csv", "--storage-options", json.dumps(s3.options))
    assert missing.returncode == 2 and "nope.csv does not exist" in missing.stderr


# ------------------------------------------------------------------------------------------ crashes
SLOW_RECIPE = "FORMAT dicom\n\n%header\n\nREMOVE ALL\nKEEP SOPClassUID\nKEEP Rows\nKEEP Columns\n" \
    "KEEP SamplesPerPixel\nKEEP PhotometricInterpretation\nKEEP BitsAllocated\nKEEP BitsStored\n" \
    "KEEP HighBit\nKEEP PixelRepresentation\n"


@pytest.mark.slow
def test_sigkill_the_cli_mid_run_then_resume_on_s3_equals_an_uninterrupted_run(
        s3: S3, bucket: str, tmp_path: Path) -> None:
    urls = upload_archive(s3, bucket, tmp_path / "in", 40)
    (tmp_path / "key").write_bytes(KEY)
    recipe = tmp_path / "deid.recipe"
    recipe.write_text(SLOW_RECIPE)
    env = dict(os.environ, **s3.env, PYTHONPATH=str(Path(__file__).resolve().parents[1]))

    def start(out: str, *extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            cli("apply", f"s3://{bucket}/in", "--out", f"s3://{bucket}/{out}", "--recipe", str(recipe),
                "--key-file", str(tmp_path / "key"), "--partition-size", "2", "--workers", "0",
                "--no-progress", *extra),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)

    ref = start("ref")
    assert ref.wait(timeout=300) == 1, ref.stderr.read().decode()[-2000:] if ref.stderr else ""
    f = fs(s3)
    victim = start("out")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim.poll() is None:
        parts = [k for k in f.find(f"{bucket}/out.manifest") if "/part-" in k]
        if len(parts) >= 3:
            break
        time.sleep(0.05)
    assert victim.poll() is None, "the run finished before it could be killed: make it longer"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    done_before = len([k for k in f.find(f"{bucket}/out.manifest") if "/part-" in k])
    assert 0 < done_before < 21
    resumed = start("out", "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 1, err.decode()[-2000:]
    out, ref_out = objects(s3, f"{bucket}/out"), objects(s3, f"{bucket}/ref")
    assert all(_LAYOUT.match(k) for k in out)  # no partial or temporary object
    assert digests(out.values()) == digests(ref_out.values())
    rows = read_manifest(f"s3://{bucket}/out.manifest").to_pylist()
    assert sorted(r["source"] for r in rows) == urls  # every input exactly once
    assert sorted((r["source"], r["status"]) for r in rows) == \
        sorted((r["source"], r["status"]) for r in read_manifest(f"s3://{bucket}/ref.manifest").to_pylist())


@pytest.mark.cluster
@pytest.mark.slow
def test_killing_a_worker_mid_run_on_s3_loses_no_file(s3: S3, bucket: str, tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    urls = upload_archive(s3, bucket, tmp_path / "in", 60)
    (tmp_path / "key").write_bytes(KEY)
    recipe = tmp_path / "deid.recipe"
    recipe.write_text(SLOW_RECIPE)
    f = fs(s3)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = client.run(os.getpid)
        result: dict[str, Any] = {}

        def job() -> None:
            try:  # workers reach the server through the AWS variables they inherited
                result["report"] = run_apply(f"s3://{bucket}/in", recipe=str(recipe),
                                             output_folder=f"s3://{bucket}/out", key_file=str(tmp_path / "key"),
                                             client=client, partition=2)
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                result["error"] = exc

        thread = threading.Thread(target=job)
        thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and thread.is_alive():
            if [k for k in f.find(f"{bucket}/out.manifest") if "/part-" in k]:
                break
            time.sleep(0.02)
        assert thread.is_alive(), "the run finished before a worker could be killed"
        os.kill(sorted(pids.values())[0], signal.SIGKILL)
        thread.join(timeout=240)
        assert not thread.is_alive(), "apply did not finish after a worker was killed"
    assert "error" not in result, repr(result.get("error"))
    rows = read_manifest(f"s3://{bucket}/out.manifest").to_pylist()
    assert sorted(r["source"] for r in rows) == urls  # every input exactly once
    assert not [r for r in rows if r["reason"] and r["reason"].startswith("worker-lost")]
    written = [r["output"] for r in rows if r["status"] == "written"]
    out = objects(s3, f"{bucket}/out")
    assert len(written) == len(set(written)) == len(out) == 60
    assert all(_LAYOUT.match(k) for k in out)
    ref = run_apply(tmp_path / "in", recipe=str(recipe), output_folder=str(tmp_path / "ref"),
                    key_file=str(tmp_path / "key"), client="sync", partition=2)
    assert ref.summary.by_status == result["report"].summary.by_status
    assert digests(out.values()) == digests(local_files(tmp_path / "ref"))

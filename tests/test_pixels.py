"""Burned-in pixels: %filter detection semantics, ``apply --clean-pixels`` in the apply pass,
``deid-batch detect``, and where deid_batch deviates from deid on purpose."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest

from deid_batch.api import run_apply
from deid_batch.cli import main
from deid_batch.dicom import reading
from deid_batch.errors import ConfigError, RecipeError
from deid_batch.recipe.filters import compile_filters, detect
from deid_batch.recipe.parse import load_recipe
from deid_batch.stages.manifest import read_manifest
from tests.pixel_files import image, ultrasound_regions, write_image

deid_detect = pytest.importorskip("deid.dicom.pixels.detect")
deid_clean = pytest.importorskip("deid.dicom.pixels.clean")
from deid.config import DeidRecipe  # noqa: E402


def _recipe(tmp_path, text, name="deid.pixels"):
    path = tmp_path / name
    path.write_text("FORMAT dicom\n\n" + text)
    return str(path)


def _labels(path, recipe):
    d = detect(reading.read_dataset(path), compile_filters(load_recipe(recipe)))
    return d.flagged, [(h.group, h.label) for h in d.hits]


def _deid(path, recipe):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = deid_detect.has_burned_pixels(path, deid=DeidRecipe(recipe))
    return r["flagged"], [x["group"] for x in r["results"]]


CRITERIA = """%filter whitelist
LABEL ok # a comment
  equals Modality CT|MR

%filter graylist
LABEL lines are anded even with a leading or
  contains Manufacturer ACME
  || contains Modality US

LABEL fold left to right
  missing StationName + present PatientID || equals Modality XX

LABEL multi-valued ImageType as its list text
  contains ImageType 'derived', 'secondary'
  coordinates 0,0,4,4

LABEL not equals and not contains
  notequals Modality CT
  + notcontains Manufacturer siemens

LABEL empty is present and empty
  empty SeriesDescription

LABEL a tag reads the element text
  contains 0x00091001 ACME PRIVATE
  coordinates 1,1,3,3

%filter blacklist
LABEL values follow position (missing first)
  missing OperatorsName || contains Modality none
"""


@pytest.mark.parametrize("header", [
    {"Modality": "CT", "Manufacturer": "ACME"},
    {"Modality": "US", "Manufacturer": "ACME", "ImageType": ["DERIVED", "SECONDARY"], "SeriesDescription": ""},
    {"Modality": "MR", "Manufacturer": "Siemens", "StationName": "S1", "OperatorsName": "Op^One"},
    {"Modality": "XX", "Manufacturer": "GE", "StationName": "S1", "ImageType": ["ORIGINAL"]},
])
def test_criteria_and_operators_decide_as_deid_does(tmp_path, header):
    recipe = _recipe(tmp_path, CRITERIA)
    path = write_image(tmp_path / "f.dcm", image(8, 8), **header)
    ds = pydicom.dcmread(path)
    ds.private_block(0x0009, "ACME PRIVATE", create=True).add_new(0x01, "LO", "x")
    ds.save_as(path)
    ours = _labels(path, recipe)
    assert (ours[0], [g for g, _ in ours[1]]) == _deid(path, recipe)


def test_a_filter_reads_the_original_header_private_tags_included(tmp_path):
    """The verdict comes before the recipe and private-tag removal: a private criterion still flags."""
    recipe = _recipe(tmp_path, "%filter graylist\nLABEL vendor overlay\n  contains 0x00091010 BURNED\n"
                     "  coordinates 0,0,5,3\n\n%header\nREMOVE Manufacturer\n")
    path = write_image(tmp_path / "in" / "f.dcm", image(10, 10), Modality="OT")
    ds = pydicom.dcmread(path)
    ds.private_block(0x0009, "VENDOR", create=True).add_new(0x10, "LO", "BURNED IN")
    ds.save_as(path)
    rows = read_manifest(run_apply([path], recipe=recipe, output_folder=str(tmp_path / "out"),
                                   clean_pixels=True, client="sync").manifest).to_pylist()
    assert rows[0]["status"] == "written"
    out = pydicom.dcmread(rows[0]["output"])
    assert not any(e.tag.is_private for e in out)  # removed after the verdict
    assert (out.pixel_array[0:3, 0:5] == 0).all() and (out.pixel_array[3:, :] != 0).all()


def test_pixels_outside_the_regions_are_bit_identical_and_unflagged_files_untouched(tmp_path):
    recipe = _recipe(tmp_path, "%filter graylist\nLABEL band\n  equals Modality US\n  coordinates 2,1,6,4\n"
                     "  coordinates 0,7,3,9\n")
    pixels = image(9, 8, frames=3, samples=3, bits=8, seed=11)
    flagged = write_image(tmp_path / "in" / "a.dcm", pixels, frames=3, samples=3, Modality="US")
    clean = write_image(tmp_path / "in" / "b.dcm", image(5, 7, bits=16, seed=12), Modality="CT")
    report = run_apply([flagged, clean], recipe=recipe, output_folder=str(tmp_path / "out"),
                       clean_pixels=True, client="sync")
    rows = {os.path.basename(r["source"]): r for r in read_manifest(report.manifest).to_pylist()}
    out = pydicom.dcmread(rows["a.dcm"]["output"]).pixel_array
    mask = np.zeros((9, 8), bool)
    mask[1:4, 2:6] = mask[7:9, 0:3] = True
    assert (out[:, mask] == 0).all()
    assert out[:, ~mask].tobytes() == pixels[:, ~mask].tobytes()
    assert rows["a.dcm"]["warnings"] == ["burned-in: 2 region(s) blanked in 3 frame(s) (band)"]
    b_in, b_out = pydicom.dcmread(clean), pydicom.dcmread(rows["b.dcm"]["output"])
    assert b_out.PixelData == b_in.PixelData and rows["b.dcm"]["warnings"] == []


def test_flagged_without_a_region_is_skipped_for_review_unless_flagged_write(tmp_path):
    recipe = _recipe(tmp_path, "%filter blacklist\nLABEL Suspicious Secondary Capture\n"
                     "  contains ImageType SECONDARY\n")
    path = write_image(tmp_path / "in" / "sc.dcm", image(6, 6), ImageType=["DERIVED", "SECONDARY"])
    before = open(path, "rb").read()
    rows = read_manifest(run_apply([path], recipe=recipe, output_folder=str(tmp_path / "o1"),
                                   clean_pixels=True, client="sync").manifest).to_pylist()
    assert (rows[0]["status"], rows[0]["output"]) == ("skipped", None)
    assert rows[0]["reason"] == "burned-in: needs review (Suspicious Secondary Capture)"
    assert not any(f.endswith(".dcm") for _, _, fs in os.walk(tmp_path / "o1") for f in fs)
    rows = read_manifest(run_apply([path], recipe=recipe, output_folder=str(tmp_path / "o2"), flagged="write",
                                   clean_pixels=True, client="sync").manifest).to_pylist()
    assert rows[0]["status"] == "written"
    assert rows[0]["warnings"][0] == ("burned-in: needs review (Suspicious Secondary Capture); written "
                                      "because of --flagged write")
    assert open(path, "rb").read() == before  # the input is never modified


def test_a_whitelist_hit_is_not_sent_for_review(tmp_path):
    recipe = _recipe(tmp_path, "%filter whitelist\nLABEL clean\n  contains BurnedInAnnotation NO\n\n"
                     "%filter blacklist\nLABEL any secondary\n  contains ImageType SECONDARY\n")
    path = write_image(tmp_path / "in" / "f.dcm", image(6, 6), ImageType=["DERIVED", "SECONDARY"],
                       BurnedInAnnotation="NO")
    rows = read_manifest(run_apply([path], recipe=recipe, output_folder=str(tmp_path / "o"),
                                   clean_pixels=True, client="sync").manifest).to_pylist()
    assert rows[0]["status"] == "written"


def test_clean_pixels_without_a_filter_section_is_a_usage_error(tmp_path):
    path = write_image(tmp_path / "in" / "f.dcm", image(4, 4))
    with pytest.raises(ConfigError, match="no %filter section"):
        run_apply([path], output_folder=str(tmp_path / "o"), clean_pixels=True, client="sync")
    with pytest.raises(ConfigError, match="only apply with --clean-pixels"):
        run_apply([path], output_folder=str(tmp_path / "o"), flagged="write", client="sync")


def test_bad_filter_lines_are_recipe_errors_naming_the_line(tmp_path):
    recipe = _recipe(tmp_path, "%filter graylist\nLABEL bad coords\n  equals Modality US\n"
                     "  coordinates 0,0,10\n\nLABEL bad regex\n  contains SeriesDescription (dose\n\n"
                     "LABEL bad tag\n  present 0x0011,0x0003\n")
    with pytest.raises(RecipeError) as info:
        compile_filters(load_recipe(recipe))
    text = str(info.value)
    assert "deid.pixels:4: LABEL bad coords" in text and "four integers" in text
    assert "deid.pixels:8: LABEL bad regex" in text and "regular expression" in text
    assert "deid.pixels:11: LABEL bad tag" in text


# ------------------------------------------------------------------------- deviations from deid
def test_deviation_from_regions_are_resolved_per_file_not_kept_from_the_first(tmp_path):
    """deid writes the first file's from: regions into its (shared) recipe; each file gets its own."""
    recipe = "dicom.ultrasound"
    a = write_image(tmp_path / "a.dcm", image(40, 40, bits=8), Modality="US",
                    SequenceOfUltrasoundRegions=ultrasound_regions((1, 1, 10, 10)))
    b = write_image(tmp_path / "b.dcm", image(40, 40, bits=8), Modality="US",
                    SequenceOfUltrasoundRegions=ultrasound_regions((20, 20, 30, 35)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cleaner = deid_clean.DicomCleaner(deid=recipe, output_folder=str(tmp_path))
        cleaner.detect(a)
        second = cleaner.detect(b)
    assert second["results"][1]["coordinates"][0][1] == ["1,1,10,10"]  # deid: a's region, for b
    filters = compile_filters(load_recipe(recipe))
    detect(reading.read_dataset(a), filters)
    hit = detect(reading.read_dataset(b), filters).hits[1]
    assert hit.coordinates == ((1, "20,20,30,35"),)


def test_deviation_regions_outside_the_image_are_clipped_not_wrapped(tmp_path):
    """deid slices the mask with negative numbers, which blank the far side of the image."""
    recipe = _recipe(tmp_path, "%filter graylist\nLABEL off the edge\n  equals Modality OT\n"
                     "  coordinates -4,0,3,2\n")
    path = write_image(tmp_path / "in" / "f.dcm", image(6, 10), Modality="OT")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cleaner = deid_clean.DicomCleaner(deid=recipe, output_folder=str(tmp_path))
        cleaner.detect(path)
        theirs = cleaner.clean()
    assert (theirs[0:2, 6:10] != 0).all() and (theirs[0:2, 0:3] != 0).all()  # deid: [-4:3] is empty
    rows = read_manifest(run_apply([path], recipe=recipe, output_folder=str(tmp_path / "o"),
                                   clean_pixels=True, client="sync").manifest).to_pylist()
    ours = pydicom.dcmread(rows[0]["output"]).pixel_array
    assert (ours[0:2, 0:3] == 0).all() and (ours[0:2, 3:] != 0).all() and (ours[2:] != 0).all()


def test_deviation_a_first_label_without_criteria_flags_instead_of_crashing(tmp_path):
    recipe = _recipe(tmp_path, "%filter graylist\nLABEL everything\n  coordinates all\n")
    path = write_image(tmp_path / "f.dcm", image(4, 4), Modality="OT")
    with warnings.catch_warnings(), pytest.raises(UnboundLocalError):
        warnings.simplefilter("ignore")
        deid_detect.has_burned_pixels(path, deid=DeidRecipe(recipe))
    assert _labels(path, recipe) == (True, [("graylist", "everything")])


# ------------------------------------------------------------------------- command line
def test_detect_cli_writes_the_report_and_apply_cli_cleans(tmp_path, capsys):
    recipe = _recipe(tmp_path, "%filter graylist\nLABEL top band\n  equals Modality US\n  coordinates 0,0,8,2\n\n"
                     "%filter blacklist\nLABEL screen capture\n  contains ImageType SCREEN\n")
    src = tmp_path / "in"
    write_image(src / "Doe^Jane" / "us.dcm", image(6, 8), Modality="US")
    write_image(src / "Doe^Jane" / "sc.dcm", image(6, 8), Modality="OT", ImageType=["DERIVED", "SCREEN SAVE"])
    write_image(src / "Doe^Jane" / "ct.dcm", image(6, 8), Modality="CT")
    (src / "notes.txt").write_text("not dicom")
    report = tmp_path / "report.parquet"
    code = main(["detect", str(src), "--report", str(report), "--recipe", recipe, "--workers", "0",
                 "--no-progress"])
    text = capsys.readouterr().out
    assert code == 1  # one file is not readable
    assert "flagged       2" in text and "needs review  1" in text and "not-dicom" in text
    rows = {os.path.basename(r["source"]): r for r in pq.read_table(report).to_pylist()}
    assert rows["us.dcm"]["regions"] == [[0, 0, 8, 2]] and rows["us.dcm"]["group"] == "graylist"
    assert rows["sc.dcm"]["needs_review"] is True and rows["sc.dcm"]["label"] == "screen capture"
    assert rows["ct.dcm"]["flagged"] is False and rows["notes.txt"]["flagged"] is None
    assert rows["notes.txt"]["reason"].startswith("not-dicom")
    code = main(["apply", str(src / "Doe^Jane"), "--out", str(tmp_path / "out"), "--recipe", recipe,
                 "--clean-pixels", "--workers", "0", "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0
    assert "written" in text and "burned-in" in text
    manifest = {os.path.basename(r["source"]): r for r in read_manifest(str(tmp_path / "out.manifest")).to_pylist()}
    assert manifest["sc.dcm"]["status"] == "skipped"
    assert "Doe" not in manifest["sc.dcm"]["reason"]
    assert (pydicom.dcmread(manifest["us.dcm"]["output"]).pixel_array[0:2] == 0).all()


def test_detect_runs_on_a_local_cluster(tmp_path, local_client):
    from deid_batch.api import detect_burned_pixels

    files = [write_image(tmp_path / f"f{i}.dcm", image(4, 4), Modality="US" if i % 2 else "CT")
             for i in range(6)]
    recipe = _recipe(tmp_path, "%filter graylist\nLABEL us\n  equals Modality US\n  coordinates all\n")
    table = detect_burned_pixels(files, recipe=recipe, client=local_client)
    assert table.column("source").to_pylist() == files
    assert table.column("flagged").to_pylist() == [False, True] * 3

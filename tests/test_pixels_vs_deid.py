"""Oracle: deid 0.4.13's has_burned_pixels / DicomCleaner against deid_batch's detect and
``apply --clean-pixels``, on deid-data's samples and on generated files that match the bundled
filters: the same files flagged, the same groups and LABELs, the same regions, equal cleaned
pixel arrays."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pydicom
import pytest

from deid_batch.api import detect_burned_pixels, run_apply
from deid_batch.dicom import reading
from deid_batch.recipe.filters import compile_filters, detect
from deid_batch.recipe.parse import load_recipe
from deid_batch.stages.manifest import read_manifest
from tests.pixel_files import bundled_filter_files, deid_data_files

deid_detect = pytest.importorskip("deid.dicom.pixels.detect")
deid_clean = pytest.importorskip("deid.dicom.pixels.clean")
from deid.config import DeidRecipe  # noqa: E402

BUNDLED = ("dicom", "dicom.ultrasound", "dicom.xray.chest")


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return deid_data_files(tmp_path_factory.mktemp("deid-data"))


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return bundled_filter_files(tmp_path_factory.mktemp("generated"))


def _deid_results(path: str, recipe: str) -> dict:
    """deid's verdict, a fresh recipe per file (deid writes from: regions into the recipe)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = deid_detect.has_burned_pixels(path, deid=DeidRecipe(recipe))
    hits = []
    for r in result["results"]:
        coords = []
        for mask, c in r["coordinates"]:
            coords += [(mask, x) for x in c] if isinstance(c, list) else [(mask, c)]
        hits.append((r["group"], r["reason"], tuple(coords)))
    return {"flagged": result["flagged"], "hits": hits}


def _ours(path: str, recipe: str) -> dict:
    ds = reading.read_dataset(path)
    d = detect(ds, compile_filters(load_recipe(recipe)))
    return {"flagged": d.flagged, "hits": [(h.group, h.reason, h.coordinates) for h in d.hits]}


@pytest.mark.parametrize("recipe", BUNDLED)
def test_detection_equals_deid_on_deid_data_samples(samples, recipe):
    assert len(samples) >= 15
    flagged = 0
    for path in samples:
        theirs = _deid_results(path, recipe)
        assert _ours(path, recipe) == theirs, os.path.basename(path)
        flagged += theirs["flagged"]
    if recipe != "dicom.xray.chest":
        assert flagged >= 10  # the comparison is not all "clean"


@pytest.mark.parametrize("recipe", BUNDLED)
def test_detection_equals_deid_on_files_matching_the_bundled_filters(generated, recipe):
    for path in generated:
        assert _ours(path, recipe) == _deid_results(path, recipe), os.path.basename(path)


def test_generated_files_hit_the_labels_they_were_made_for(generated):
    labels = {os.path.basename(p): [h.label for h in detect(reading.read_dataset(p),
                                                             compile_filters(load_recipe("dicom"))).hits]
              for p in generated}
    assert "LightSpeed Dose Report" in labels["dose.dcm"]
    assert "Somatom Localizers" in labels["localizer.dcm"]
    assert "3D Lab reconstructions" in labels["recon3d.dcm"]


def test_the_report_holds_deids_first_group_and_the_regions(generated, tmp_path):
    report = tmp_path / "report.parquet"
    table = detect_burned_pixels(generated, recipe="dicom.ultrasound", report=str(report))
    assert os.path.exists(report) and not os.path.exists(str(report) + ".tmp")
    rows = {os.path.basename(r["source"]): r for r in table.to_pylist()}
    for path in generated:
        theirs = _deid_results(path, "dicom.ultrasound")
        row = rows[os.path.basename(path)]
        assert row["flagged"] == theirs["flagged"]
        assert row["group"] == theirs["hits"][0][0]
    us = rows["grey-cine.dcm"]
    assert us["label"] == "Blank Image" and us["regions"] == [[0, 0, 120, 80]]
    assert us["keep_regions"] == [[10, 12, 60, 40], [70, 50, 110, 79]]
    assert [h["label"] for h in us["hits"]] == ["Blank Image", "Clean Ultrasound Regions"]
    assert us["needs_review"] is False


def _deid_cleaned(path: str, recipe: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cleaner = deid_clean.DicomCleaner(deid=recipe, output_folder=os.path.dirname(path))
        cleaner.detect(path)
        return cleaner.clean()


def _clean_all(paths, recipe, out, **kw):
    report = run_apply(paths, recipe=recipe, output_folder=str(out), clean_pixels=True, client="sync",
                       **kw)
    rows = read_manifest(report.manifest).to_pylist()
    return {r["source"]: r for r in rows}


@pytest.mark.parametrize("recipe", ["dicom", "dicom.ultrasound"])
def test_cleaned_pixels_equal_deids_cleaner_on_generated_files(generated, tmp_path, recipe):
    rows = _clean_all(generated, recipe, tmp_path / "out")
    compared = partial = 0
    for path in generated:
        row = rows[os.path.abspath(path)]
        if row["status"] != "written" or not any("blanked" in w for w in row["warnings"]):
            continue
        ours = pydicom.dcmread(row["output"]).pixel_array
        theirs = _deid_cleaned(path, recipe)
        np.testing.assert_array_equal(ours, theirs, err_msg=os.path.basename(path))
        assert (ours == 0).any()
        compared += 1
        partial += bool((ours != 0).any())  # part of the image kept: the regions were placed
    assert compared >= (3 if recipe == "dicom" else 7)
    assert partial >= (3 if recipe == "dicom" else 4)


def test_cleaned_pixels_equal_deids_cleaner_on_deid_data_ultrasounds(samples, tmp_path):
    us = [p for p in samples if "ultrasound" in p or p.endswith("CINE.dcm") or "_IMAGE" in p]
    assert len(us) == 5
    rows = _clean_all(us, "dicom.ultrasound", tmp_path / "out")
    for path in us:
        row = rows[os.path.abspath(path)]
        assert row["status"] == "written", row["reason"]
        ours = pydicom.dcmread(row["output"]).pixel_array
        np.testing.assert_array_equal(ours, _deid_cleaned(path, "dicom.ultrasound"),
                                      err_msg=os.path.basename(path))


def test_compressed_cookies_are_decoded_cleaned_and_equal_deids_only_when_allowed(samples, tmp_path):
    cookies = [p for p in samples if "dicom-cookies" in p][:2]
    rows = _clean_all(cookies, "dicom.ultrasound", tmp_path / "refused")
    for path in cookies:
        row = rows[os.path.abspath(path)]
        assert row["status"] == "failed" and row["output"] is None
        assert row["reason"].startswith("burned-in: the pixel data is compressed (JPEG Baseline")
        assert "--decompress-pixels" in row["reason"]
    rows = _clean_all(cookies, "dicom.ultrasound", tmp_path / "decoded", decompress_pixels=True)
    for path in cookies:
        row = rows[os.path.abspath(path)]
        assert row["status"] == "written", row["reason"]
        out = pydicom.dcmread(row["output"])
        assert not out.file_meta.TransferSyntaxUID.is_compressed
        np.testing.assert_array_equal(out.pixel_array, _deid_cleaned(path, "dicom.ultrasound"))

"""deid's documented example, from Python as the docs show it, with our safer missing variable."""

from __future__ import annotations

import logging

import pyarrow.dataset as pads
import pydicom
import pytest

from deid_batch import as_lookup, get_identifiers, replace_identifiers

RECIPE = """FORMAT dicom

%header

ADD PatientIdentityRemoved YES
REPLACE PatientID var:id
REPLACE SOPInstanceUID var:source_id
"""


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "deid.dicom"
    path.write_text(RECIPE)
    return str(path)


def _fill(ids):
    count = 0
    for entity, items in ids.items():
        for item in items:
            ids[entity][item]["id"] = "cookiemonster"
            ids[entity][item]["source_id"] = f"cookiemonster-image-{count}"
            count += 1
    return ids


def test_docs_example_replaces_with_the_variables(small_archive, tmp_path, recipe, key_file):
    ids = _fill(as_lookup(get_identifiers(small_archive)))
    outputs = replace_identifiers(dicom_files=str(small_archive), deid=recipe, ids=ids,
                                  output_folder=str(tmp_path / "out"), overwrite=True,
                                  remove_private=False, key_file=key_file)
    assert len(outputs) == 24
    seen = set()
    for path in outputs:
        ds = pydicom.dcmread(path)
        assert ds.PatientID == "cookiemonster"
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.SOPInstanceUID.startswith("cookiemonster-image-")
        seen.add(ds.SOPInstanceUID)
    assert len(seen) == 24


# The seed's workflow: the docs recipe on the remove-everything base keeps only what it names and
# what decodes the pixels; everything else (names, dates, private tags, ...) is gone.
PIXEL_MODULE = {"SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
                "BitsStored", "HighBit", "PixelRepresentation", "PixelData", "PlanarConfiguration",
                "SmallestImagePixelValue", "LargestImagePixelValue", "RescaleIntercept", "RescaleSlope",
                "RescaleType", "WindowCenter", "WindowWidth", "PixelSpacing", "ImagerPixelSpacing",
                "NumberOfFrames", "FrameIncrementPointer", "PixelPaddingValue", "LossyImageCompression",
                "PixelAspectRatio"}


def _kept_by_base():
    from deid_batch.recipe import default_recipe_path

    return {line.split()[1] for line in default_recipe_path().read_text().splitlines()
            if line.startswith(("KEEP ", "REPLACE "))}


def test_docs_recipe_on_the_default_base_keeps_only_what_it_names(small_archive, tmp_path, recipe, key_file):
    ids = _fill(as_lookup(get_identifiers(small_archive)))
    outputs = replace_identifiers(dicom_files=str(small_archive), deid=recipe, ids=ids,
                                  output_folder=str(tmp_path / "out"), overwrite=True,
                                  remove_private=False, key_file=key_file)
    allowed = {"PatientIdentityRemoved", "PatientID", "SOPInstanceUID"} | PIXEL_MODULE | _kept_by_base()
    for path in outputs:
        ds = pydicom.dcmread(path)
        names = {e.keyword for e in ds}
        assert names - allowed == set(), "only the recipe's elements and the pixel module survive"
        assert "PatientName" not in ds and "StudyDate" not in ds and "PatientBirthDate" not in ds
        assert not any(e.tag.is_private for e in ds.iterall())  # REMOVE ALL of the base takes them
        assert ds.PatientID == "cookiemonster" and ds.PatientIdentityRemoved == "YES"


def test_base_none_runs_the_recipe_alone_as_deid_does(small_archive, tmp_path, recipe, key_file):
    ids = _fill(as_lookup(get_identifiers(small_archive)))
    outputs = replace_identifiers(dicom_files=str(small_archive), deid=recipe, base="none", ids=ids,
                                  output_folder=str(tmp_path / "out"), overwrite=True,
                                  remove_private=False, key_file=key_file)
    for path in outputs:
        ds = pydicom.dcmread(path)
        assert "PatientName" in ds and "StudyDate" in ds  # deid 0.4.13: the recipe alone
        assert any(e.tag.is_private for e in ds.iterall())  # remove_private=False honoured
        assert ds.PatientID == "cookiemonster"


def test_misspelled_variable_removes_the_field_and_warns_without_the_value(
        small_archive, tmp_path, key_file):
    recipe = tmp_path / "typo.dicom"
    recipe.write_text(RECIPE.replace("var:source_id", "var:sourceid"))
    ids = _fill(as_lookup(get_identifiers(small_archive)))
    originals = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
                 for f in (row["source"] for items in ids.values() for row in items.values())}
    out = tmp_path / "out"
    outputs = replace_identifiers(dicom_files=str(small_archive), deid=str(recipe), ids=ids,
                                  output_folder=str(out), key_file=key_file)
    for path in outputs:
        ds = pydicom.dcmread(path)
        assert "SOPInstanceUID" not in ds  # deid 0.4.13 would keep the original: a leak
        assert ds.PatientID == "cookiemonster"
        raw = open(path, "rb").read()
        assert not any(u.encode() in raw for u in originals)
    manifest = pads.dataset(str(out) + ".manifest", format="parquet").to_table().to_pylist()
    for row in manifest:
        assert any("sourceid" in w and "SOPInstanceUID" in w for w in row["warnings"])
        assert not any(u in w for w in row["warnings"] for u in originals)


def test_deid_keyword_names_are_accepted_and_unknown_ones_refused(small_archive, tmp_path, recipe):
    with pytest.raises(TypeError, match="save_as_png"):
        replace_identifiers(dicom_files=str(small_archive), deid=recipe, save_as_png=True,
                            output_folder=str(tmp_path / "o"))
    logging.getLogger("deid_batch").setLevel(logging.WARNING)

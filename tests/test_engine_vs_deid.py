"""A quick differential spot check against deid 0.4.13 itself on deid-data's ctbrain1.dcm.

(The full differential suite lives in ``tests/differential``.)
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import pydicom
import pytest

from deid_batch.recipe.engine import EngineOptions, deidentify_dataset
from deid_batch.recipe.parse import load_recipe

deid = pytest.importorskip("deid")
deid_data = pytest.importorskip("deid_data")

CTBRAIN1 = Path(deid_data.__file__).parent / "data" / "humans" / "ctbrain1.dcm"

RECIPES = {
    "bundled-dicom": None,
    "remove-all-whitelist": "REMOVE ALL\nKEEP StudyDate\nREPLACE endswith:Name XXX\n"
                            "JITTER AcquisitionDate 3\nADD PatientIdentityRemoved YES\n",
    "expanders": "REMOVE contains:Collimation\nREMOVE endswith:Diameter\n"
                 "REMOVE startswith:Exposure\nBLANK select:VR:PN\nREMOVE select:group:0029\n",
    "private-creator": 'REMOVE (0033,"MITRA OBJECT UTF8 ATTRIBUTES 1.0",1E)\n'
                       'REPLACE (0029,"SIEMENS CSA HEADER",21) 20221128\n'
                       'JITTER (0029,"SIEMENS CSA HEADER",21) 5\n',
    "uids": "REPLACE contains:InstanceUID deid_func:pydicom_uuid\n"
            "REPLACE FrameOfReferenceUID deid_func:pydicom_uuid prefix=1.55.\n",
}


def flatten(ds: pydicom.Dataset) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}

    def walk(dataset: pydicom.Dataset, prefix: str) -> None:
        for elem in dataset:
            key = prefix + str(elem.tag)
            if elem.VR == "SQ":
                out[key] = ("SQ", str(len(elem.value)))
                for i, item in enumerate(elem.value):
                    walk(item, f"{key}[{i}]")
            else:
                out[key] = (elem.VR, repr(elem.value))

    walk(ds, "")
    walk(getattr(ds, "file_meta", pydicom.Dataset()), "meta:")
    return out


def run_deid(recipe_path: str) -> pydicom.Dataset:
    from deid.config import DeidRecipe
    from deid.dicom.parser import DicomParser

    ds = pydicom.dcmread(CTBRAIN1)
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            DicomParser(ds, recipe=DeidRecipe(recipe_path, base=False)).parse()
    finally:
        logging.disable(logging.NOTSET)
    return ds


@pytest.fixture
def recipe_path(tmp_path):
    def path(name: str) -> str:
        body = RECIPES[name]
        if body is None:
            return str(Path(deid.__file__).parent / "data" / "deid.dicom")
        file = tmp_path / f"deid.{name}"
        file.write_text("FORMAT dicom\n%header\n" + body)
        return str(file)

    return path


@pytest.mark.parametrize("name", list(RECIPES))
def test_same_header_as_deid_with_private_tags_kept(recipe_path, name):
    path = recipe_path(name)
    theirs = run_deid(path)
    ours = pydicom.dcmread(CTBRAIN1)
    deidentify_dataset(ours, load_recipe(path, base=None), options=EngineOptions(remove_private=False))
    assert flatten(ours) == flatten(theirs)


def test_remove_private_equals_deid_followed_by_remove_private_tags(recipe_path):
    path = recipe_path("bundled-dicom")
    theirs = run_deid(path)
    theirs.remove_private_tags()
    ours = pydicom.dcmread(CTBRAIN1)
    deidentify_dataset(ours, load_recipe(path, base=None), options=EngineOptions(remove_private=True))
    assert flatten(ours) == flatten(theirs)

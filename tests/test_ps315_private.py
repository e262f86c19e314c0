"""Issue 11: ``ps3.15-retain-safe-private`` (Table E.3.10-1) and the engine rule behind it: a
``KEEP (gggg,"CREATOR",ee)`` line keeps that private element through the removal of private
tags, at every depth, in any recipe; the fast engine path, the generic path and the byte-level
writer agree (this pins the rule for any other engine path)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from deid_batch import EngineOptions, deidentify_dataset
from deid_batch.recipe import load_recipe, ps315
from deid_batch.recipe.engine import deidentify_dataset_generic
from deid_batch.recipe.private import parse_private_keep, private_keeps
from deid_batch.stages.apply import ApplyConfig, process_file
from deid_batch.synth import generate_archive
from tests.test_ps315 import _codes, _ds

KEY = b"0123456789abcdef0123456789abcdef"
STACK = ["ps3.15-basic", "ps3.15-retain-safe-private"]


def _with_safe_private(ds: Dataset) -> Dataset:
    """GEMS_ACQU_01 in block 0x10 at the top, in block 0x11 two levels down, each with one safe
    element (Table E.3.10-1) and one that is not."""
    block = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    block.add_new(0x23, "DS", "39.37")  # Table Speed: safe
    block.add_new(0x25, "LO", "DOE^JOHN")  # not in the table
    inner = ds.ReferencedImageSequence[0].ReferencedImageSequence[0]
    inner.add_new(0x00190010, "LO", "OTHER VENDOR")
    inner.add_new(0x00191023, "LO", "MRN12345")  # xx23, but another creator's block
    inner.add_new(0x00190011, "LO", "gems_acqu_01 ")  # case and padding do not matter
    inner.add_new(0x00191124, "DS", "1.5")  # Mid Scan Time: safe
    inner.add_new(0x00191126, "LO", "secret")
    return ds


def _private(ds: Dataset) -> dict[str, object]:
    return {f"{e.tag}": e.value for e in ds.iterall() if e.tag.is_private}


def test_the_safe_private_table_is_data_with_its_edition_and_source_named():
    text = ps315.SAFE_PRIVATE.read_text(encoding="utf-8")
    assert text.startswith("# DICOM PS3.15 2025b, Table E.3.10-1 Safe Private Attributes")
    rows = ps315.load_safe_private()
    assert len(rows) == 87
    selectors = {r.selector for r in rows}
    assert '(0019,"GEMS_ACQU_01",23)' in selectors
    assert '(0019,"SIEMENS MR HEADER",0C)' in selectors  # B value
    assert '(2001,"Philips Imaging DD 001",03)' in selectors  # diffusion B-factor
    assert all(int(r.group, 16) & 1 for r in rows)  # private groups only
    recipe = load_recipe(STACK, base="remove-everything")
    assert len(private_keeps(recipe)) == len(rows)


def test_retain_safe_private_keeps_the_table_at_every_depth_and_removes_the_rest():
    recipe = load_recipe(STACK, base="remove-everything")
    out = deidentify_dataset(_with_safe_private(_ds()), recipe,
                             options=EngineOptions(uid_key=KEY)).dataset
    assert _private(out) == {"(0019,0010)": "GEMS_ACQU_01", "(0019,1023)": "39.37",
                             "(0019,0011)": "gems_acqu_01 ", "(0019,1124)": "1.5"}
    assert "(0009,0010)" not in _private(out)  # the ACME block of _ds: not safe
    assert _codes(out) == ["113100", "113111"]
    assert "Retain Safe Private Option" in list(out.DeidentificationMethod)


def test_without_the_option_every_private_tag_is_removed():
    recipe = load_recipe(["ps3.15-basic"], base="remove-everything")
    out = deidentify_dataset(_with_safe_private(_ds()), recipe,
                             options=EngineOptions(uid_key=KEY)).dataset
    assert _private(out) == {}


def test_a_user_recipe_keeps_a_private_element_by_creator_on_the_default_base(tmp_path):
    mine = tmp_path / "mine.recipe"
    mine.write_text('FORMAT dicom\n%header\nKEEP (0019,"GEMS_ACQU_01",23)\nKEEP (0019,1025)\n')
    recipe = load_recipe(str(mine))  # on remove-everything
    out = deidentify_dataset(_with_safe_private(_ds()), recipe,
                             options=EngineOptions(uid_key=KEY)).dataset
    # by creator: kept; by bare tag (0019,1025): the private removal still takes it
    assert _private(out) == {"(0019,0010)": "GEMS_ACQU_01", "(0019,1023)": "39.37"}


@pytest.mark.parametrize("text, key", [
    ('(0019,"GEMS_ACQU_01",23)', (0x19, "gems_acqu_01", 0x23)),
    ('0019,"Philips Imaging DD 001",0c', (0x19, "philips imaging dd 001", 0x0C)),
    ("(0019,1023)", None), ('(0010,"X",10)', None), ("contains:GEMS", None)])
def test_only_creator_qualified_private_selectors_survive_the_removal(text, key):
    assert parse_private_keep(text) == key


def test_the_generic_engine_path_keeps_the_same_private_elements():
    recipe = load_recipe(STACK, base="remove-everything")
    options = EngineOptions(uid_key=KEY)
    fast = deidentify_dataset(_with_safe_private(_ds()), recipe, options=options).dataset
    slow = deidentify_dataset_generic(_with_safe_private(_ds()), recipe, options=options).dataset
    assert _private(fast) == _private(slow)
    assert fast == slow


def test_the_byte_writer_writes_what_the_pydicom_writer_writes_with_safe_private_kept(tmp_path):
    paths = generate_archive(tmp_path / "in", 6, seed=5)
    for index, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        block = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
        block.add_new(0x23, "DS", "39.37")
        block.add_new(0x25, "LO", "DOE^JOHN")
        item = Dataset()
        item.add_new(0x20010010, "LO", "Philips Imaging DD 001")
        item.add_new(0x20011003, "FL", 1000.0)  # diffusion B-factor: safe
        ds.add_new(0x00081140, "SQ", Sequence([item]))  # ReferencedImageSequence
        if index % 2:
            ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
    recipe = load_recipe(STACK, base="remove-everything")
    fast = ApplyConfig(recipe, EngineOptions(uid_key=KEY), str(tmp_path / "bytes"), KEY, overwrite=True)
    slow = dataclasses.replace(fast, output_folder=str(tmp_path / "pydicom"), byte_writer=False)
    for path in paths:
        a, b = process_file(str(path), None, fast), process_file(str(path), None, slow)
        assert (a["status"], a["writer"], b["writer"]) == ("written", "bytes", "pydicom")
        assert Path(a["output"]).read_bytes() == Path(b["output"]).read_bytes()
        out = pydicom.dcmread(a["output"])
        kept = _private(out)
        assert kept["(0019,1023)"] in ("39.37", b"39.37") and "(0019,1025)" not in kept
        assert out.ReferencedImageSequence[0][0x20011003].value in (1000.0, b"\x00\x00\x7aD")

"""The direct path and the byte-level writer against the pydicom path: equal bytes on every archive
kind and recipe.

Each input is de-identified three times through the worker function (``process_file``): by the
direct path (``recipe.direct``: straight from the raw elements, no pydicom Dataset; writer ``raw``,
the engine's path when it declines), by the engine + byte-level writer (input bytes copied,
changed elements re-encoded; ``direct=False``) and by the reference path (every element
converted, ``writing.encode``). Manifest rows and output bytes must be equal.
Archive kinds: every ``deid_batch.synth`` variant (small / CT pixels, four modalities, with and
without private blocks and sequences) and transcodings of them written the way other software
writes files (implicit VR, undefined-length sequences and items, encapsulated pixel data,
padding pydicom does not write itself, group length elements), plus deid-data's sample files.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import deid_data
import hypothesis
import pydicom
import pytest
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, RLELossless

from deid_batch.dicom import raw
from deid_batch.dicom.rewrite import rewrite
from deid_batch.recipe.engine import EngineOptions
from deid_batch.recipe.parse import UNSET, load_recipe
from deid_batch.stages.apply import ApplyConfig, process_file
from deid_batch.synth import generate_archive

RECIPES = ["dicom", "dicom.ultrasound", "dicom.xray.chest", None]  # None: our default
#: archive kinds the direct path reads (explicit and implicit VR little endian); the others take the engine
DIRECT_KINDS = {"small", "ct", "no-private", "no-sequences", "undefined-lengths", "encapsulated", "implicit-vr",
                "implicit-undefined", "implicit-ambiguous", "implicit-ambiguous-signed",
                "odd-padding"}
SAMPLES = os.path.join(os.path.dirname(deid_data.__file__), "data")
KEY = b"byte-writer-test-key-0123456789ab"


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _rewrite_files(files: list[Path], change) -> None:  # type: ignore[no-untyped-def]
    for path in files:
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path, enforce_file_format=True)


def _implicit(ds: pydicom.Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian


def _undefined_lengths(ds: pydicom.Dataset) -> None:
    for elem in ds.iterall():
        if elem.VR == "SQ":
            elem.is_undefined_length = True
            for item in elem.value:
                item.is_undefined_length_sequence_item = True


def _encapsulated(ds: pydicom.Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([bytes(ds.PixelData[: len(ds.PixelData) // 2]),
                                bytes(ds.PixelData[len(ds.PixelData) // 2:])])


def _odd_padding(ds: pydicom.Dataset) -> None:
    """Values as some writers pad them: pydicom's convert-then-write changes their bytes."""
    ds._dict[pydicom.tag.Tag(0x00081030)] = RawDataElement(
        pydicom.tag.Tag(0x00081030), "LO", 6, b"HEAD  ", 0, False, True)  # two pad spaces
    ds._dict[pydicom.tag.Tag(0x00200013)] = RawDataElement(
        pydicom.tag.Tag(0x00200013), "IS", 4, b" 12 ", 0, False, True)  # leading space
    ds._dict[pydicom.tag.Tag(0x00080060)] = RawDataElement(
        pydicom.tag.Tag(0x00080060), "CS", 4, b"CT\x00\x00", 0, False, True)  # NUL padded
    ds._dict[pydicom.tag.Tag(0x00280030)] = RawDataElement(
        pydicom.tag.Tag(0x00280030), "DS", 8, b"0.5 \\0.5", 0, False, True)  # space in a value
    ds._dict[pydicom.tag.Tag(0x00100000)] = RawDataElement(  # a group length (not written)
        pydicom.tag.Tag(0x00100000), "UL", 4, b"\x00\x00\x00\x00", 0, False, True)


def _ambiguous_vrs(ds: pydicom.Dataset) -> None:
    """Elements whose dictionary VR is ambiguous, as CT and MR scanners write them (implicit VR):
    pydicom resolves US or SS by PixelRepresentation, OB or OW (overlay data) as OW."""
    _implicit(ds)
    ds.SmallestImagePixelValue = 0
    ds.LargestImagePixelValue = 4000
    ds.PixelPaddingValue = 0
    ds.add_new(0x60000010, "US", 2)  # OverlayRows
    ds.add_new(0x60000011, "US", 8)  # OverlayColumns
    ds.add_new(0x60003000, "OW", b"\x01\x00" * 2)  # OverlayData: 'OB or OW'


def _ambiguous_signed(ds: pydicom.Dataset) -> None:
    _ambiguous_vrs(ds)
    ds.PixelRepresentation = 1
    ds.SmallestImagePixelValue = -1024
    ds.PixelPaddingValue = -2000


KINDS = {
    "small": {},
    "ct": {"pixels": "ct"},
    "no-private": {"private": False},
    "no-sequences": {"sequences": False},
    "implicit-vr": {"change": _implicit},
    "undefined-lengths": {"change": _undefined_lengths},
    "implicit-undefined": {"change": lambda ds: (_implicit(ds), _undefined_lengths(ds))},
    "encapsulated": {"change": _encapsulated},
    "implicit-ambiguous": {"change": _ambiguous_vrs},
    "implicit-ambiguous-signed": {"change": _ambiguous_signed},
    "odd-padding": {"change": _odd_padding},
}


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    base = tmp_path_factory.mktemp("kinds")
    out: dict[str, list[Path]] = {}
    for name, spec in KINDS.items():
        spec = dict(spec)
        change = spec.pop("change", None)
        n = 4 if spec.get("pixels") == "ct" else 16
        root = base / name
        generate_archive(root, n, seed=3, **spec)
        files = _files(root)
        if change is not None:
            _rewrite_files(files, change)
        out[name] = files
    samples = base / "samples"
    shutil.copytree(SAMPLES, samples, ignore=shutil.ignore_patterns("*.py", "*.md", "__pycache__"))
    out["deid-data"] = _files(samples)
    return out


def _configs(recipe: Any, out: Path, remove_private: bool = True,
             base: Any = UNSET) -> tuple[ApplyConfig, ApplyConfig]:
    options = EngineOptions(uid_key=KEY, remove_private=remove_private)
    fast = ApplyConfig(load_recipe(recipe, base=base), options, str(out / "bytes"), KEY, overwrite=True)
    return fast, dataclasses.replace(fast, output_folder=str(out / "pydicom"), byte_writer=False)


def _compare(files: list[Path], fast: ApplyConfig, slow: ApplyConfig,
             variables: Any = None) -> Counter[str]:
    """Run the three paths on each file; assert equal rows and bytes; count the first's writers."""
    engine = dataclasses.replace(fast, output_folder=fast.output_folder + "-engine", direct=False)
    writers: Counter[str] = Counter()
    for path in files:
        a, b = process_file(str(path), variables, fast), process_file(str(path), variables, slow)
        c = process_file(str(path), variables, engine)
        writers[a["writer"] or "none"] += 1
        assert b["writer"] in ("pydicom", None)
        assert c["writer"] in ("bytes", "pydicom", None)
        keys = ("status", "reason", "warnings", "sop_instance_uid")
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys} == {k: c[k] for k in keys}, path.name
        if a["output"] is not None:
            assert os.path.relpath(a["output"], fast.output_folder) == \
                os.path.relpath(b["output"], slow.output_folder)
            data = Path(a["output"]).read_bytes()
            assert data == Path(b["output"]).read_bytes() == Path(c["output"]).read_bytes(), path.name
    return writers


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r or "default")
@pytest.mark.parametrize("kind", list(KINDS) + ["deid-data"])
def test_byte_writer_writes_the_bytes_the_pydicom_path_writes(archives, tmp_path, kind, recipe):
    fast, slow = _configs(recipe, tmp_path)
    writers = _compare(archives[kind], fast, slow)
    if kind != "deid-data":  # every generated kind is one the byte-level writer handles
        writer = "raw" if kind in DIRECT_KINDS else "bytes"  # explicit VR: straight from the bytes
        assert writers == Counter({writer: len(archives[kind])})


@pytest.mark.parametrize("kind", ["small", "implicit-vr", "deid-data"])
def test_byte_writer_with_private_tags_kept(archives, tmp_path, kind):
    fast, slow = _configs("dicom", tmp_path, remove_private=False)
    _compare(archives[kind], fast, slow)


def test_the_byte_writer_copies_untouched_elements_and_passes_pixel_data_through(archives, tmp_path):
    fast, _ = _configs("dicom", tmp_path)
    source = archives["ct"][0]
    row = process_file(str(source), None, dataclasses.replace(fast, direct=False))
    assert row["writer"] == "bytes"
    data = source.read_bytes()
    out = Path(row["output"]).read_bytes()
    pixels = pydicom.dcmread(source).PixelData
    assert len(pixels) == 512 * 512 * 2 and pixels in out  # the pixel data, byte for byte
    kept = pydicom.dcmread(source, stop_before_pixels=True).get_item(0x00280030)  # PixelSpacing
    assert data[kept.value_tell - 8:kept.value_tell + kept.length] in out
    written = pydicom.dcmread(row["output"])
    assert written.preamble == b"\x00" * 128
    # deid's dicom recipe without variables removes SOPInstanceUID: the file meta gets a UID derived
    # from the keyed output name (the same rule as the pydicom path), never the original
    original = pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID
    meta_uid = written.file_meta.get("MediaStorageSOPInstanceUID")
    assert meta_uid == (written.get("SOPInstanceUID") or meta_uid) and meta_uid != original
    assert meta_uid.startswith("2.25.") or meta_uid == written.get("SOPInstanceUID")
    assert written.file_meta.get("MediaStorageSOPClassUID") == pydicom.dcmread(source).SOPClassUID


def test_big_endian_and_files_without_preamble_fall_back_to_pydicom(archives, tmp_path):
    fast, slow = _configs("dicom", tmp_path)
    big = tmp_path / "big.dcm"
    ds = pydicom.dcmread(archives["small"][0])
    for _ in ds.iterall():  # convert: raw little-endian bytes cannot be written big endian
        pass
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    pydicom.dcmwrite(big, ds, enforce_file_format=True)
    bare = tmp_path / "bare.dcm"
    bare.write_bytes(archives["small"][1].read_bytes()[132:])  # no preamble, no DICM: read as force=True
    writers = _compare([big, bare], fast, slow)
    assert writers == Counter({"pydicom": 2})


def test_a_value_pydicom_cannot_convert_fails_the_same_way_on_both_paths(archives, tmp_path):
    fast, slow = _configs("dicom", tmp_path)
    path = tmp_path / "bad-ds.dcm"
    ds = pydicom.dcmread(archives["small"][0])
    ds._dict[pydicom.tag.Tag(0x00189327)] = RawDataElement(  # TablePosition, FD: 5 bytes
        pydicom.tag.Tag(0x00189327), "FD", 6, b"abcdef", 0, False, True)
    ds.save_as(path, enforce_file_format=True)
    fast_row, slow_row = process_file(str(path), None, fast), process_file(str(path), None, slow)
    assert fast_row["status"] == slow_row["status"] == "failed"
    assert fast_row["reason"] == slow_row["reason"]


def test_the_walker_refuses_what_it_cannot_read_exactly():
    head = b"\x00" * 128 + b"DICM"
    with pytest.raises(raw.Unsupported):
        raw.walk_file(b"\x00" * 64)
    element = b"\x10\x00\x10\x00" + b"PN" + b"\x04\x00" + b"DOE "
    assert [r.tag for r in raw.walk(element, 0, len(element), implicit=False)] == [0x00100010]
    with pytest.raises(raw.Unsupported):  # not a VR
        raw.walk(b"\x10\x00\x10\x00\x04\x00\x00\x00DOE ", 0, 12, implicit=False)
    with pytest.raises(raw.Unsupported):  # value longer than the bytes
        raw.walk(element[:-2], 0, len(element) - 2, implicit=False)
    twice = element + element
    with pytest.raises(raw.Unsupported):  # out of tag order
        raw.walk(twice, 0, len(twice), implicit=False)
    assert raw.walk_file(head + element) == ([], 132)


def test_rewrite_declines_a_dataset_that_is_not_from_these_bytes(archives):
    a, b = archives["small"][0], archives["small"][1]
    ds = pydicom.dcmread(a)
    assert rewrite(ds, b.read_bytes()) is None


def test_the_direct_path_copies_untouched_elements_and_passes_pixel_data_through(archives, tmp_path):
    fast, _ = _configs("dicom", tmp_path)
    source = archives["ct"][0]
    row = process_file(str(source), None, fast)
    assert row["writer"] == "raw"
    out = Path(row["output"]).read_bytes()
    pixels = pydicom.dcmread(source).PixelData
    assert len(pixels) == 512 * 512 * 2 and pixels in out
    kept = pydicom.dcmread(source, stop_before_pixels=True).get_item(0x00280030)  # PixelSpacing
    assert source.read_bytes()[kept.value_tell - 8:kept.value_tell + kept.length] in out
    written = pydicom.dcmread(row["output"])
    assert "PatientName" not in written and "SOPInstanceUID" not in written
    assert written.PatientIdentityRemoved == "YES" and not any(e.tag.is_private for e in written)


#: every kind of step the direct path runs, with the interactions the engine pins: KEEP (at every
#: depth), REMOVE shielded by REPLACE, nested uids, private creators, ADD on an existing element,
#: REMOVE after ADD, values invalid for their VR, a missing variable
BUSY_RECIPE = """FORMAT dicom

%header

KEEP StudyDescription
KEEP contains:Pixel
REPLACE PatientName ANONYMOUS^PATIENT
REPLACE StudyDate var:study_date
REPLACE StationName THIS-IS-A-VERY-LONG-STATION-NAME
REPLACE Rows not-a-number
REPLACE InstanceNumber var:instance
REPLACE endswith:InstanceUID deid_func:hmac_uid
REPLACE (0009,"ACME PRIVATE 1.0",10) PRIVATE^NAME
BLANK InstitutionName
BLANK startswith:Referring
REMOVE (0040,0275)__0__(0008,0050)
REMOVE select:group:0032
REMOVE contains:Date
ADD PatientIdentityRemoved YES
ADD PatientAge 042Y
ADD StudyID var:study_id
REMOVE PatientAge
ADD Modality XX
REPLACE AccessionNumber var:missing
REMOVE endswith:Name
"""


#: SpecificCharacterSet as other software writes it (standard, misspelled, unknown, a stand-alone
#: encoding among several, padded, empty), each file written twice (the conversion is reused)
CHARSET_SPELLINGS = [b"ISO_IR 100", b"ISO_IR100", b"ISO IR 100", b"iso_ir 100", b" ISO_IR 100", b"ISO_IR 100 ",
                     b"ISO_IR 192\\ISO 2022 IR 87", b"ISO 2022 IR 100\\ISO_IR 192", b"\\ISO 2022 IR 100",
                     b"NOT A CHARSET", b"latin_1", b"ISO_IR 100\\ISO_IR 100", b"", b"ISO_IR 6", b"ISO_IR 192"]


@pytest.mark.parametrize("recipe", ["dicom", "busy"])
def test_charset_spellings_give_the_same_bytes_on_every_path(archives, tmp_path, recipe):
    source = pydicom.dcmread(archives["small"][0])
    files = []
    for i, spelling in enumerate([*CHARSET_SPELLINGS, *CHARSET_SPELLINGS]):
        ds = source.copy()
        for tag, vr, value in ((0x00080005, "CS", spelling), (0x00100010, "PN", b"M\xfcller^J\xf6rg"),
                               (0x00081030, "LO", b"Cr\xe2ne"), (0x00081010, "SH", b"Stati\xf6n")):
            ds._dict[pydicom.tag.Tag(tag)] = RawDataElement(pydicom.tag.Tag(tag), vr, len(value), value, 0,
                                                            False, True)
        path = tmp_path / "in" / f"charset{i}.dcm"
        path.parent.mkdir(exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    recipe_path = tmp_path / "deid.charsets"
    recipe_path.write_text("FORMAT dicom\n%header\nREPLACE StudyDescription Zürich\nREPLACE PatientName "
                           "Ærøskøbing\nKEEP StationName\n", encoding="utf-8")
    fast, slow = _configs("dicom" if recipe == "dicom" else str(recipe_path), tmp_path,
                          base=UNSET if recipe == "dicom" else None)
    writers = _compare(files, fast, slow)
    assert writers["raw"] >= len(files) // 2


@pytest.mark.parametrize("variables", [None, {"study_date": "20200101", "instance": "7", "study_id": "S1"}],
                         ids=["no-variables", "variables"])
@pytest.mark.parametrize("remove_private", [True, False], ids=["remove-private", "keep-private"])
@pytest.mark.parametrize("kind", ["small", "undefined-lengths", "odd-padding", "implicit-vr", "deid-data"])
def test_every_direct_step_gives_the_engines_result(archives, tmp_path, kind, remove_private, variables):
    recipe = tmp_path / "deid.busy"
    recipe.write_text(BUSY_RECIPE)
    fast, slow = _configs(str(recipe), tmp_path, remove_private=remove_private, base=None)
    writers = _compare(archives[kind], fast, slow, variables)
    if kind in DIRECT_KINDS:
        assert writers == Counter({"raw": len(archives[kind])})


@pytest.mark.parametrize("recipe", [None, "dicom"], ids=["default", "dicom"])
def test_pydicoms_own_test_files_give_the_same_bytes_on_every_path(tmp_path, recipe):
    from pydicom.data import get_testdata_files

    files = [Path(p) for p in get_testdata_files("*.dcm") if os.path.getsize(p) < 600_000]
    assert len(files) > 50
    local = tmp_path / "in"
    local.mkdir()
    copies = []
    for i, path in enumerate(sorted(files)):
        copy = local / f"{i:03d}-{path.name}"
        copy.write_bytes(path.read_bytes())
        copies.append(copy)
    fast, slow = _configs(recipe, tmp_path)
    writers = _compare(copies, fast, slow)
    assert writers["raw"] > 10  # the explicit VR little endian ones


def test_the_direct_path_declines_what_it_cannot_prove(archives, tmp_path):
    fast, slow = _configs("dicom", tmp_path)
    un = tmp_path / "un.dcm"
    ds = pydicom.dcmread(archives["small"][0])
    ds.add_new(0x00091099, "UN", b"\x01\x02")  # pydicom may read a UN element as another VR
    ds.save_as(un, enforce_file_format=True)
    nested_charset = tmp_path / "nested-charset.dcm"
    ds = pydicom.dcmread(archives["small"][1])
    ds.RequestAttributesSequence[0].SpecificCharacterSet = "ISO_IR 100"
    ds.save_as(nested_charset, enforce_file_format=True)
    writers = _compare([un, nested_charset], fast, slow)
    assert writers["raw"] == 0 and sum(writers.values()) == 2  # the engine's path, same bytes


def test_ps315_recipes_give_the_same_bytes_on_every_path(archives, tmp_path):
    for recipe in (["ps3.15-basic"], ["ps3.15-basic", "ps3.15-retain-uids", "ps3.15-retain-modified-dates"]):
        fast, slow = _configs(recipe, tmp_path / "-".join(recipe))
        _compare(archives["small"][:4], fast, slow)


# ------------------------------------------------------------------------ property: generated headers
_VALUE_VRS = ["LO", "SH", "PN", "CS", "DA", "DS", "IS", "UI", "LT", "US", "UL", "FD", "OB"]


def _raw_value(vr: str, data: bytes) -> bytes:
    return data if len(data) % 2 == 0 or vr in ("LO", "SH", "CS", "IS", "DS", "DA", "UI", "FD") else data + b" "


@hypothesis.settings(max_examples=60, deadline=None, derandomize=True,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(
    seed=st.integers(0, 10_000),
    charset=st.sampled_from([None, "ISO_IR 100", "ISO_IR 192"]),
    name=st.text(st.characters(codec="latin-1", exclude_categories=["Cc", "Cs"]), max_size=12),
    extra=st.lists(st.tuples(st.sampled_from([0x00081030, 0x00101000, 0x00091020, 0x00091021, 0x00200013,
                                              0x00181030, 0x00321060, 0x00400254]),
                             st.sampled_from(_VALUE_VRS), st.binary(max_size=9)), max_size=4),
    undefined=st.booleans(),
    recipe=st.sampled_from(["dicom", None]),
    implicit=st.booleans(),
)
def test_generated_headers_give_the_same_bytes_on_every_path(archives, tmp_path, seed, charset, name, extra,
                                                            undefined, recipe, implicit):
    """Any header the walker reads: the three paths agree (values odd, non-ASCII, mis-typed; in
    implicit VR a private element of an unknown creator is UN, mis-typed ones get the dictionary's)."""
    source = archives["small"][seed % len(archives["small"])]
    ds = pydicom.dcmread(source)
    if charset is None:
        ds.pop(0x00080005, None)
    else:
        ds.SpecificCharacterSet = charset
    ds.PatientName = name
    for tag, vr, data in extra:
        if tag >> 16 == 0x0009:
            ds._dict[pydicom.tag.Tag(0x00090010)] = RawDataElement(
                pydicom.tag.Tag(0x00090010), "LO", 16, b"ACME PRIVATE 1.0", 0, False, True)
        value = _raw_value(vr, data)
        ds._dict[pydicom.tag.Tag(tag)] = RawDataElement(pydicom.tag.Tag(tag), vr, len(value), value, 0,
                                                        False, True)
    path = tmp_path / f"case-{seed}.dcm"
    try:
        if implicit:
            _implicit(ds)
        if undefined:
            _undefined_lengths(ds)
        ds.save_as(path, enforce_file_format=True)
    except Exception:  # noqa: BLE001 - pydicom cannot write this case at all: nothing to compare
        hypothesis.reject()
    out = tmp_path / f"out-{seed}"
    fast, slow = _configs(recipe, out)
    for writer in _compare([path], fast, slow):
        # --hypothesis-show-statistics: how many went direct, in each encoding
        hypothesis.event(f"writer {writer}{' (implicit VR)' if implicit else ''}")
    shutil.rmtree(out, ignore_errors=True)


#: character sets as files carry them (single, multi-valued with code extensions, unknown)
_CHARSETS = [None, "", "ISO_IR 100", "ISO_IR 192", "ISO_IR 144", "ISO_IR 13", "ISO 2022 IR 6",
             ["ISO 2022 IR 6", "ISO 2022 IR 87"], ["", "ISO 2022 IR 87"], "ISO 2022 IR 87",
             ["ISO 2022 IR 13", "ISO 2022 IR 87"], "ISO 2022 IR 149", "GB18030", "GBK",
             "ISO_IR 166", "ISO_IR 58", "ISO 2022 IR 58", "NOT A CHARSET"]
_TEXT_ELEMENTS = {"AE": 0x00080054, "AS": 0x00101010, "CS": 0x00120062, "DA": 0x00080020,
                  "DT": 0x0008002A, "TM": 0x00080030, "UR": 0x00081190, "UI": 0x00080018,
                  "LO": 0x00120063, "LT": 0x00184000, "SH": 0x00200010, "ST": 0x00081040,
                  "UC": 0x00080119, "UT": 0x00120064, "PN": 0x00100010, "DS": 0x00101030,
                  "IS": 0x00200013}


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(vr=st.sampled_from(sorted(_TEXT_ELEMENTS)), charset=st.sampled_from(_CHARSETS),
                  value=st.one_of(st.text(max_size=40), st.text(st.characters(max_codepoint=0x7F),
                                                                max_size=40),
                                  st.sampled_from(["", "YES", "1.2.840.10008.1", "20200101", "A\\B"])),
                  implicit=st.booleans())
def test_text_elements_built_directly_are_the_bytes_pydicoms_writer_gives(vr, charset, value, implicit):
    """The direct path writes an ASCII text value itself; whatever it writes is pydicom's bytes."""
    import warnings

    from pydicom.dataelem import DataElement
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    from deid_batch.dicom.elements import encode_str as _encode_str

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            element = DataElement(_TEXT_ELEMENTS[vr], vr, value)
        except Exception:  # noqa: BLE001 - pydicom refuses the value itself
            hypothesis.reject()
        direct = _encode_str(element, charset, implicit)
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, implicit
        try:
            write_data_element(fp, element, charset)
        except Exception:  # noqa: BLE001 - pydicom cannot write it: the direct path must not either
            assert direct is None
            return
    if direct is not None:
        hypothesis.event("built directly")
        assert direct == fp.getvalue()
    elif vr not in ("PN", "DS", "IS") and type(element.value) is str and value.isascii() and \
            charset in (None, "", "ISO_IR 100", "ISO_IR 192"):
        raise AssertionError("an ASCII str of a plain character set should be built directly")


def _canonical_reference(tag: int, vr: str, value: bytes) -> bool:
    """The element-copy rule written out step by step (the first implementation of
    ``rewrite._canonical``, which now matches one pattern per VR)."""
    import re as _re

    from deid_batch.dicom import rewrite as rw

    size = rw._NUMBER_SIZES.get(vr)
    if size is not None:
        return len(value) % size == 0 and tag not in rw._LUT_DESCRIPTORS
    if vr in rw._BULK_VRS:
        return len(value) % 2 == 0
    if vr == "FL":
        return len(value) % 4 == 0 and all(v == v for (v,) in rw._FL.iter_unpack(value))
    if vr not in rw._TEXT_VRS or len(value) % 2:
        return False
    pad = b"\x00" if vr == "UI" else b" "
    core = value[:-1] if value.endswith(pad) else value
    if core is not value and len(core) % 2 == 0:
        return False
    if core.endswith(b" ") or core.translate(None, bytes(range(0x20, 0x7F))):
        return False
    if vr in rw._WHOLE_VRS or not core:
        return True
    if core.startswith(b" ") or b" \\" in core or b"\\ " in core:
        return False
    if vr == "IS":
        return all(_re.match(rb"[+-]?[0-9]+\Z", v) for v in core.split(b"\\"))
    if vr == "DS":
        return all(_re.match(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z", v)
                   for v in core.split(b"\\"))
    return True


_VALUE_BYTES = st.one_of(
    st.lists(st.sampled_from([b" ", b"\\", b"\x00", b"1", b"0", b".", b"+", b"-", b"e", b"E", b"A",
                              b"z", b"^", b"\xe9", b"\n", b"~"]), max_size=12).map(b"".join),
    st.binary(max_size=12))


@hypothesis.settings(max_examples=3000, deadline=None)
@hypothesis.given(vr=st.sampled_from(sorted(["AE", "AS", "CS", "DA", "DT", "TM", "UI", "LO", "SH", "UC",
                                             "PN", "IS", "DS", "LT", "ST", "UT", "UR", "US", "FL", "OB",
                                             "SQ", "UN", "AT"])),
                  value=_VALUE_BYTES)
def test_the_element_copy_rule_is_the_step_by_step_rule(vr, value):
    from deid_batch.dicom.rewrite import _canonical

    assert _canonical(0x00091010, vr, value) == _canonical_reference(0x00091010, vr, value)
    if _canonical(0x00091010, vr, value):
        hypothesis.event("copied")


def test_an_ambiguous_vr_the_recipe_changes_sends_the_file_to_the_engine(archives, tmp_path):
    """Implicit VR elements typed for copying only (US or SS, OB or OW): a recipe that changes one
    needs pydicom's choice of VR, so the direct path declines; the bytes are the engine's."""
    recipe = tmp_path / "deid.ambiguous"
    recipe.write_text("FORMAT dicom\n\n%header\n\nBLANK PixelPaddingValue\nREPLACE SmallestImagePixelValue 5\n")
    fast, slow = _configs(str(recipe), tmp_path, base=None)
    files = archives["implicit-ambiguous"] + archives["implicit-ambiguous-signed"]
    writers = _compare(files, fast, slow)
    assert writers["raw"] == 0 and sum(writers.values()) == len(files)
    removed = tmp_path / "deid.removed"
    removed.write_text("FORMAT dicom\n\n%header\n\nREMOVE PixelPaddingValue\nREMOVE OverlayData\n")
    fast, slow = _configs(str(removed), tmp_path / "removed", base=None)
    assert _compare(files, fast, slow) == Counter({"raw": len(files)})  # removing needs no VR

"""The compiled plan (:mod:`deid_batch.recipe.plan`) gives exactly what the generic engine gives.

``deidentify_dataset`` runs a recipe through its plan (whitelist ``REMOVE ALL`` decided per
top-level element, plain REMOVE runs batched); ``deidentify_dataset_generic`` runs every header
action on its own. For generated datasets (nested and private sequences, private blocks, file
meta, skip-listed elements, raw and converted elements) and generated recipes, both must write
the same bytes and the same warnings, or fail with the same error.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from deid_batch.dicom.writing import encode
from deid_batch.recipe.engine import EngineOptions, deidentify_dataset, deidentify_dataset_generic, plan_of
from deid_batch.recipe.parse import load_recipe
from deid_batch.recipe.plan import RemoveBatch

OPTIONS = EngineOptions(uid_key=b"k" * 32)
VARIABLES = {"x": "VALUE", "uid": "1.2.3.4"}
UID = "1.2.826.0.1.3680043.8.498."

# ----------------------------------------------------------------------------------- datasets
#: (keyword, VR, value strategy) of plain top-level / nested elements
PLAIN = [
    ("SpecificCharacterSet", st.sampled_from(["ISO_IR 100", "ISO_IR 192", ""])),
    ("ImageType", st.sampled_from(["ORIGINAL\\PRIMARY", "DERIVED"])),
    ("SOPClassUID", st.just("1.2.840.10008.5.1.4.1.1.2")),
    ("SOPInstanceUID", st.integers(1, 50).map(lambda i: f"{UID}1.{i}")),
    ("StudyInstanceUID", st.integers(1, 5).map(lambda i: f"{UID}2.{i}")),
    ("SeriesInstanceUID", st.integers(1, 5).map(lambda i: f"{UID}3.{i}")),
    ("StudyDate", st.sampled_from(["20200101", "", "19991231"])),
    ("StudyTime", st.sampled_from(["101010", "235959.123"])),
    ("AccessionNumber", st.text("AB0129", max_size=10)),
    ("Modality", st.sampled_from(["CT", "MR", ""])),
    ("InstitutionName", st.text("Kölnabc ^", max_size=12)),
    ("PatientName", st.sampled_from(["DOE^JANE", "Müller^Jürgen", "", "A^B^C"])),
    ("PatientID", st.text("XYZ019", min_size=1, max_size=8)),
    ("PatientWeight", st.sampled_from(["78", "70.5", ""])),
    ("Rows", st.integers(1, 512)),
    ("Columns", st.integers(1, 512)),
    ("BitsAllocated", st.sampled_from([8, 16])),
    ("WindowCenter", st.sampled_from(["40", "40\\400"])),
    ("RescaleSlope", st.sampled_from(["1", "0.5"])),
    ("CodeValue", st.text("C0123", min_size=1, max_size=6)),
    ("CodeMeaning", st.text("meaning ", max_size=10)),
    ("ImageComments", st.text("note ÄÖ", max_size=20)),
]
SEQUENCES = ["RequestAttributesSequence", "ReferencedStudySequence", "OtherPatientIDsSequence",
             "ModalityLUTSequence", "VOILUTSequence", "ContentSequence",
             "ProcedureCodeSequence"]


@st.composite
def items(draw: st.DrawFn, depth: int) -> Dataset:
    ds = Dataset()
    for keyword, values in draw(st.lists(st.sampled_from(PLAIN), max_size=5 if depth else 14,
                                         unique_by=lambda p: p[0])):
        setattr(ds, keyword, draw(values))
    if draw(st.booleans()):
        creator = draw(st.sampled_from(["ACME PRIVATE 1.0", "SIEMENS CSA HEADER", "X"]))
        block = ds.private_block(0x0009, creator, create=True)
        block.add_new(0x10, "LO", draw(st.text("privé", max_size=8)))
        if draw(st.booleans()):
            block.add_new(0x11, "OB", draw(st.binary(max_size=9)))
        if depth < 2 and draw(st.booleans()):
            block.add_new(0x12, "SQ", Sequence([draw(items(depth + 1))]))
    if draw(st.booleans()):
        ds.add_new(0x00291010, "UN", draw(st.binary(max_size=8)))
    if depth < 3:
        for keyword in draw(st.lists(st.sampled_from(SEQUENCES), max_size=3 if depth else 5,
                                     unique=True)):
            seq = Sequence(draw(st.lists(items(depth + 1), max_size=2)))
            seq.is_undefined_length = draw(st.booleans())
            setattr(ds, keyword, seq)
    return ds


@st.composite
def dicom_bytes(draw: st.DrawFn) -> bytes:
    ds = draw(items(0))
    if draw(st.booleans()):
        ds.add_new(0x7FE00010, "OW", b"\x00\x01" * 8)
    meta = FileMetaDataset()
    implicit = draw(st.booleans())
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    if draw(st.booleans()):
        meta.MediaStorageSOPInstanceUID = f"{UID}9.9"
    if draw(st.booleans()):
        meta.ImplementationVersionName = "SOMEWRITER"
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=implicit, little_endian=True, enforce_file_format=False)
    return buf.getvalue()


# ------------------------------------------------------------------------------------ recipes
KEEPABLE = ["SOPClassUID", "Modality", "Rows", "Columns", "BitsAllocated", "WindowCenter",
            "RescaleSlope", "ModalityLUTSequence", "CodeValue", "(0008,0104)", "00100010",
            "SpecificCharacterSet", "MediaStorageSOPClassUID", "ImplementationVersionName",
            "RequestAttributesSequence", "RequestAttributesSequence__AccessionNumber",
            "(0040,0275)__0__(0008,0050)", "00091010", '(0009,"ACME PRIVATE 1.0",10)',
            "contains:Window", "startswith:Rescale", "endswith:Sequence", "except:Patient",
            "select:group:0028", "Nonexistent"]
REPLACEABLE = [
    ("SOPInstanceUID", "deid_func:hmac_uid"), ("StudyInstanceUID", "deid_func:hmac_uid"),
    ("SeriesInstanceUID", "deid_func:hmac_uid"), ("PatientName", "ANON"), ("PatientID", "var:x"),
    ("AccessionNumber", "var:missing"), ("StudyDate", "20000101"), ("(0008,0080)", "INST"),
    ("00101030", "55"), ("Rows", "12"), ("Rows", "abc"), ("endswith:Date", "19990101"),
    ("contains:InstanceUID", "deid_func:hmac_uid"), ("CodeValue", "CV"),
    ("MediaStorageSOPInstanceUID", "1.2.3"), ("00091010", "PRIV"),
    ("ModalityLUTSequence", "oops"), ("RequestAttributesSequence", "deid_func:hmac_uid"),
    ("select:group:0010", "G"), ("PatientWeight", "var:x"),
]
AFTER = [
    "ADD PatientIdentityRemoved YES", "ADD DeidentificationMethod deid_batch",
    "ADD PatientID var:x", "ADD StudyDate var:missing", "ADD SOPInstanceUID 1.2.3.4",
    "ADD Rows 7", "ADD MediaStorageSOPInstanceUID 1.2.3", "ADD 11112221 SIMPSON",
    "BLANK PatientName", "BLANK SOPClassUID", "REMOVE Modality", "REMOVE contains:UID",
    "JITTER StudyDate 5", "KEEP values:v", "REPLACE values:x Y", "BLANK ALL",
]


@st.composite
def whitelist_recipes(draw: st.DrawFn) -> str:
    before = [f"KEEP {k}" for k in draw(st.lists(st.sampled_from(KEEPABLE), max_size=4))]
    after: list[str] = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["KEEP", "REPLACE", "REPLACE", "JITTER", "OTHER"]))
        if kind == "KEEP":
            after.append(f"KEEP {draw(st.sampled_from(KEEPABLE))}")
        elif kind == "REPLACE":
            fld, value = draw(st.sampled_from(REPLACEABLE))
            after.append(f"REPLACE {fld} {value}")
        elif kind == "JITTER":
            after.append(f"JITTER {draw(st.sampled_from(['StudyDate', 'endswith:Date']))} 3")
        else:
            after.append(draw(st.sampled_from(AFTER)))
    return "\n".join(["FORMAT dicom", "%header", *before, "REMOVE ALL", *after]) + "\n"


REMOVABLE = KEEPABLE + ["endswith:Time", "endswith:ID", "contains:UID", "PatientName",
                        "OtherPatientIDsSequence", "contains:Private", "startswith:Request",
                        "ALL", "all", "select:VR:PN", "jitter"]


@st.composite
def remove_recipes(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(["REMOVE"] * 6 + ["REPLACE", "ADD", "KEEP", "BLANK"]))
        if kind == "REMOVE":
            lines.append(f"REMOVE {draw(st.sampled_from(REMOVABLE))}")
        elif kind == "REPLACE":
            fld, value = draw(st.sampled_from(REPLACEABLE))
            lines.append(f"REPLACE {fld} {value}")
        elif kind == "ADD":
            lines.append(draw(st.sampled_from(AFTER[:8])))
        else:
            lines.append(f"{kind} {draw(st.sampled_from(KEEPABLE))}")
    return "\n".join(["FORMAT dicom", "%header", *lines]) + "\n"


# ---------------------------------------------------------------------------------- comparing
def outcome(engine, data: bytes, recipe, options: EngineOptions = OPTIONS):
    """What one engine makes of a file: (bytes, warnings), or the error it raises."""
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    character_set = ds.get("SpecificCharacterSet")
    try:
        result = engine(ds, recipe, VARIABLES, options=options, source="f.dcm")
    except Exception as exc:  # noqa: BLE001 - the error itself is compared
        return ("raised", type(exc).__name__, str(exc))
    try:
        return ("written", encode(result.dataset, character_set=character_set), result.warnings)
    except Exception as exc:  # noqa: BLE001
        return ("unwritable", type(exc).__name__, result.warnings)


def assert_same(data: bytes, recipe, options: EngineOptions = OPTIONS) -> None:
    fast = outcome(deidentify_dataset, data, recipe, options)
    generic = outcome(deidentify_dataset_generic, data, recipe, options)
    assert fast == generic


def recipe_from(tmp_path: Path, text: str):
    path = tmp_path / "deid.recipe"
    path.write_text(text)
    return load_recipe(str(path))


_SETTINGS = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.function_scoped_fixture])


@_SETTINGS
@given(data=dicom_bytes(), text=whitelist_recipes(), remove_private=st.booleans(),
       disable_skip=st.booleans())
def test_whitelist_shortcut_writes_what_the_generic_engine_writes(
        tmp_path, data, text, remove_private, disable_skip) -> None:
    recipe = recipe_from(tmp_path, text)
    assert plan_of(recipe).whitelist is not None
    options = EngineOptions(uid_key=b"k" * 32, remove_private=remove_private,
                            disable_skip=disable_skip)
    assert_same(data, recipe, options)


@_SETTINGS
@given(data=dicom_bytes())
def test_default_recipe_on_generated_files_matches_the_generic_engine(data) -> None:
    assert_same(data, load_recipe(None))


@_SETTINGS
@given(data=dicom_bytes(), text=remove_recipes())
def test_batched_removes_write_what_one_by_one_removes_write(tmp_path, data, text) -> None:
    assert_same(data, recipe_from(tmp_path, text))


# ------------------------------------------------------------------------- real sample files
def _samples() -> list[Path]:
    deid_data = pytest.importorskip("deid_data")
    root = Path(deid_data.__file__).parent / "data"
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".zip"
                  and p.stat().st_size < 20_000_000 and not p.name.startswith("."))


@pytest.mark.parametrize("recipe_name", [None, "dicom"])
def test_default_and_deid_recipes_on_deid_data_samples_match_the_generic_engine(recipe_name):
    samples = _samples()
    assert samples
    recipe = load_recipe(recipe_name)
    for path in samples:
        assert_same(path.read_bytes(), recipe)


# ------------------------------------------------------------------------------- the plans
def test_the_default_recipe_is_a_whitelist_and_deids_dicom_recipe_is_batched():
    default = plan_of(load_recipe(None))
    assert default.whitelist is not None
    assert not any(a.action == "KEEP" for a in default.whitelist.after)
    assert [a.action for a in default.whitelist.after] == ["REPLACE"] * 3
    dicom = plan_of(load_recipe("dicom"))
    assert dicom.whitelist is None
    kinds = [type(s).__name__ if isinstance(s, RemoveBatch) else s.action for s in dicom.steps]
    assert kinds == ["RemoveBatch"] + ["ADD"] * 6 + ["RemoveBatch"]
    assert len(dicom.steps[0].actions) == 66  # then 6 ADD, then "REMOVE jitter"


@pytest.mark.parametrize("text", [
    "REPLACE PatientID x\nREMOVE ALL\n",  # an action before REMOVE ALL
    "KEEP values:v\nREMOVE ALL\n",  # a KEEP that reads values before REMOVE ALL
    "REMOVE ALL\nREPLACE select:VR:PN x\n",  # a shield that reads the element
    "REMOVE ALL x\n",  # conditional
    "KEEP Modality\nREMOVE contains:UID\n",  # not REMOVE ALL
    "%values v\nFIELD PatientID\n%header\nREMOVE ALL\n",  # lists need the full index
])
def test_recipes_outside_the_whitelist_shape_take_the_generic_path(tmp_path, text):
    if not text.startswith("%"):
        text = "%header\n" + text
    assert plan_of(recipe_from(tmp_path, "FORMAT dicom\n" + text)).whitelist is None


def test_a_shielded_sequence_falls_back_to_the_generic_path(tmp_path):
    ds = Dataset()
    ds.SOPInstanceUID = f"{UID}1"
    inner = Dataset()
    inner.CodeValue = "X"
    ds.RequestAttributesSequence = Sequence([inner])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.preamble = b"\x00" * 128
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    recipe = recipe_from(tmp_path, "FORMAT dicom\n%header\nREMOVE ALL\n"
                         "REPLACE RequestAttributesSequence deid_func:hmac_uid\n")
    assert plan_of(recipe).whitelist is not None
    assert_same(buf.getvalue(), recipe)


def test_a_recipe_pickles_without_its_plan_and_compiles_it_again():
    recipe = load_recipe(None)
    assert plan_of(recipe).whitelist is not None
    clone = pickle.loads(pickle.dumps(recipe))
    assert clone == recipe
    assert "plan" not in clone.__dict__
    assert plan_of(clone) == plan_of(recipe)


def test_a_malformed_sequence_that_remove_all_drops_still_fails_as_in_the_generic_engine():
    """deid indexes (so parses) every sequence before any action: a sequence pydicom cannot
    parse fails the dataset even when the recipe would remove it; the shortcut parses it too."""
    ds = Dataset()
    ds.SOPInstanceUID = f"{UID}1"
    ds.Modality = "CT"
    inner = Dataset()
    inner.CodeValue = "ABCD"
    seq = Sequence([inner])
    seq.is_undefined_length = False
    ds.ProcedureCodeSequence = seq  # the last element: its declared length can overrun the file
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.preamble = b"\x00" * 128
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    data = buf.getvalue()
    at = data.find(b"\x08\x00\x32\x10SQ\x00\x00")
    length = int.from_bytes(data[at + 8:at + 12], "little")
    bad = data[:at + 8] + (length + 4).to_bytes(4, "little") + data[at + 12:] + b"\x01\x02\x03\x04"
    fast = outcome(deidentify_dataset, bad, load_recipe(None))
    assert fast[0] == "raised"
    assert fast == outcome(deidentify_dataset_generic, bad, load_recipe(None))

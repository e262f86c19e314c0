"""Property tests (issue 4, part 8): random recipes over random datasets.

Either the recipe is refused at load time with a RecipeError (and nothing is written), or every
input is processed: the manifest has exactly one row per input, each ``written`` or ``failed``
with a reason code, and every written output is a readable DICOM file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow as pa
import pydicom
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from deid_batch.api import run_apply
from deid_batch.errors import RecipeError
from deid_batch.schemas import Reason
from tests.hostile import build_dataset, make_dicom, manifest_rows

ACTIONS = ["ADD", "BLANK", "JITTER", "KEEP", "REPLACE", "REMOVE", "LABEL", "FROB", "add", ""]
FIELDS = ["PatientName", "PatientID", "StudyDate", "AccessionNumber", "SOPInstanceUID", "ALL", "all",
          "contains:Patient", "startswith:Study", "endswith:Date", "except:Rows", "select:VR:PN",
          "select:group:0010", "(0010,0010)", "00100020", "(0009,\"ACME PRIVATE\",01)",
          "RequestAttributesSequence", "(0040,0275)__0__(0008,0050)", "values:names", "fields:dates",
          "Nonexistent", "!!bad", "PixelData", "Rows", "ContentSequence", "(0009,1001)"]
VALUES = ["", "x", "var:id", "var:missing", "func:nope", "deid_func:hmac_uid", "deid_func:nope",
          "-10", "30", "abc", "19990101", "1.2.3.4", "70000", "var:", "func:"]

KEYWORDS = ["PatientName", "PatientID", "StudyDate", "AccessionNumber", "InstitutionName",
            "PatientIdentityRemoved", "DeidentificationMethod", "ImageComments"]
random_line = st.builds(lambda a, f, v: " ".join(x for x in (a, f, v) if x),
                        st.sampled_from(ACTIONS), st.sampled_from(FIELDS), st.sampled_from(VALUES))
valid_line = st.one_of(
    st.builds("REMOVE {}".format, st.sampled_from(FIELDS)),
    st.builds("KEEP {}".format, st.sampled_from(FIELDS)),
    st.builds("BLANK {}".format, st.sampled_from(FIELDS)),
    st.builds("REPLACE {} {}".format, st.sampled_from(FIELDS), st.sampled_from(VALUES[1:])),
    st.builds("ADD {} {}".format, st.sampled_from(KEYWORDS), st.sampled_from(VALUES[1:])),
    st.builds("JITTER {} {}".format, st.sampled_from(["StudyDate", "PatientBirthDate", "endswith:Date",
                                                      "ContentSequence"]),
              st.sampled_from(["-10", "30", "0", "var:id", "abc"])),
)
line = st.one_of(valid_line, valid_line, valid_line, random_line)
extra = st.sampled_from(["", "%values names", "SPLIT|PatientName", "%fields dates",
                         "FIELD startswith:Study", "FIELD endswith:Date", "%labels", "# comment"])
recipes = st.builds(
    lambda head, lines, extras: "\n".join([head, "", "%header", "", *lines, *extras]) + "\n",
    st.sampled_from(["FORMAT dicom"] * 8 + ["FORMAT png", ""]),
    st.lists(line, min_size=0, max_size=8),
    st.lists(extra, max_size=1),
)


@st.composite
def datasets(draw: st.DrawFn, i: int = 0) -> Dataset:
    ds = build_dataset(draw(st.integers(0, 10_000)))
    for keyword in draw(st.lists(st.sampled_from(
            ["PatientName", "StudyDate", "AccessionNumber", "RequestAttributesSequence",
             "InstitutionName", "PatientBirthDate"]), max_size=4)):
        if keyword in ds:
            del ds[keyword]
    if draw(st.booleans()):
        ds.PatientBirthDate = draw(st.sampled_from(["", "1950", "19501301", "abc", "20000229"]))
    if draw(st.booleans()):
        inner = Dataset()
        inner.PatientID = draw(st.text("ABCxyz019^ ", min_size=0, max_size=12))
        inner.StudyDate = "20200101"
        ds.ContentSequence = Sequence([inner] * draw(st.integers(0, 3)))
    if draw(st.booleans()):
        ds.add_new(0x00091002, "UN", draw(st.binary(max_size=20)))
    return ds


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=recipes, items=st.lists(datasets(), min_size=1, max_size=4), with_map=st.booleans())
def test_random_recipes_either_refused_at_load_or_every_file_accounted(recipe, items, with_map) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sources = sorted(str(make_dicom(tmp / "in" / f"f{i}.dcm", dataset=ds)) for i, ds in enumerate(items))
        (tmp / "in" / "empty.dcm").write_bytes(b"")  # one bad file in every run
        sources = sorted(sources + [str(tmp / "in" / "empty.dcm")])
        (tmp / "deid.recipe").write_text(recipe)
        (tmp / "key").write_bytes(b"ab" * 32)
        variables = None
        if with_map:
            pids = sorted({str(ds.PatientID) for ds in items})
            variables = pa.table({"PatientID": pids, "id": [f"anon{k}" for k in range(len(pids))]})
        try:
            report = run_apply(tmp / "in", recipe=str(tmp / "deid.recipe"), variables=variables,
                               output_folder=str(tmp / "out"), key_file=str(tmp / "key"))
        except RecipeError as exc:
            event("refused at load")
            assert exc.problems
            assert not (tmp / "out").exists() or not any((tmp / "out").rglob("*.dcm"))
            return
        event("processed")
        rows = manifest_rows(report.manifest)
        assert [r[0] for r in rows] == sources  # exactly one row per input
        codes = {r.value for r in Reason}
        for _source, output, status, code, _ in rows:
            assert status in ("written", "failed"), (status, code)
            if status == "failed":
                assert code in codes
            else:
                pydicom.dcmread(output)
        assert dict(rows and [(r[0], r[2]) for r in rows])[str(tmp / "in" / "empty.dcm")] == "failed"

"""The default recipe keeps what its kept attributes need (issue 8 item 6).

FrameIncrementPointer is kept, so every attribute it can point to is kept; an RT Dose keeps
DoseGridScaling with its pixels. Real files shipped by pydicom: an RT Dose (little and big endian),
an NM-derived image whose pointer names EnergyWindowVector and DetectorVector, an ultrasound cine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import keyword_for_tag
from pydicom.uid import NuclearMedicineImageStorage

from deid_batch.api import read_manifest, run_apply
from deid_batch.recipe.parse import load_recipe
from tests.hostile import build_dataset, make_dicom

#: every attribute FrameIncrementPointer may point to (PS3.3 C.7.6.6.1.1, C.8.4.8, C.8.8.3)
POINTER_TARGETS = (
    "FrameTime", "FrameTimeVector", "SliceLocationVector", "FrameLabelVector",
    "FramePrimaryAngleVector", "FrameSecondaryAngleVector", "DisplayWindowLabelVector",
    "GridFrameOffsetVector", "EnergyWindowVector", "DetectorVector", "PhaseVector", "RotationVector",
    "RRIntervalVector", "TimeSlotVector", "SliceVector", "AngularViewVector", "TimeSliceVector",
)


def _outputs(tmp_path: Path, sources: list[str]) -> dict[str, pydicom.Dataset]:
    report = run_apply(sources, output_folder=str(tmp_path / "out"))
    rows = read_manifest(report.manifest).to_pylist()
    assert {r["status"] for r in rows} == {"written"}, [r["reason"] for r in rows]
    return {r["source"]: pydicom.dcmread(r["output"]) for r in rows}


def test_the_default_recipe_keeps_every_frame_increment_pointer_target() -> None:
    kept = {a.field for a in load_recipe(None).header if a.action == "KEEP"}
    assert "FrameIncrementPointer" in kept
    assert not [t for t in POINTER_TARGETS if t not in kept]


def test_an_nm_multiframe_keeps_the_vectors_its_pointer_names(tmp_path: Path) -> None:
    ds = build_dataset(7)
    ds.SOPClassUID = NuclearMedicineImageStorage
    ds.Modality = "NM"
    ds.NumberOfFrames = 4
    ds.Rows = ds.Columns = 4
    ds.PixelData = bytes(4 * 4 * 2 * 4)
    ds.FrameIncrementPointer = [0x00540010, 0x00540020, 0x00540030, 0x00540050, 0x00540060, 0x00540070,
                                0x00540080, 0x00540090, 0x00540100]
    vectors = {"EnergyWindowVector": "NumberOfEnergyWindows", "DetectorVector": "NumberOfDetectors",
               "PhaseVector": "NumberOfPhases", "RotationVector": "NumberOfRotations",
               "RRIntervalVector": "NumberOfRRIntervals", "TimeSlotVector": "NumberOfTimeSlots",
               "SliceVector": "NumberOfSlices", "AngularViewVector": None,
               "TimeSliceVector": "NumberOfTimeSlices"}
    for vector, count in vectors.items():
        setattr(ds, vector, [1, 2, 1, 2])
        if count:
            setattr(ds, count, 2)
    src = make_dicom(tmp_path / "in" / "nm.dcm", dataset=ds)
    out = _outputs(tmp_path, [str(src)])[str(src)]
    assert list(out.FrameIncrementPointer) == list(ds.FrameIncrementPointer)
    for tag in out.FrameIncrementPointer:
        assert keyword_for_tag(tag) in out and list(out[tag].value) == [1, 2, 1, 2], keyword_for_tag(tag)
    for count in filter(None, vectors.values()):
        assert out[count].value == 2
    assert "PatientName" not in out and "PatientID" not in out


@pytest.mark.parametrize("name", ["rtdose.dcm", "rtdose_expb.dcm", "JPEG-lossy.dcm", "examples_ybr_color.dcm"])
def test_real_multiframe_files_keep_every_pointed_attribute(tmp_path: Path, name: str) -> None:
    src = get_testdata_file(name)
    ref = pydicom.dcmread(src)
    out = _outputs(tmp_path, [src])[src]
    pointer = ref.FrameIncrementPointer
    tags = list(pointer) if ref["FrameIncrementPointer"].VM > 1 else [pointer]
    assert tags
    for tag in tags:
        assert tag in out and out[tag].value == ref[tag].value, keyword_for_tag(tag)


@pytest.mark.parametrize("name", ["rtdose.dcm", "rtdose_expb.dcm"])
def test_rt_dose_keeps_its_scaling_and_decodes_to_the_same_dose(tmp_path: Path, name: str) -> None:
    src = get_testdata_file(name)
    ref = pydicom.dcmread(src)
    out = _outputs(tmp_path, [src])[src]
    for keyword in ("DoseGridScaling", "DoseUnits", "DoseType", "DoseSummationType", "GridFrameOffsetVector",
                    "NumberOfFrames"):
        assert out[keyword].value == ref[keyword].value, keyword
    dose_in = ref.pixel_array * float(ref.DoseGridScaling)
    dose_out = out.pixel_array * float(out.DoseGridScaling)
    assert np.array_equal(dose_in, dose_out)
    assert "PatientName" not in out and "StudyDate" not in out

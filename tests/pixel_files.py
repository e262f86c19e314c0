"""Real DICOM files for the pixel tests: deid-data's samples and generated images whose headers
match deid's bundled %filter LABELs, written the way other software writes them (pydicom
``dcmwrite`` with a complete file meta, Explicit VR Little Endian)."""

from __future__ import annotations

import glob
import os
import zipfile
from pathlib import Path

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, generate_uid

US_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def deid_data_files(tmp: Path) -> list[str]:
    """Every sample of deid-data (the zipped cine clips extracted into ``tmp``)."""
    import deid_data

    root = os.path.join(os.path.dirname(deid_data.__file__), "data")
    files = sorted(glob.glob(os.path.join(root, "*", "*.dcm")))
    for z in sorted(glob.glob(os.path.join(root, "ultrasounds", "*.zip"))):
        with zipfile.ZipFile(z) as zf:
            zf.extractall(tmp)
    files += sorted(str(p) for p in tmp.rglob("*") if p.is_file())
    return files


def image(rows: int, columns: int, *, frames: int = 1, samples: int = 1, bits: int = 16,
          signed: bool = False, seed: int = 0) -> np.ndarray:
    """Random pixels: (frames,) rows, columns (, samples), never zero (a blanked pixel shows)."""
    rng = np.random.default_rng(seed)
    dtype = {8: np.uint8, 16: np.int16 if signed else np.uint16, 32: np.uint32}[bits]
    shape: tuple[int, ...] = (rows, columns)
    if frames > 1:
        shape = (frames, *shape)
    if samples > 1:
        shape = (*shape, samples)
    hi = 120 if bits == 8 else 3000
    return rng.integers(1, hi, size=shape).astype(dtype)


def write_image(path: Path, pixels: np.ndarray, *, samples: int = 1, frames: int = 1,
                planar: int = 0, big_endian: bool = False, sop_class: str = CT_STORAGE,
                **header: object) -> str:
    """Write ``pixels`` with ``header`` keywords as a complete DICOM file."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PID-0001"
    for key, value in header.items():
        setattr(ds, key, value)
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples == 3:
        ds.PlanarConfiguration = planar
    if frames > 1:
        ds.NumberOfFrames = frames
    rows, columns = pixels.shape[1:3] if frames > 1 else pixels.shape[:2]
    ds.Rows, ds.Columns = rows, columns
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    data = pixels
    if samples == 3 and planar == 1:  # R plane, G plane, B plane per frame
        data = np.moveaxis(pixels, -1, -3)
    data = data.astype(data.dtype.newbyteorder(">")) if big_endian else data
    raw = data.tobytes()
    ds.PixelData = raw + (b"\0" if len(raw) % 2 else b"")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRBigEndian if big_endian else ExplicitVRLittleEndian
    ds.file_meta = meta
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True, little_endian=not big_endian, implicit_vr=False)
    return str(path)


def ultrasound_regions(*boxes: tuple[int, int, int, int]) -> Sequence:
    items = []
    for x0, y0, x1, y1 in boxes:
        item = Dataset()
        item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
        item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
        items.append(item)
    return Sequence(items)


def bundled_filter_files(folder: Path) -> list[str]:
    """Generated files whose headers match LABELs of deid's bundled recipes (with regions)."""
    out = []
    # dicom graylist "LightSpeed Dose Report": coordinates 0,0,512,121 (and the GE dose series LABELs)
    out.append(write_image(folder / "ct" / "dose.dcm", image(512, 512, seed=1), Modality="CT",
                           Manufacturer="GE MEDICAL SYSTEMS", ManufacturerModelName="LightSpeed VCT",
                           ImageType=["DERIVED", "SECONDARY", "SCREEN SAVE"], SeriesDescription="Dose Report"))
    # dicom graylist "Somatom Localizers": coordinates 0,0,80,85; signed 16-bit
    out.append(write_image(folder / "ct" / "localizer.dcm", image(256, 300, signed=True, seed=2),
                           Modality="CT", Manufacturer="SIEMENS",
                           ManufacturerModelName="SOMATOM Definition AS+",
                           ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], SeriesDescription="Topogram"))
    # a 3D Lab reconstruction whose region (450,0,672,85) runs past the right edge of a 512 image
    out.append(write_image(folder / "ct" / "recon3d.dcm", image(128, 512, seed=3), Modality="CT",
                           Manufacturer="SIEMENS", ManufacturerModelName="SOMATOM Definition AS+",
                           ImageType=["DERIVED", "SECONDARY"], SeriesDescription="3D VRT"))
    # dicom.ultrasound: coordinates all + keepcoordinates from:SequenceOfUltrasoundRegions
    regions = ultrasound_regions((10, 12, 60, 40), (70, 50, 110, 79))
    out.append(write_image(folder / "us" / "grey-cine.dcm", image(80, 120, frames=4, bits=8, seed=4),
                           frames=4, sop_class=US_MULTIFRAME_STORAGE, Modality="US",
                           SequenceOfUltrasoundRegions=regions))
    out.append(write_image(folder / "us" / "rgb.dcm", image(80, 120, samples=3, bits=8, seed=5),
                           samples=3, sop_class=US_STORAGE, Modality="US",
                           SequenceOfUltrasoundRegions=regions))
    out.append(write_image(folder / "us" / "rgb-cine-planar.dcm",
                           image(80, 120, frames=3, samples=3, bits=8, seed=6), frames=3, samples=3,
                           planar=1, sop_class=US_MULTIFRAME_STORAGE, Modality="US",
                           SequenceOfUltrasoundRegions=regions))
    out.append(write_image(folder / "us" / "big-endian.dcm", image(64, 90, seed=7), big_endian=True,
                           sop_class=US_STORAGE, Modality="US",
                           SequenceOfUltrasoundRegions=ultrasound_regions((5, 5, 50, 40))))
    return out

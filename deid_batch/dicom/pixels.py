"""Blank rectangles of every frame in a dataset's pixel data, byte for byte.

Native (uncompressed) pixel data is changed in place as raw bytes: the bytes of each pixel
inside a blanked region become zero (value 0, as deid's ``mask * pixel_array``), every other
byte is left exactly as it was (trailing padding included), whatever the byte order, bit depth,
number of frames or samples per pixel and planar configuration. Encapsulated (compressed) pixel
data is decoded with pydicom's decoders only when the caller allows it, and is then written
uncompressed (Explicit VR Little Endian): nothing is ever re-compressed lossily.

Errors are :class:`~deid_batch.errors.DatasetError` with reason ``burned-in`` and a message that
says what is unsupported and how to proceed; never a header value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from deid_batch.errors import DatasetError

__all__ = ["REASON", "Rect", "blank_regions", "frame_count"]

REASON = "burned-in"

#: ``(x0, y0, x1, y1, keep)``: columns x0:x1 and rows y0:y1 (end-exclusive, inside the frame);
#: ``keep`` restores what earlier rectangles blanked (deid's ``keepcoordinates``)
Rect = tuple[int, int, int, int, bool]


def _fail(message: str) -> DatasetError:
    return DatasetError(REASON, message)


def _int(ds: Dataset, name: str, default: int) -> int:
    try:
        value = ds.get(name)
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        raise _fail(f"{name} is not a number; the pixel data cannot be cleaned") from None


def frame_count(ds: Dataset) -> int:
    return max(1, _int(ds, "NumberOfFrames", 1))


def _mask(rows: int, columns: int, rects: Sequence[Rect]) -> np.ndarray:
    """True where a pixel is blanked, after every rectangle in order (later ones win)."""
    mask = np.zeros((rows, columns), dtype=bool)
    for x0, y0, x1, y1, keep in rects:
        mask[y0:y1, x0:x1] = not keep
    return mask


def _decompress(ds: Dataset, syntax: UID, allow_decode: bool) -> None:
    if not allow_decode:
        raise _fail(f"the pixel data is compressed ({syntax.name}); it was not cleaned. Pass "
                    "--decompress-pixels to decode it, blank the regions and write it uncompressed, "
                    "or decompress the file first")
    try:
        ds.decompress()
    except Exception as exc:  # noqa: BLE001 - no decoder, or data the decoder refuses
        raise _fail(f"the pixel data is compressed ({syntax.name}) and cannot be decoded here "
                    f"({type(exc).__name__}); install a decoder (pylibjpeg, gdcm) or decompress "
                    "the file first") from None


def blank_regions(ds: Dataset, rects: Sequence[Rect], *, allow_decode: bool = False) -> int:
    """Blank ``rects`` in every frame of ``ds.PixelData``; return the number of frames.

    ``ds`` is changed in place (its PixelData, and for compressed input its transfer syntax).
    """
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise _fail("float pixel data cannot be cleaned yet; the file was not written")
        return 0
    meta = getattr(ds, "file_meta", None)
    syntax = UID(str(meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))) if meta is not None else None
    if syntax is not None and syntax.is_encapsulated:
        _decompress(ds, syntax, allow_decode)
    rows, columns = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    samples = max(1, _int(ds, "SamplesPerPixel", 1))
    bits = _int(ds, "BitsAllocated", 0)
    frames = frame_count(ds)
    if bits <= 0 or bits % 8:
        raise _fail(f"BitsAllocated {bits} pixel data cannot be cleaned (whole bytes only)")
    if not rows or not columns:
        raise _fail("Rows or Columns is missing; the regions cannot be placed")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    data = ds.PixelData
    nbytes = bits // 8
    size = frames * rows * columns * samples * nbytes
    if photometric in ("YBR_FULL_422", "YBR_PARTIAL_422") and len(data) < size:
        raise _fail(f"{photometric} (chroma-subsampled) pixel data cannot be cleaned yet")
    if len(data) < size:
        raise _fail("the pixel data is shorter than Rows x Columns x frames; it was not cleaned")
    mask = _mask(rows, columns, rects)
    if not mask.any():
        return frames
    buf = bytearray(data)
    planar = samples > 1 and _int(ds, "PlanarConfiguration", 0) == 1
    flat = np.frombuffer(buf, dtype=np.uint8, count=size)
    # frames, [samples,] rows, columns, bytes: the two pixel axes sit side by side
    view = (flat.reshape(frames * samples, rows, columns, nbytes) if planar
            else flat.reshape(frames, rows, columns, samples * nbytes))
    if any(keep for *_, keep in rects):
        view[:, mask] = 0
    else:  # blanks only: plain slices, no boolean gather
        for x0, y0, x1, y1, _ in rects:
            view[:, y0:y1, x0:x1] = 0
    ds.PixelData = bytes(buf)
    return frames

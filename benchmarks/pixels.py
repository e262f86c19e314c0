"""Cost of ``apply --clean-pixels`` (issue 13, item 4), in one process (no cluster noise).

    python benchmarks/pixels.py [--files 40] [--frames 8] [--rows 256] [--columns 320]

Generates ``--files`` RGB multi-frame ultrasound-like files a filter flags (Modality US, one
region) and as many it does not (Modality CT), and times, with dask's synchronous scheduler:

1. ``apply`` without ``--clean-pixels`` on each half (the header path);
2. ``apply --clean-pixels`` on each half: the unflagged half should cost what the header path
   costs (detection only), the flagged half adds the cleaning;
3. deid 0.4.13's ``DicomCleaner`` (``detect`` + ``clean``, no save) on the flagged half.

Prints one JSON object: seconds per file for each, and the cost per cleaned frame.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.pixel_files import US_MULTIFRAME_STORAGE, image, write_image  # noqa: E402

RECIPE = """FORMAT dicom

%filter graylist
LABEL top banner
  equals Modality US
  coordinates 0,0,320,40
"""


def timed_apply(files: list[str], recipe: str, out: Path, clean: bool) -> float:
    from deid_batch.api import run_apply

    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(str(out) + ".manifest", ignore_errors=True)
    t = time.perf_counter()
    run_apply(files, recipe=recipe, output_folder=str(out), clean_pixels=clean, client="sync",
              collect_outputs=False)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--columns", type=int, default=320)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pixels-"))
    try:
        recipe = work / "deid.pixels"
        recipe.write_text(RECIPE)
        flagged, plain = [], []
        for i in range(args.files):
            px = image(args.rows, args.columns, frames=args.frames, samples=3, bits=8, seed=i)
            flagged.append(write_image(work / "us" / f"{i}.dcm", px, frames=args.frames, samples=3,
                                       sop_class=US_MULTIFRAME_STORAGE, Modality="US"))
            plain.append(write_image(work / "ct" / f"{i}.dcm", px, frames=args.frames, samples=3,
                                     sop_class=US_MULTIFRAME_STORAGE, Modality="CT"))
        timed_apply(flagged[:2], str(recipe), work / "warm", True)  # imports, first-call costs
        n = args.files
        res = {
            "files_per_half": n, "frames": args.frames, "frame": f"{args.rows}x{args.columns} RGB 8-bit",
            "header_path_unflagged_s_per_file": timed_apply(plain, str(recipe), work / "o1", False) / n,
            "clean_pixels_unflagged_s_per_file": timed_apply(plain, str(recipe), work / "o2", True) / n,
            "header_path_flagged_s_per_file": timed_apply(flagged, str(recipe), work / "o3", False) / n,
            "clean_pixels_flagged_s_per_file": timed_apply(flagged, str(recipe), work / "o4", True) / n,
        }
        res["cleaning_s_per_frame"] = (res["clean_pixels_flagged_s_per_file"]
                                       - res["header_path_flagged_s_per_file"]) / args.frames
        try:
            from deid.dicom.pixels.clean import DicomCleaner

            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for f in flagged:
                    c = DicomCleaner(deid=str(recipe), output_folder=str(work / "deid"))
                    c.detect(f)
                    c.clean()
            res["deid_detect_clean_s_per_file"] = (time.perf_counter() - t) / n
        except ImportError:
            res["deid_detect_clean_s_per_file"] = None
        print(json.dumps(res, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the time goes: cProfile of deid-batch ``apply`` / ``scan`` in one process.

    python benchmarks/profile_stage.py [--stage apply|scan] [--pixels small|ct] [--files 1000] [--top 25]

Runs the stage on dask's synchronous scheduler (the worker function in this process, exactly the
code a worker runs, plus the in-process scheduling) under cProfile, then prints the top functions
by own time and the own time summed per module group (pydicom reading, pydicom writing, the
de-identification engine, Arrow, dask, the file system ...). Writes
``benchmarks/results/profile-<stage>-<pixels>.pstats`` for snakeviz / pstats.

    python benchmarks/profile_stage.py --breakdown [--pixels small|ct] [--recipe dicom|default|ps3.15-basic,...]

prints CPU milliseconds per file (``time.process_time``, best of ``--repeat``) of each step: the
direct path (``recipe.direct``, and the engine where it declines), the engine + byte-level
writer, the reference pydicom path and plain pydicom read + write (the floor).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

from common import RESULTS, archive, clean, list_files, warm_cache

GROUPS = (
    ("pydicom/filereader", "pydicom read"),
    ("pydicom/filewriter", "pydicom write"),
    ("pydicom/values", "pydicom value conversion"),
    ("pydicom/dataelem", "pydicom DataElement"),
    ("pydicom/dataset", "pydicom Dataset"),
    ("pydicom/valuerep", "pydicom value types"),
    ("pydicom/tag", "pydicom tags"),
    ("pydicom/", "pydicom other"),
    ("deid_batch/recipe/direct", "deid_batch direct path"),
    ("deid_batch/recipe/engine", "deid_batch engine"),
    ("deid_batch/recipe/fields", "deid_batch field index"),
    ("deid_batch/recipe", "deid_batch recipe"),
    ("deid_batch/stages/scan", "deid_batch scan"),
    ("deid_batch/stages/apply", "deid_batch apply"),
    ("deid_batch/dicom/raw", "deid_batch raw walker"),
    ("deid_batch/dicom/rewrite", "deid_batch byte-level writer"),
    ("deid_batch/dicom/writing", "deid_batch writing"),
    ("deid_batch/dicom/reading", "deid_batch reading"),
    ("deid_batch/", "deid_batch other"),
    ("pyarrow", "pyarrow"),
    ("dask/", "dask"),
    ("distributed/", "distributed"),
)


def group_of(filename: str, funcname: str) -> str:
    for needle, name in GROUPS:
        if needle in filename:
            return name
    if filename == "~":
        builtin = funcname.strip("<>")
        if any(k in builtin for k in ("posix", "io.", "open", "read", "write", "stat", "rename")):
            return "builtins: I/O and os"
        return "builtins: other"
    return "other Python"


DIRECT_STEPS = ("direct: input bytes", "direct: walk + decide + encode (recipe.direct)",
                "direct: declined, engine + byte writer")
BYTE_STEPS = ("read", "deidentify (survivors left raw)", "byte-level write (input bytes + rewrite)",
              "write")
REFERENCE_STEPS = ("reference: deidentify (survivors converted)", "reference: encode (pydicom)")
FLOOR_STEPS = ("pydicom dcmread", "pydicom dcmwrite (BytesIO)", "pydicom header-only dcmread")


def breakdown(files: list[str], out: Path, recipe_name: str = "dicom"
              ) -> tuple[dict[str, float], int, int]:
    """CPU milliseconds per file (``time.process_time``) of each step of one apply worker, timed
    without a profiler, how many files the byte-level writer declined (pydicom fallback) and how
    many the direct path declined (engine path).

    First the direct path (``recipe.direct.deidentify_direct`` on the input's bytes; where it
    declines, the engine + byte writer as a worker runs them), then the engine path alone:
    Uses the functions a worker calls (``reading.read_dataset``, ``engine.deidentify_dataset``
    with ``finish=False``, ``rewrite.read_input`` + ``rewrite.rewrite`` (falling back to
    ``finish_dataset`` + ``writing.encode``), ``writing.write_atomic``); then the same file
    through the reference path (every element converted, ``encode``) and plain pydicom.
    """
    import io
    import os

    from pydicom import dcmread

    from deid_batch.dicom.reading import read_dataset
    from deid_batch.dicom.rewrite import read_input, rewrite
    from deid_batch.dicom.writing import encode, write_atomic
    from deid_batch.recipe.builtins import DEFAULT_BASE
    from deid_batch.recipe.direct import deidentify_direct
    from deid_batch.recipe.engine import EngineOptions, deidentify_dataset, finish_dataset
    from deid_batch.recipe.parse import load_recipe

    names = [r for r in recipe_name.split(",") if r]
    # resolved on its base once, as the API loads it (an unresolved recipe would be re-resolved per file)
    recipe = load_recipe(None if names == ["default"] else names if len(names) > 1 else names[0],
                         base=DEFAULT_BASE)
    options = EngineOptions(uid_key=b"profile-stage-key-0123456789abcd")
    steps = dict.fromkeys(DIRECT_STEPS + BYTE_STEPS + REFERENCE_STEPS + FLOOR_STEPS, 0.0)
    fallbacks = declined = 0
    out.mkdir(parents=True, exist_ok=True)
    clock = time.process_time
    for i, f in enumerate(files):
        name = os.path.basename(f)
        d0 = clock()
        original = read_input(f)
        d1 = clock()
        direct = deidentify_direct(original, recipe, None, options, name) if original else None
        d2 = clock()
        if direct is None:
            declined += 1
            ds = read_dataset(f, data=original)
            result = deidentify_dataset(ds, recipe, None, options=options, source=name, finish=False)
            if rewrite(result.dataset, original, ds.get("SpecificCharacterSet")) is None:
                finish_dataset(result.dataset, name)
                encode(result.dataset)
        d3 = clock()
        steps[DIRECT_STEPS[0]] += d1 - d0
        steps[DIRECT_STEPS[1]] += d2 - d1
        steps[DIRECT_STEPS[2]] += d3 - d2
        t0 = clock()
        ds = read_dataset(f)
        charset = ds.get("SpecificCharacterSet")
        t1 = clock()
        result = deidentify_dataset(ds, recipe, None, options=options, source=name, finish=False)
        t2 = clock()
        original = read_input(f)
        data = rewrite(result.dataset, original, charset) if original is not None else None
        if data is None:
            fallbacks += 1
            finish_dataset(result.dataset, name)
            data = encode(result.dataset, character_set=charset)
        t3 = clock()
        write_atomic(str(out / f"{i:06d}.dcm"), data, overwrite=True)
        t4 = clock()
        ref = read_dataset(f)
        t5 = clock()
        ref_result = deidentify_dataset(ref, recipe, None, options=options, source=name)
        t6 = clock()
        encode(ref_result.dataset, character_set=charset)
        t7 = clock()
        plain = dcmread(f)
        t8 = clock()
        plain.save_as(io.BytesIO())
        t9 = clock()
        dcmread(f, stop_before_pixels=True)
        t10 = clock()
        spans = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t6 - t5, t7 - t6, t8 - t7, t9 - t8, t10 - t9)
        for key, dt in zip(list(steps)[len(DIRECT_STEPS):], spans, strict=True):
            steps[key] += dt
    return {k: v / len(files) * 1e3 for k, v in steps.items()}, fallbacks, declined


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=("apply", "scan"), default="apply")
    p.add_argument("--pixels", choices=("small", "ct"), default="small")
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--breakdown", action="store_true", help="ms/file per apply step, no profiler (apply only)")
    p.add_argument("--recipe", default="dicom",
                   help="recipe of --breakdown (deid's name, a path, 'default', or a comma-separated stack)")
    p.add_argument("--repeat", type=int, default=3, help="--breakdown: best of this many passes")
    p.add_argument("--work", type=Path, default=RESULTS / "work")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    files = list_files(archive(args.work, args.files, args.pixels))
    warm_cache(files)
    import deid_batch

    out = args.work / "profile-out"
    clean(out)
    if args.breakdown:
        breakdown(files[: min(200, len(files))], out, args.recipe)  # warm-up
        best: dict[str, float] = {}
        for _ in range(args.repeat):  # best of N per step: CPU time is still disturbed by neighbours
            steps, fallbacks, declined = breakdown(files, out, args.recipe)
            best = {k: min(v, best.get(k, v)) for k, v in steps.items()}
        steps = best
        shutil.rmtree(out, ignore_errors=True)
        print(f"apply steps on {len(files)} {args.pixels}-pixel files, recipe {args.recipe}, CPU ms per "
              f"file (one process, best of {args.repeat}); direct path declined {declined} "
              f"({declined / len(files):.1%}); byte-level writer declined {fallbacks} "
              f"({fallbacks / len(files):.1%}):")
        for key, ms in steps.items():
            print(f"  {key:<50} {ms:7.3f}")
        direct = sum(steps[k] for k in DIRECT_STEPS) + steps["write"]
        print(f"  {'= worker, direct path (+ write)':<50} {direct:7.3f}  ({1e3 / direct:,.0f} files/s)")
        worker = sum(steps[k] for k in BYTE_STEPS)
        ref = steps["read"] + sum(steps[k] for k in REFERENCE_STEPS) + steps["write"]
        floor = steps["pydicom dcmread"] + steps["pydicom dcmwrite (BytesIO)"]
        print(f"  {'= worker, engine + byte-level writer':<50} {worker:7.3f}  ({1e3 / worker:,.0f} files/s)")
        print(f"  {'= worker, reference pydicom path':<50} {ref:7.3f}  ({1e3 / ref:,.0f} files/s)")
        print(f"  {'= pydicom read + write (floor)':<50} {floor:7.3f}  ({1e3 / floor:,.0f} files/s)")
        print(f"  {'= direct path vs the floor':<50} {floor / direct:7.2f}x")
        return 0
    if args.stage == "apply":

        def run() -> object:
            return deid_batch.replace_identifiers(
                files, recipe="dicom", output_folder=str(out), overwrite=True, client="sync"
            )
    else:

        def run() -> object:
            return deid_batch.get_identifiers(files, client="sync")

    t0 = time.perf_counter()
    run()  # warm-up: imports, recipe parsing caches, page cache of outputs' folders
    warm = time.perf_counter() - t0
    clean(out)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    run()
    prof.disable()
    seconds = time.perf_counter() - t0
    clean(out)
    shutil.rmtree(out, ignore_errors=True)
    stats = pstats.Stats(prof)
    path = RESULTS / f"profile-{args.stage}-{args.pixels}.pstats"
    stats.dump_stats(path)
    print(
        f"{args.stage} on {len(files)} {args.pixels}-pixel files, synchronous: first run "
        f"{warm:.2f} s, profiled run {seconds:.2f} s ({len(files) / seconds:.0f} files/s under "
        f"cProfile, {seconds / len(files) * 1e3:.2f} ms/file)\n"
    )
    by_group: dict[str, float] = defaultdict(float)
    total = 0.0
    for (filename, _line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        by_group[group_of(filename, func)] += tt
        total += tt
    print("own time by module group:")
    for name, tt in sorted(by_group.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<28} {tt:7.2f} s  {tt / total:6.1%}  {tt / len(files) * 1e3:6.3f} ms/file")
    print()
    stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())

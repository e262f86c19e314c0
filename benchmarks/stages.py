"""One timed benchmark stage, run in a fresh process by ``run.py``.

    python benchmarks/stages.py STAGE --list FILES.txt --src ROOT --out OUT [--workers N]

Prints one JSON line: ``{"available": true, "seconds": ..., "files": ..., "bytes": ...}``.
``seconds`` covers the work only: interpreter start, imports and dask cluster start-up are
excluded (cluster start-up is reported separately as ``startup_seconds``).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from common import warm_worker


def _out_path(src_root: str, out_root: str, path: str, made: set[str]) -> str:
    rel = os.path.relpath(path, src_root)
    dest = os.path.join(out_root, rel)
    parent = os.path.dirname(dest)
    if parent not in made:
        os.makedirs(parent, exist_ok=True)
        made.add(parent)
    return dest


def pydicom_rw(files: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Plain pydicom read + write, unchanged: the floor any pydicom tool pays."""
    from pydicom import dcmread

    made: set[str] = set()
    t0 = time.perf_counter()
    for f in files:
        ds = dcmread(f)
        ds.save_as(_out_path(args.src, args.out, f, made))
    return {"seconds": time.perf_counter() - t0}


def pydicom_header(files: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """pydicom header-only parse (``stop_before_pixels=True``); values stay lazily undecoded."""
    from pydicom import dcmread

    t0 = time.perf_counter()
    for f in files:
        dcmread(f, stop_before_pixels=True)
    return {"seconds": time.perf_counter() - t0}


def pydicom_header_touch(files: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Header-only parse that also decodes every element value (what a scan must do)."""
    from pydicom import dcmread

    def walk(ds: Any) -> int:
        n = 0
        for elem in ds:
            n += 1
            if elem.VR == "SQ":
                for item in elem.value:
                    n += walk(item)
        return n

    t0 = time.perf_counter()
    for f in files:
        walk(dcmread(f, stop_before_pixels=True))
    return {"seconds": time.perf_counter() - t0}


def deid(files: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """deid 0.4.13 replace_identifiers with its default recipe, one process, as deid runs.

    deid names outputs by basename (``IM0001.dcm`` in every series would collide), so it is
    called once per input folder with a mirrored output folder: every file is really written.
    """
    os.environ.setdefault("MESSAGELEVEL", "QUIET")
    from deid.dicom import replace_identifiers

    by_dir: dict[str, list[str]] = {}
    for f in files:
        by_dir.setdefault(os.path.dirname(f), []).append(f)
    made: set[str] = set()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        for group in by_dir.values():
            out = os.path.dirname(_out_path(args.src, args.out, group[0], made))
            replace_identifiers(group, save=True, overwrite=True, output_folder=out)
    return {"seconds": time.perf_counter() - t0}


@contextlib.contextmanager
def _cluster(workers: int):  # type: ignore[no-untyped-def]
    import dask
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    try:  # the workers as deid-batch starts its own local cluster (no statistical profiler)
        from deid_batch.stages.pipeline import LOCAL_CLUSTER_CONFIG
    except ImportError:  # an older deid_batch
        LOCAL_CLUSTER_CONFIG = {}
    with dask.config.set(LOCAL_CLUSTER_CONFIG):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(cluster)
    client.wait_for_workers(workers)
    # import the pipeline on the workers before timing: paid once per worker, not per file
    client.run(warm_worker)
    startup = time.perf_counter() - t0
    try:
        yield client, startup
    finally:
        client.close()
        cluster.close()


def _kwargs(func: Any, **wanted: Any) -> dict[str, Any]:
    params = inspect.signature(func).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return wanted
    return {k: v for k, v in wanted.items() if k in params}


def _api(name: str) -> Any:
    import deid_batch

    func = getattr(deid_batch, name, None)
    if func is None:
        raise LookupError(f"deid_batch.{name} does not exist yet")
    return func


def batch_scan(files: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """deid_batch.get_identifiers on a LocalCluster of ``--workers`` processes."""
    get_identifiers = _api("get_identifiers")
    with _cluster(args.workers) as (client, startup):
        t0 = time.perf_counter()
        result = get_identifiers(files, **_kwargs(get_identifiers, client=client))
        seconds = time.perf_counter() - t0
    rows = getattr(result, "num_rows", None)
    meta = getattr(getattr(result, "schema", None), "metadata", None) or {}
    readers = {name: int(meta[key]) for name, key in (("raw", b"deid_batch.scan.raw"),
                                                      ("pydicom", b"deid_batch.scan.pydicom")) if key in meta}
    return {"seconds": seconds, "startup_seconds": startup, "rows": rows, "readers": readers}


def batch_apply(files: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """deid_batch.replace_identifiers (deid default recipe) on a LocalCluster."""
    replace_identifiers = _api("replace_identifiers")
    with _cluster(args.workers) as (client, startup):
        kwargs = _kwargs(
            replace_identifiers,
            recipe=args.recipe,
            output_folder=args.out,
            client=client,
            overwrite=True,
        )
        if args.writer == "pydicom":
            kwargs["byte_writer"] = False
        t0 = time.perf_counter()
        result = replace_identifiers(files, **kwargs)
        seconds = time.perf_counter() - t0
    if isinstance(result, list):
        written = sum(1 for o in result if o)
    else:
        written = sum(1 for p in Path(args.out).rglob("*.dcm"))
    return {
        "seconds": seconds,
        "startup_seconds": startup,
        "written": written,
        "result_type": type(result).__name__,
        "writers": _writers(args.out),
    }


def _writers(out: str) -> dict[str, int]:
    """How the outputs were encoded (manifest ``writer`` column): byte-level vs pydicom."""
    try:
        from deid_batch import read_manifest

        table = read_manifest(out.rstrip(os.sep) + ".manifest")
    except Exception:  # noqa: BLE001 - an older deid_batch without the column
        return {}
    if "writer" not in table.column_names:
        return {}
    counts: dict[str, int] = {}
    for w in table.column("writer").to_pylist():
        if w:
            counts[w] = counts.get(w, 0) + 1
    return counts


STAGES = {
    "pydicom-rw": pydicom_rw,
    "pydicom-header": pydicom_header,
    "pydicom-header-touch": pydicom_header_touch,
    "deid": deid,
    "batch-scan": batch_scan,
    "batch-apply": batch_apply,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--list", required=True, help="text file, one input path a line")
    parser.add_argument("--src", required=True, help="archive root (outputs mirror it)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--recipe", default="dicom")
    parser.add_argument("--writer", choices=("bytes", "pydicom"), default="bytes",
                        help="apply: the byte-level writer (default) or the pydicom reference path")
    args = parser.parse_args(argv)
    files = Path(args.list).read_text().split("\n")
    files = [f for f in files if f]
    try:
        result = STAGES[args.stage](files, args)
    except LookupError as exc:
        print(json.dumps({"available": False, "why": str(exc)}))
        return 0
    result.update(
        available=True,
        files=len(files),
        bytes=sum(os.stat(f).st_size for f in files),
        maxrss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``deid-batch``: a thin command line over the library (argv -> call -> exit code).

Exit codes: 0 every file done, 1 some files failed (or verify found a leak), 2 usage or
configuration error (bad recipe, mapping, options). Only this module prints, configures logging
handlers or exits.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from deid_batch import __version__
from deid_batch.errors import ConfigError, DeidBatchError
from deid_batch.recipe.builtins import DEFAULT_BASE

__all__ = ["main"]

logger = logging.getLogger("deid_batch.cli")

EPILOG = """\
workflow (as in deid's docs: get identifiers, fill in variables, replace):
  deid-batch scan /data/pacs --ids ids.parquet          # 1. identifiers table (PHI: keep it private)
  # 2. build mapping.csv with a PatientID column (optionally SOPInstanceUID) and your variables
  deid-batch apply /data/pacs --out /share/deid --recipe my.recipe --vars mapping.csv --ids ids.parquet
  deid-batch verify /share/deid --ids ids.parquet       # 3. rescan outputs for original identifiers

apply layers your --recipe on the built-in "remove-everything" base (every element your recipe does
not keep, replace or add is removed); --base none applies your recipe alone, as deid 0.4.13 does.
--workers N starts N local worker processes (default: all cores; 0 = in this process);
--scheduler tcp://host:8786 uses an existing dask.distributed scheduler instead;
--cluster slurm|pbs --jobs N (or --adapt MIN:MAX) submits batch jobs through dask-jobqueue,
with the settings of configs/jobqueue.yaml (--dask-config) or ~/.config/dask/.
exit codes: 0 ok, 1 some files failed (see the manifest), 2 usage or configuration error.
"""


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local worker processes (default: number of cores; 0 = run in this process; "
                   "at most 2 per core)")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="address of an existing dask.distributed scheduler, e.g. tcp://host:8786")
    g.add_argument("--cluster", choices=["local", "slurm", "pbs"], default=None,
                   help="where the workers run: local (default: --workers processes on this machine), or "
                   "slurm / pbs: batch jobs submitted through dask-jobqueue, with the jobqueue.slurm / "
                   "jobqueue.pbs settings (configs/jobqueue.yaml via --dask-config, or ~/.config/dask/); "
                   "needs pip install 'deid-batch[hpc]'")
    g.add_argument("--jobs", type=int, metavar="N", help="with --cluster slurm|pbs: number of batch jobs "
                   "(default 1; each runs the configured worker processes)")
    g.add_argument("--adapt", type=_min_max, metavar="MIN:MAX", help="with --cluster slurm|pbs: scale "
                   "between MIN and MAX jobs with the work queued (instead of --jobs)")
    g.add_argument("--dask-config", metavar="FILE.yaml",
                   help="dask settings (see configs/); a scheduler-address key there works like --scheduler")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: DEBUG)")
    g.add_argument("-q", "--quiet", action="store_true", help="only errors and the summary")
    g.add_argument("--no-progress", action="store_true", help="no progress bar / progress lines")


def _min_max(text: str) -> tuple[int, int]:
    low, sep, high = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(low), int(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN:MAX, e.g. 0:20") from None
def _storage_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage-options", metavar="JSON", default=None,
                   help="options for fsspec when a path is a URL (s3://bucket/prefix), e.g. "
                   "'{\"profile\": \"lab\"}' or '{\"endpoint_url\": \"http://minio:9000\"}'; credentials "
                   "otherwise come from the AWS environment variables (AWS_ENDPOINT_URL too) and profiles")


def _storage_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--storage-options`` as a dict (exit 2 with a clear message when it is not a JSON object)."""
    import json

    from deid_batch.errors import ConfigError

    text = getattr(args, "storage_options", None)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--storage-options is not valid JSON ({exc.msg} at character {exc.pos}); "
                          "give a JSON object such as '{\"anon\": true}'") from None
    if not isinstance(value, dict):
        raise ConfigError("--storage-options must be a JSON object such as '{\"anon\": true}'")
    return value


def _base_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", default=DEFAULT_BASE, metavar="NAME|none",
                   help=f"recipe layered under --recipe (default {DEFAULT_BASE}: every element not kept or "
                   "replaced by your recipe is removed, as in deid's docs); a built-in name or a recipe "
                   "file; 'none' applies your recipe alone (deid 0.4.13's behaviour). Not used when the "
                   "first --recipe is a complete built-in (dicom, remove-everything)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deid-batch", description="Parallel batch de-identification of DICOM archives with deid recipes.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"deid-batch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("scan", help="gather identifiers of every file into a Parquet table",
                       description="Read every file's header (pixels skipped) into IDS.parquet; "
                       "unreadable files go to IDS.errors.parquet. The table holds PHI: keep it private.")
    p.add_argument("sources", nargs="+", metavar="SRC", help="input folders or files")
    p.add_argument("--ids", required=True, metavar="IDS.parquet", help="identifiers table to write")
    p.add_argument("--entity-id", metavar="FIELD", help="entity id field (default PatientID)")
    p.add_argument("--item-id", metavar="FIELD", help="item id field (default SOPInstanceUID)")
    p.add_argument("--config", metavar="CONFIG.json", help="deid-style config.json (get.skip, get.ids)")
    _storage_option(p)
    _common(p)

    p = sub.add_parser("apply", help="de-identify files into a sharded output folder, with a manifest",
                       description="Apply a deid recipe to every input and write de-identified copies "
                       "into OUTDIR (names from hashes), plus a manifest with one row per input.")
    p.add_argument("sources", nargs="+", metavar="SRC", help="input folders or files")
    p.add_argument("--out", required=True, metavar="OUTDIR", help="output folder (not inside an input)")
    p.add_argument("--recipe", action="append", metavar="R",
                   help="recipe file, folder, or built-in recipe name (remove-everything, dicom, "
                   "ps3.15-basic, ...: `deid-batch recipes` lists them); repeat to combine, in order. "
                   "It is applied on top of --base")
    _base_option(p)
    p.add_argument("--vars", metavar="MAPPING", help="variable mapping (CSV or Parquet) keyed by PatientID "
                   "[and SOPInstanceUID]; its other columns are variables for var:NAME")
    p.add_argument("--ids", metavar="IDS.parquet", help="identifiers table from `scan` (else gathered when "
                   "a mapping needs it)")
    p.add_argument("--keep-private", action="store_true", help="do not remove private tags (warned)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    p.add_argument("--resume", action="store_true", help="finish an interrupted run (same settings)")
    p.add_argument("--manifest", metavar="DIR", help="manifest folder (default OUTDIR.manifest)")
    p.add_argument("--key-file", metavar="FILE", help="secret key for new UIDs and output names "
                   "(default: $DEID_BATCH_KEY, else generated and kept in the manifest folder)")
    p.add_argument("--entity-id", metavar="FIELD", help="entity id field (default PatientID)")
    p.add_argument("--item-id", metavar="FIELD", help="item id field (default SOPInstanceUID)")
    p.add_argument("--config", metavar="CONFIG.json", help="deid-style config.json (get.skip, put.actions)")
    p.add_argument("--partition-size", type=int, metavar="N", help="files per task (default: rule in docs)")
    p.add_argument("--write-no-pixel-data", action="store_true",
                   help="also write image storage objects without pixel data (header-only, or cut at an "
                   "element boundary), with a warning; default: skipped/no-pixel-data")
    p.add_argument("--linkage", action=argparse.BooleanOptionalAction, default=None,
                   help="write uid_mapping.csv and patid_mapping.csv (id_old,id_new) in the manifest "
                   "folder (default: on when the recipe makes keyed pseudonyms, e.g. ps3.15-basic)")
    g = p.add_argument_group("burned-in pixels")
    g.add_argument("--clean-pixels", action="store_true",
                   help="blank the regions of the recipe's %%filter LABELs that flag a file (evaluated on "
                   "its original header) in every frame, before the header recipe")
    g.add_argument("--flagged", choices=("skip", "write"), default="skip",
                   help="a file flagged by a LABEL without a region: skip it (default; manifest "
                   "'burned-in: needs review (LABEL)') or write it with a warning")
    g.add_argument("--decompress-pixels", action="store_true",
                   help="decode compressed pixel data to clean it (written uncompressed); without it "
                   "such files fail with a reason that says so")
    _storage_option(p)
    _common(p)

    p = sub.add_parser("detect", help="flag files with burned-in annotations (the recipe's %%filter sections)",
                       description="Evaluate the %%filter sections of the recipe (deid's has_burned_pixels) on "
                       "every file's original header and write one row per file to REPORT.parquet: "
                       "flagged, group, label, the regions cleaning would blank. No image is written.")
    p.add_argument("sources", nargs="+", metavar="SRC", help="input folders or files")
    p.add_argument("--report", required=True, metavar="REPORT.parquet", help="report table to write")
    p.add_argument("--recipe", action="append", metavar="R",
                   help="recipe whose %%filter sections decide (default: deid's bundled dicom recipe); "
                   "repeat to combine, in order")
    _common(p)

    p = sub.add_parser("strip-private", help="copy files with every private tag removed",
                       description="Copy every input into OUTDIR (names from hashes) with every private "
                       "tag removed and nothing else changed but the file meta, plus a manifest.")
    p.add_argument("sources", nargs="+", metavar="SRC", help="input folders or files")
    p.add_argument("--out", required=True, metavar="OUTDIR", help="output folder (not inside an input)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    p.add_argument("--resume", action="store_true", help="finish an interrupted run (same settings)")
    p.add_argument("--manifest", metavar="DIR", help="manifest folder (default OUTDIR.manifest)")
    _storage_option(p)
    _common(p)

    p = sub.add_parser("verify", help="rescan outputs for original identifying values (exit 1 on a hit)",
                       description="Check every output for original identifying values (names, IDs, dates, "
                       "UIDs, and any original value left in place) that the run's recipe does not KEEP. "
                       "The recipe is read from the apply run's manifest folder (_recipe.json); each output "
                       "is compared with its own input. Hits name the file and tag path, never the value.")
    p.add_argument("output", metavar="OUTDIR", help="the output folder of an apply run")
    p.add_argument("--ids", required=True, metavar="IDS.parquet", help="identifiers table of the inputs")
    p.add_argument("--manifest", metavar="DIR", help="the apply run's manifest folder (default OUTDIR.manifest)")
    p.add_argument("--recipe", action="append", metavar="R",
                   help="the recipe the outputs were made with, instead of the manifest's _recipe.json "
                   "(on --base, as apply layers it)")
    _base_option(p)
    p.add_argument("--key-file", metavar="FILE", help="the run key, when apply was given one (to recognise "
                   "the UIDs it made; default: $DEID_BATCH_KEY, else the manifest folder's)")
    p.add_argument("--partition-size", type=int, metavar="N", help="files per task (default: rule in docs)")
    p.add_argument("--show-uids", action="store_true",
                   help="print the outputs' unresolved reference UIDs (de-identified values) too")
    _storage_option(p)
    _common(p)

    p = sub.add_parser("inspect", help="show one file's header, and with --recipe what the recipe makes of it",
                       description="Print one file's header (pixels not read); with --recipe, print the "
                       "de-identified header instead (a preview key: UIDs differ from a real run) and the "
                       "recipe's warnings. Runs in this process: no --workers. Prints PHI: use locally.")
    p.add_argument("file", metavar="FILE", help="a DICOM file (or its URL)")
    p.add_argument("--recipe", action="append", metavar="R", help="recipe(s) to preview, on top of --base")
    _base_option(p)
    _storage_option(p)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: DEBUG)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors")

    p = sub.add_parser("recipes", help="list the built-in recipes, or print one",
                       description="Without NAME: one line per built-in recipe. With NAME: its text "
                       "(copy it to edit it).")
    p.add_argument("name", nargs="?", metavar="NAME", help="a built-in recipe name")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: DEBUG)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors")

    p = sub.add_parser("demo", help="generate a small example archive and run scan + apply on it",
                       description="Write a synthetic PACS export with fake PHI into FOLDER/archive, scan it, "
                       "build a mapping and apply deid's docs recipe on top of the default into FOLDER/deid.")
    p.add_argument("folder", nargs="?", default="deid-batch-demo", metavar="FOLDER",
                   help="where to put it (default ./deid-batch-demo)")
    p.add_argument("--files", type=int, default=200, metavar="N", help="number of files (default 200)")
    _common(p)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING
    if getattr(args, "quiet", False):
        level = logging.ERROR
    elif args.verbose == 1:
        level = logging.INFO
    elif args.verbose >= 2:
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("deid_batch")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # pydicom quotes header values in its warnings; they never reach our output
    logging.getLogger("pydicom").disabled = True
    warnings.filterwarnings("ignore", module=r"pydicom\..*")


def _load_dask_config(args: argparse.Namespace) -> Any:
    """A context in which the ``--dask-config`` settings apply (nothing when not given)."""
    path = getattr(args, "dask_config", None)
    if not path:
        return contextlib.nullcontext()
    import dask.config
    import yaml


    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--dask-config {path}: cannot read it as YAML ({type(exc).__name__}); "
                          "give a YAML file of dask settings (see configs/dask-local.yaml)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--dask-config {path}: holds a YAML {type(data).__name__}, not a mapping; "
                          "give a YAML mapping of dask settings (see configs/dask-local.yaml)")
    if (not args.scheduler and args.workers is None and getattr(args, "cluster", None) in (None, "local")
            and data.get("scheduler-address")):
        args.scheduler = data["scheduler-address"]
    return dask.config.set(_dotted(data))


def _dotted(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested YAML settings as dotted keys, so they update dask's config instead of replacing it."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _workers(args: argparse.Namespace) -> int | None:
    """Local worker processes: the cores by default; capped at a few per core (a warning)."""
    from deid_batch.stages.pipeline import local_workers

    if args.scheduler or getattr(args, "cluster", None) not in (None, "local"):
        return None
    return local_workers(os.cpu_count() or 1 if args.workers is None else args.workers)


def _cluster(args: argparse.Namespace) -> Any:
    """The batch-system cluster of ``--cluster slurm|pbs`` (None for local runs)."""
    system = getattr(args, "cluster", None)
    if system in (None, "local"):
        if getattr(args, "jobs", None) is not None or getattr(args, "adapt", None) is not None:
            raise ConfigError("--jobs and --adapt need --cluster slurm or --cluster pbs")
        return None
    from deid_batch.stages.pipeline import JobQueue, check_jobqueue

    if args.workers is not None or args.scheduler:
        raise ConfigError(f"--cluster {system} starts its own workers: leave out --workers and --scheduler")
    return check_jobqueue(JobQueue(system, jobs=args.jobs, adapt=args.adapt))


def _progress(args: argparse.Namespace, label: str) -> Any:
    from deid_batch.progress import ProgressBar

    return ProgressBar(label, enabled=not (args.no_progress or args.quiet))


def _announce(args: argparse.Namespace) -> Any:
    def on_start(ex: Any) -> None:
        if not args.quiet:
            print(f"running on: {ex.description}", file=sys.stderr)
            if ex.dashboard:
                print(f"dask dashboard: {ex.dashboard}", file=sys.stderr)
    return on_start


def _cmd_scan(args: argparse.Namespace) -> int:
    from deid_batch.api import load_config, run_scan
    from deid_batch.stages.discover import discover_paths
    from deid_batch.stages.pipeline import open_executor
    from deid_batch.stages.scan import ScanConfig, path_counts
    from deid_batch.stages.storage import normalise

    cfg = load_config(args.config)
    options = _storage_options(args)
    scan_config = ScanConfig(args.entity_id or cfg.entity_id or "PatientID",
                             args.item_id or cfg.item_id or "SOPInstanceUID", cfg.skip, storage_options=options)
    paths = discover_paths(args.sources, options)
    ids = normalise(args.ids)
    errors_path = ids[:-8] + ".errors.parquet" if ids.endswith(".parquet") else ids + ".errors.parquet"
    with open_executor(workers=_workers(args), scheduler=args.scheduler, cluster=_cluster(args)) as ex:
        _announce(args)(ex)
        keys, errors = run_scan(paths, scan_config, ex, parquet_path=ids, errors_path=errors_path,
                                progress=_progress(args, "scan"), keep_keys=False)
    # every input is either identified or an errors row
    print(f"scanned {len(paths)} files: {len(paths) - errors.num_rows} identified, {errors.num_rows} not readable")
    n_raw, n_pydicom = path_counts([keys])
    print(f"  headers read by the raw walker {n_raw}, by pydicom (fallback) {n_pydicom}")
    if errors.num_rows:
        from collections import Counter

        counts = Counter(r.split(":", 1)[0] for r in errors.column("reason").to_pylist())
        for reason, n in sorted(counts.items()):
            print(f"    {reason:<14} {n}")
    print(f"identifiers: {ids}")
    print(f"errors:      {errors_path}")
    failed = sum(1 for s in errors.column("status").to_pylist() if s == "failed")
    return 1 if failed else 0


def _print_report(report: Any) -> None:
    if report.recipe_stack:
        print(f"recipe:   {' + '.join(report.recipe_stack)}")
    print("\n".join(report.summary.lines()))
    print(f"output:   {report.output_folder}")
    print(f"manifest: {report.manifest}")
    if report.identifiers:
        print(f"identifiers gathered: {report.identifiers}")


def _cmd_apply(args: argparse.Namespace) -> int:
    from deid_batch.api import run_apply

    recipe = args.recipe if args.recipe and len(args.recipe) > 1 else (args.recipe[0] if args.recipe else None)
    report = run_apply(
        args.sources, recipe=recipe, base=args.base, ids=args.ids, variables=args.vars, output_folder=args.out,
        overwrite=args.overwrite, remove_private=not args.keep_private, entity_id=args.entity_id,
        item_id=args.item_id, workers=_workers(args), scheduler=args.scheduler, cluster=_cluster(args),
        config=args.config,
        manifest=args.manifest, resume=args.resume, key_file=args.key_file,
        partition=args.partition_size, progress=_progress(args, "apply"), on_start=_announce(args),
        collect_outputs=False, write_no_pixel_data=args.write_no_pixel_data,
        clean_pixels=args.clean_pixels, flagged=args.flagged, decompress_pixels=args.decompress_pixels,
        storage_options=_storage_options(args), linkage=args.linkage)
    _print_report(report)
    return report.exit_code


def _cmd_detect(args: argparse.Namespace) -> int:
    from collections import Counter

    from deid_batch.api import recipe_filters, run_detect
    from deid_batch.recipe.parse import load_recipe
    from deid_batch.stages.discover import discover
    from deid_batch.stages.pipeline import open_executor

    names = args.recipe or ["dicom"]
    recipe = load_recipe(names if len(names) > 1 else names[0])
    filters = recipe_filters(recipe, " + ".join(names))
    paths = discover(args.sources)
    report = os.path.abspath(args.report)
    with open_executor(workers=_workers(args), scheduler=args.scheduler) as ex:
        _announce(args)(ex)
        table = run_detect(paths, filters, ex, report_path=report, progress=_progress(args, "detect"))
    flagged = table.column("flagged").to_pylist()
    review = table.column("needs_review").to_pylist()
    reasons = [r for r in table.column("reason").to_pylist() if r]
    groups = Counter(g for g, f in zip(table.column("group").to_pylist(), flagged) if f)
    print(f"recipe:   {' + '.join(names)}")
    print(f"files: {len(paths)}")
    print(f"  flagged       {sum(1 for f in flagged if f)}")
    for group, n in sorted(groups.items()):
        print(f"    {group:<12} {n}")
    print(f"  needs review  {sum(1 for r in review if r)}")
    print(f"  not flagged   {sum(1 for f in flagged if f is False)}")
    if reasons:
        print(f"  not readable  {len(reasons)}")
        for reason, n in sorted(Counter(r.split(":", 1)[0] for r in reasons).items()):
            print(f"    {reason:<12} {n}")
    print(f"report:   {report}")
    return 1 if reasons else 0


def _cmd_strip(args: argparse.Namespace) -> int:
    from deid_batch.api import _EMPTY_RECIPE, run_apply

    report = run_apply(args.sources, recipe=_EMPTY_RECIPE, output_folder=args.out, overwrite=args.overwrite,
                       remove_private=True, workers=_workers(args), scheduler=args.scheduler,
                       cluster=_cluster(args),
                       manifest=args.manifest, resume=args.resume, progress=_progress(args, "strip-private"),
                       on_start=_announce(args), collect_outputs=False,
                       storage_options=_storage_options(args))
    _print_report(report)
    return report.exit_code


def _cmd_verify(args: argparse.Namespace) -> int:
    from deid_batch.api import run_verify

    recipe = args.recipe if args.recipe and len(args.recipe) > 1 else (args.recipe[0] if args.recipe else None)
    report = run_verify(args.output, args.ids, manifest=args.manifest, recipe=recipe, base=args.base,
                        key_file=args.key_file, workers=_workers(args), scheduler=args.scheduler,
                        cluster=_cluster(args), partition=args.partition_size, progress=_progress(args, "verify"),
                        on_start=_announce(args), show_uids=args.show_uids,
                        storage_options=_storage_options(args))
    if report.recipe_stack:
        print(f"recipe:   {' + '.join(report.recipe_stack)}")
    for hit in report.hits:
        print(f"LEAK {hit.file} {hit.tag_path} ({hit.kind})")
    for ref in report.broken_references:
        print(f"BROKEN {ref.file} {ref.tag_path} ({ref.kind} reference{' ' + ref.uid if ref.uid else ''})")
    files = len({hit.file for hit in report.hits})
    print(f"verify: {len(report.hits)} hit(s) in {files} of {report.files} file(s) in {args.output}")
    refs = report.broken_references
    print(f"references: {len(refs)} into the input set resolve to no output, in "
          f"{len({r.file for r in refs})} file(s)")
    return report.exit_code


def _cmd_inspect(args: argparse.Namespace) -> int:
    from deid_batch.dicom.reading import read_dataset
    from deid_batch.errors import ConfigError, DatasetError
    from deid_batch.recipe.engine import EngineOptions, deidentify_dataset
    from deid_batch.stages import storage

    data = None
    if storage.is_url(args.file):
        try:
            data = storage.read_bytes(args.file, _storage_options(args))
        except OSError as exc:
            raise ConfigError(f"FILE {args.file}: cannot be fetched ({type(exc).__name__}); check the URL "
                              "and the credentials (--storage-options, AWS_* variables)") from None
    try:
        ds = read_dataset(args.file, stop_before_pixels=True, data=data)
    except DatasetError as exc:
        raise ConfigError(f"FILE {args.file}: not a readable DICOM file ({exc.reason}: {exc}); "
                          "give a DICOM file") from None
    print(f"# {args.file}")
    print(ds if not args.recipe else "")
    if args.recipe:
        from deid_batch.recipe.parse import load_recipe

        recipe = load_recipe(args.recipe if len(args.recipe) > 1 else args.recipe[0], base=args.base)
        print(f"# recipe: {' + '.join(recipe.stack)}")
        result = deidentify_dataset(ds, recipe, options=EngineOptions(uid_key=b"inspect-preview-key!"),
                                    source=os.path.basename(args.file))
        print(result.dataset)
        for w in result.warnings:
            print(f"warning: {w}", file=sys.stderr)
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    from deid_batch.recipe.builtins import BUILTINS, builtin, builtin_path

    if args.name is None:
        width = max(len(name) for name in BUILTINS)
        for item in BUILTINS.values():
            print(f"{item.name:<{width}}  {item.description}")
        return 0
    entry = builtin(args.name)
    if entry is None:
        raise ConfigError(f"no built-in recipe named {args.name!r}; `deid-batch recipes` lists them")
    path = builtin_path(entry)
    if path is None or not path.exists():
        raise ConfigError(f"{args.name} ships with deid, which is not installed: pip install deid")
    sys.stdout.write(path.read_text(encoding="utf-8"))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from deid_batch.demo import run_demo

    return run_demo(args.folder, n_files=args.files, workers=_workers(args), scheduler=args.scheduler,
                    cluster=_cluster(args),
                    progress=not (args.no_progress or args.quiet))


COMMANDS = {"scan": _cmd_scan, "detect": _cmd_detect, "apply": _cmd_apply, "strip-private": _cmd_strip,
            "verify": _cmd_verify, "inspect": _cmd_inspect, "demo": _cmd_demo, "recipes": _cmd_recipes}


def _check(args: argparse.Namespace) -> None:
    """Validate every option before anything starts or is written (:mod:`deid_batch.arguments`)."""
    from deid_batch import arguments

    arguments.check_execution(args)
    arguments.check_inputs(args)
    arguments.check_outputs(args)


class _Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`_Interrupted` (so partial files are cleaned up and the
    cluster is closed); a second signal during the shutdown exits at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hits = []

    def handler(signum: int, frame: Any) -> None:
        hits.append(signum)
        if len(hits) > 1:
            os._exit(128 + signum)
        raise _Interrupted(signum)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup / background jobs keep ignoring
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _continue_hint(args: argparse.Namespace, argv: Sequence[str]) -> str:
    """The exact command that continues the interrupted work."""
    import shlex

    from deid_batch.stages.manifest import RUN_FILE, default_manifest_dir

    command = ["deid-batch", *argv]
    if args.command in ("apply", "strip-private"):
        manifest = args.manifest or default_manifest_dir(args.out)
        if os.path.exists(os.path.join(manifest, RUN_FILE)):
            if not args.resume:
                command.append("--resume")
            return "finished partitions are kept; continue with: " + shlex.join(command)
        return "nothing was written yet; run it again: " + shlex.join(command)
    if args.command == "scan":
        return "nothing was written (a scan starts over); run it again: " + shlex.join(command)
    return "run it again: " + shlex.join(command)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``deid-batch`` and ``python -m deid_batch``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    _setup_logging(args)
    with _signals_interrupt():
        try:
            _check(args)
            if getattr(args, "cluster", None) not in (None, "local"):
                from deid_batch.stages.pipeline import jobqueue_cluster_class

                # before --dask-config's settings: dask-jobqueue adds its defaults to dask's config on import
                jobqueue_cluster_class(args.cluster)
            with _load_dask_config(args):
                return COMMANDS[args.command](args)
        except DeidBatchError as exc:
            print(f"deid-batch {args.command}: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            name = signal.Signals(signum).name
            print(f"deid-batch {args.command}: interrupted ({name}); {_continue_hint(args, argv)}",
                  file=sys.stderr)
            return 128 + signum


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

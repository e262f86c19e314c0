"""The built-in example: generate a small synthetic archive and run the whole workflow on it.

``deid-batch demo FOLDER`` writes ``FOLDER/archive`` (synthetic PACS export with fake PHI), scans
it into ``FOLDER/ids.parquet``, builds ``FOLDER/mapping.csv`` (one pseudonym per patient, one new
instance id per file), writes the docs recipe to ``FOLDER/deid.recipe`` and applies it into
``FOLDER/deid`` with the manifest in ``FOLDER/deid.manifest``. No network is needed.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from deid_batch.api import run_apply, run_scan
from deid_batch.hygiene import private_file
from deid_batch.progress import ProgressBar
from deid_batch.stages.discover import discover
from deid_batch.stages.pipeline import open_executor
from deid_batch.stages.scan import ScanConfig
from deid_batch.synth import generate_archive

__all__ = ["DOCS_RECIPE", "run_demo"]

logger = logging.getLogger(__name__)

DOCS_RECIPE = """FORMAT dicom

%header

ADD PatientIdentityRemoved YES
REPLACE PatientID var:id
REPLACE SOPInstanceUID var:source_id
"""


def run_demo(folder: str, *, n_files: int = 200, workers: int | None = None,
             scheduler: str | None = None, cluster: Any = None, progress: bool = True) -> int:
    """Run the example end to end; return the exit code of the apply step."""
    folder = os.path.abspath(folder)
    archive = os.path.join(folder, "archive")
    if not os.path.isdir(archive):
        print(f"generating {n_files} synthetic DICOM files in {archive}", file=sys.stderr)
        generate_archive(archive, n_files, seed=0)
    ids_path = os.path.join(folder, "ids.parquet")
    paths = discover(archive)
    with open_executor(workers=workers, scheduler=scheduler, cluster=cluster) as ex:
        print(f"running on: {ex.description}", file=sys.stderr)
        keys, _errors = run_scan(paths, ScanConfig(), ex, parquet_path=ids_path,
                                 progress=ProgressBar("scan", enabled=progress))
        patients = pc.unique(keys["entity_id"]).to_pylist()
        pseudo = {p: f"SUBJ{i + 1:05d}" for i, p in enumerate(sorted(x for x in patients if x))}
        mapping = pa.table({
            "PatientID": keys["entity_id"],
            "SOPInstanceUID": keys["item_id"],
            "id": [pseudo.get(p) for p in keys["entity_id"].to_pylist()],
            "source_id": [f"2.25.{1000 + i}" for i in range(keys.num_rows)],
        })
        mapping_path = os.path.join(folder, "mapping.csv")
        private_file(mapping_path)  # the mapping links pseudonyms to patients: owner only
        pacsv.write_csv(mapping, mapping_path)
        recipe_path = os.path.join(folder, "deid.recipe")
        with open(recipe_path, "w", encoding="utf-8") as fh:
            fh.write(DOCS_RECIPE)
        # the docs recipe on the built-in "remove-everything" base, as `deid-batch apply` runs it
        report = run_apply(archive, recipe=recipe_path, ids=ids_path, variables=mapping_path,
                           output_folder=os.path.join(folder, "deid"), overwrite=True, client=ex.client
                           if ex.client is not None else "sync",
                           progress=ProgressBar("apply", enabled=progress))
    print("\n".join(report.summary.lines()))
    print(f"identifiers: {ids_path} (PHI: keep private)")
    print(f"mapping:     {mapping_path}")
    print(f"recipe:      {' + '.join(report.recipe_stack)}")
    print(f"output:      {report.output_folder}")
    print(f"manifest:    {report.manifest}")
    return report.exit_code

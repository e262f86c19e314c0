"""deid_batch: parallel batch de-identification of DICOM archives with deid recipes, on dask.

The workflow of deid's documentation, at archive scale::

    ids = get_identifiers("/data/pacs")                       # Arrow table of identifiers
    outputs = replace_identifiers("/data/pacs", recipe="my.recipe", variables="mapping.csv",
                                  output_folder="/share/deid")
    hits = verify("/share/deid", ids)                          # original values left: [] when clean

One pydicom Dataset, without dask: ``deidentify_dataset(ds, recipe, variables)``.
"""

from __future__ import annotations

from deid_batch.api import (
    as_lookup,
    detect_burned_pixels,
    get_identifiers,
    get_private,
    has_private,
    read_manifest,
    remove_private_identifiers,
    replace_identifiers,
    verify,
)
from deid_batch.errors import (
    ConfigError,
    DatasetError,
    DeidBatchError,
    MappingError,
    RecipeError,
    ResumeMismatchError,
)
from deid_batch.recipe.engine import EngineOptions, EngineResult, deidentify_dataset
from deid_batch.recipe.parse import Recipe, RecipeAction, load_deid, load_recipe

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DatasetError",
    "DeidBatchError",
    "EngineOptions",
    "EngineResult",
    "MappingError",
    "Recipe",
    "RecipeAction",
    "RecipeError",
    "ResumeMismatchError",
    "__version__",
    "as_lookup",
    "deidentify_dataset",
    "detect_burned_pixels",
    "get_identifiers",
    "get_private",
    "has_private",
    "load_deid",
    "load_recipe",
    "read_manifest",
    "remove_private_identifiers",
    "replace_identifiers",
    "verify",
]

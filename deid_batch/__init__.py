"""deid_batch: parallel batch de-identification of DICOM archives with deid recipes, on dask."""

from __future__ import annotations

from deid_batch.errors import (
    ConfigError,
    DatasetError,
    DeidBatchError,
    MappingError,
    RecipeError,
    ResumeMismatchError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DatasetError",
    "DeidBatchError",
    "MappingError",
    "RecipeError",
    "ResumeMismatchError",
    "__version__",
]

"""The recipe language: deid's recipe text parsed (:mod:`.parse`) into frozen values
(:mod:`.model`), compiled into a plan (:mod:`.plan`) over the field index and selectors
(:mod:`.fields`), and run on a pydicom Dataset by the engine (:mod:`.engine`, with the
``deid_func:`` built-ins of :mod:`.functions`). Nothing here knows about files, dask or the pipeline."""

from deid_batch.recipe.model import FilterCriterion, FilterLabel, Recipe, RecipeAction
from deid_batch.recipe.parse import BUILTIN_FUNCTIONS, default_recipe_path, load_deid, load_recipe

__all__ = ["BUILTIN_FUNCTIONS", "FilterCriterion", "FilterLabel", "Recipe", "RecipeAction",
           "default_recipe_path", "load_deid", "load_recipe"]

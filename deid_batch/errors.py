"""The deid_batch exception tree.

Every error raised on purpose by deid_batch derives from :class:`DeidBatchError` and also from
the built-in exception a caller would naturally catch (pyarrow's ``ArrowInvalid(ValueError, ...)``
pattern)::

    DeidBatchError(Exception)
    ├── RecipeError(ValueError)          a recipe cannot be loaded; lists every problem with file:line
    ├── MappingError(ValueError)         the variable mapping is unusable (no key column, duplicate key)
    ├── ConfigError(ValueError)          bad options: output inside input, unknown scheduler, ...
    │   └── ResumeMismatchError          --resume with a different recipe, mapping or options
    └── DatasetError(RuntimeError)       one dataset could not be de-identified (carries a reason code)

Messages name the thing (file, recipe line, option), say what is wrong and how to fix it, and
never contain a DICOM header value.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "DatasetError",
    "DeidBatchError",
    "MappingError",
    "Problem",
    "RecipeError",
    "ResumeMismatchError",
]


class DeidBatchError(Exception):
    """Base class of every deid_batch error."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a recipe: where it is and what is wrong."""

    source: str
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.message}"


class RecipeError(DeidBatchError, ValueError):
    """A recipe cannot be used; ``problems`` lists every problem found (file, line, message)."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem("<recipe>", 0, problems)]
        self.problems: tuple[Problem, ...] = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(f"{n} problem{'s' if n != 1 else ''} in recipe; nothing was processed:\n{lines}")


class MappingError(DeidBatchError, ValueError):
    """The variable mapping cannot be joined (missing key column, duplicate key, bad file)."""


class ConfigError(DeidBatchError, ValueError):
    """Options or configuration are invalid (usage error, exit code 2)."""


class ResumeMismatchError(ConfigError):
    """``--resume`` was asked with settings that differ from the interrupted run."""


class DatasetError(DeidBatchError, RuntimeError):
    """One dataset could not be processed; ``reason`` is a short code such as ``deid-error``."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)

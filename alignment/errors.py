"""Errors a user can act on. Each message names the file, key or row and what was expected."""


class AlignmentError(Exception):
    """Base class: caught by every stage's entry point and printed without a traceback."""


class RecipeError(AlignmentError):
    """A recipe (YAML + command-line overrides) is invalid."""


class DataError(AlignmentError):
    """A data source or one of its rows is invalid."""


class ModelError(AlignmentError):
    """A model cannot be resolved or loaded."""

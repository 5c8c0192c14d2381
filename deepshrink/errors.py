"""One exception hierarchy for every user-facing error.

Each message names the file, the field or the layer concerned, so the CLI can print it as a
single line (``deepshrink: error: ...``) with no traceback.
"""

__all__ = [
    "DeepShrinkError",
    "DataError",
    "FormatError",
    "ModelError",
    "ConfigError",
    "TrainingError",
    "first_line",
]


class DeepShrinkError(Exception):
    """Base class: anything the user can fix by changing an input."""


class DataError(DeepShrinkError):
    """A data set is missing, malformed, or does not match the model."""


class FormatError(DeepShrinkError):
    """A file is truncated, corrupt, or not of the expected format."""


class ModelError(DeepShrinkError):
    """A model cannot be built, loaded, or does not fit the tensors given."""


class ConfigError(DeepShrinkError):
    """An option or argument has an invalid value."""


class TrainingError(DeepShrinkError):
    """Training diverged (a non-finite loss); the message names the step and the LR."""


def first_line(exc: BaseException) -> str:
    """The first line of a foreign exception's message (its class name when it has none), for
    wrapping it into one of ours without the many lines torch and transformers often print."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]

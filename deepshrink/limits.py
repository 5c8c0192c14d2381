"""Size limits a user may move through the environment (a whole number of bytes).

One reader for every such variable (``DEEPSHRINK_MAX_IDX_BYTES``, ``DEEPSHRINK_MAX_TEXT_BYTES``),
read at each call, never at import, so a test or a user can change it between calls.
"""

from __future__ import annotations

import os

from .errors import DataError

__all__ = ["env_bytes"]


def env_bytes(variable: str, default: int) -> int:
    """``$variable`` if set (a positive whole number of bytes), else ``default``; anything else
    is one DataError naming the variable."""
    raw = os.environ.get(variable)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise DataError(f"environment variable {variable} must be a positive whole number of bytes, got {raw!r}")
    return value

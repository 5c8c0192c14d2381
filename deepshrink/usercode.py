"""Importing code the user named: a ``module:callable`` typed on the command line or passed in a
Python call, or named by a file the user trusts (``--trust-code``).

Whatever the import raises (the module is missing, a ``SyntaxError`` in it, an exception its own
top-level code throws) is one error of :mod:`deepshrink.errors` naming the module and the first
line of the exception, instead of a traceback through the user's file. Nothing here decides
whether code may be imported: that trust rule lives with the callers (``modelfile.build_arch``,
``data.spec_from_file``).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Callable

from .errors import DeepShrinkError, first_line

__all__ = ["import_user_module", "import_callable"]


def import_user_module(name: str, error: type[DeepShrinkError], where: str, hint: str = "") -> ModuleType:
    """Import module ``name``; any exception becomes ``error("{where}: cannot import {name!r}
    (Type: first line)")``, with ``hint`` added when the module (or one it imports) is not found."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, SyntaxError, whatever the module's own code raises
        more = hint if isinstance(exc, ImportError) and hint else ""
        raise error(f"{where}: cannot import {name!r} ({type(exc).__name__}: {first_line(exc)}){more}") from None


def import_callable(spec: str, error: type[DeepShrinkError], where: str) -> Callable:
    """The callable a ``module:callable`` ``spec`` names, imported (:func:`import_user_module`); a
    missing or non-callable attribute is one ``error`` too."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise error(f"{where}: {spec!r} is not module:callable")
    imported = import_user_module(module, error, where)
    if not hasattr(imported, attr):
        raise error(f"{where}: cannot import {spec!r} (module {module!r} has no attribute {attr!r})")
    found = getattr(imported, attr)
    if not callable(found):
        raise error(f"{where}: cannot import {spec!r} ({module}.{attr} is a {type(found).__name__}, not a callable)")
    return found

"""deepshrink.usercode: a user's module that fails to import (missing, a SyntaxError, its own code
raising) is one error of ours naming the module and the first line of the exception."""

from __future__ import annotations

import sys

import pytest

from deepshrink.errors import ConfigError, DataError, ModelError
from deepshrink.usercode import import_callable, import_user_module

MODULES = {
    "ds_uc_good": "def build():\n    return 1\nVALUE = 3\n",
    "ds_uc_syntax": "def build(:\n    pass\n",
    "ds_uc_raises": "raise RuntimeError('no GPU here\\nsecond line of the story')\n",
    "ds_uc_imports_missing": "import ds_uc_no_such_dependency\n",
}


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    for name, text in MODULES.items():
        (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in MODULES:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("module,words", [
    ("ds_uc_syntax", ["SyntaxError", "ds_uc_syntax.py", "line 1"]),
    ("ds_uc_raises", ["RuntimeError: no GPU here"]),
    ("ds_uc_imports_missing", ["ModuleNotFoundError", "ds_uc_no_such_dependency", "HINT"]),
    ("ds_uc_not_there", ["ModuleNotFoundError", "HINT"]),
])
def test_a_failing_import_is_one_error_naming_the_module(user_modules, module, words):
    with pytest.raises(ModelError) as exc:
        import_user_module(module, ModelError, "WHERE", hint="; HINT")
    text = str(exc.value)
    assert text.startswith(f"WHERE: cannot import {module!r} (") and "\n" not in text
    for w in words:
        assert w in text, text
    assert "second line" not in text
    assert ("HINT" in text) == ("HINT" in words)      # the hint is for a module not found only
    assert module not in sys.modules


def test_import_callable(user_modules):
    assert import_callable("ds_uc_good:build", DataError, "data factory")() == 1
    with pytest.raises(DataError, match=r"data factory: cannot import 'ds_uc_good:nope' .*no attribute 'nope'"):
        import_callable("ds_uc_good:nope", DataError, "data factory")
    with pytest.raises(DataError, match="not a callable"):
        import_callable("ds_uc_good:VALUE", DataError, "data factory")
    with pytest.raises(ConfigError, match="RuntimeError: no GPU here"):
        import_callable("ds_uc_raises:build", ConfigError, "x")
    with pytest.raises(ConfigError, match="module:callable"):
        import_callable("ds_uc_good:", ConfigError, "x")

"""Guard rails of the command line: a reader that stops early (``| head``) ends a command quietly;
``--sparsities`` accepts the ``0.4,0.5,...,0.9`` its help shows; a ``module:callable`` typed in
``--model`` / ``--data`` is found in the current folder, one named only inside a file is not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deepshrink.cli import SIGPIPE_EXIT, build_parser, main
from deepshrink.cli.parser import help_text
from deepshrink.cli.sensitivity import MAX_GRID, parse_grid
from deepshrink.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- a closed pipe

class _ClosedPipe:
    """A stdout whose reader has gone: every write raises BrokenPipeError."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        pass


def test_a_closed_stdout_ends_the_command_quietly(monkeypatch):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["models", "--recipes", "--json"]) == SIGPIPE_EXIT == 141


def _worker_pipe_breaks(args):
    """A command whose own pipe to a worker breaks: a BrokenPipeError that is not stdout's."""
    raise BrokenPipeError(32, "Broken pipe")


def test_another_broken_pipe_is_not_taken_for_the_reader_gone(monkeypatch, capsys):
    monkeypatch.setattr("deepshrink.cli.models.cmd_models", _worker_pipe_breaks)
    with pytest.raises(BrokenPipeError):                  # reported in full, not a silent exit 141
        main(["models"])


@pytest.mark.parametrize("reader_gone", [True, False])
def test_a_broken_pipe_ends_quietly_only_when_stdout_is_that_pipe(monkeypatch, reader_gone):
    """stdout a real pipe with nothing left to flush: only when its own reader has gone is the
    BrokenPipeError the reader gone (exit 141)."""
    monkeypatch.setattr("deepshrink.cli.models.cmd_models", _worker_pipe_breaks)
    r, w = os.pipe()
    out = os.fdopen(w, "w")
    try:
        if reader_gone:
            os.close(r)
        monkeypatch.setattr(sys, "stdout", out)
        if reader_gone:
            assert main(["models"]) == SIGPIPE_EXIT
        else:
            with pytest.raises(BrokenPipeError):
                main(["models"])
    finally:
        monkeypatch.undo()
        out.close()
        if not reader_gone:
            os.close(r)


def test_piped_into_a_reader_that_stops_no_traceback():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "deepshrink", "models", "--recipes", "--json"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the command writes (it is still importing torch)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == SIGPIPE_EXIT, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("deepshrink ")


# ----------------------------------------------------------------------------- --sparsities

@pytest.mark.parametrize("text,grid", [
    ("0.4,0.5,...,0.9", (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)),
    ("0.5,0.7,0.9", (0.5, 0.7, 0.9)),
    ("0,0.25,...,1", (0.0, 0.25, 0.5, 0.75, 1.0)),
    ("0.9,0.8,...,0.6,0.95", (0.9, 0.8, 0.7, 0.6, 0.95)),
    ("0.1, 0.2, \u2026, 0.4", (0.1, 0.2, 0.3, 0.4)),
    ("0.4,0.5,...,0.6", (0.4, 0.5, 0.6)),
])
def test_sparsity_grid_with_an_ellipsis(text, grid):
    assert parse_grid(text) == pytest.approx(grid, abs=1e-12)


@pytest.mark.parametrize("text", ["0.5,...,0.9", "0.4,0.5,...", "0.4,0.5,...,0.95", "0.4,0.5,...,0.3",
                                  "0.4,0.4,...,0.9", "0,1e-6,...,1", "0.4,0.5,...,...,0.9", "a,b", ","])
def test_bad_grids_are_refused(text):
    with pytest.raises(ConfigError, match="--sparsities"):
        parse_grid(text)
    assert MAX_GRID < 1e6


def test_the_example_in_the_help_is_accepted(trained, tmp_path, capsys):
    p = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices)  # the subcommands
    sens = p.choices["sensitivity"]
    text = help_text(sens, sens._option_string_actions["--sparsities"])
    assert "0.4,0.5,...,0.9" in text
    _, _, model = trained
    out_dir = tmp_path / "scan"
    assert main(["sensitivity", str(model), "--out-dir", str(out_dir), "--sparsities", "0.7,0.8,...,0.9",
                 "--val-size", "32", "--no-progress"]) == 0
    assert json.loads((out_dir / "sensitivity.json").read_text())["sparsities"] == pytest.approx([0.7, 0.8, 0.9])


# ----------------------------------------------------------------------------- code in the current folder

MYNET = textwrap.dedent("""
    from torch import nn

    def build(num_classes=10):
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, num_classes))
""")

MYDATA = textwrap.dedent("""
    import numpy as np

    def load():
        rng = np.random.default_rng(0)
        def split(n):
            y = np.arange(n) % 10
            x = rng.integers(0, 80, (n, 28, 28)).astype(np.uint8)
            x[np.arange(n), 2 * y, 2 * y] = 255
            return x, y
        return split(128), split(32)
""")


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """A folder holding the user's ``cwd_net.py`` and ``cwd_data.py``, made the current one; their
    modules are forgotten again afterwards."""
    (tmp_path / "cwd_net.py").write_text(MYNET)
    (tmp_path / "cwd_data.py").write_text(MYDATA)
    monkeypatch.chdir(tmp_path)
    path_before = list(sys.path)
    yield tmp_path
    for name in ("cwd_net", "cwd_data"):
        sys.modules.pop(name, None)
    assert sys.path == path_before  # the folder was on the path for the import only


def test_model_and_data_typed_on_the_command_line_come_from_the_current_folder(user_folder, trained, capsys,
                                                                              run_error):
    _, spec, _ = trained
    assert main(["train", "--model", "cwd_net:build", "--data", spec, "--epochs", "1", "--no-progress",
                 "--out", "m.safetensors"]) == 0
    assert str(user_folder) not in sys.path and os.getcwd() not in sys.path
    sys.modules.pop("cwd_net")  # a later run, in a fresh process
    # named only inside the file: never imported from the current folder, --trust-code or not
    assert "--trust-code" in run_error(capsys, ["evaluate", "m.safetensors", "--data", spec])
    line = run_error(capsys, ["evaluate", "m.safetensors", "--data", spec, "--trust-code"])
    assert "cannot import" in line and "cwd_net" in line
    # named on the command line: found in the current folder
    capsys.readouterr()
    assert main(["evaluate", "m.safetensors", "--model", "cwd_net:build", "--data", spec, "--json"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1
    sys.modules.pop("cwd_net")
    assert main(["profile", "m.safetensors", "--model", "cwd_net:build", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["params"] == 784 * 16 + 16 + 16 * 10 + 10
    # --data module:callable too
    assert main(["train", "--model", "lenet300", "--data", "cwd_data:load", "--epochs", "1", "--no-progress",
                 "--out", "d.safetensors"]) == 0


def test_a_missing_module_is_one_line_naming_the_flag(user_folder, capsys, run_error):
    line = run_error(capsys, ["train", "--model", "no_such_module_here:build", "--epochs", "1",
                              "--out", "x.safetensors"])
    assert "--model" in line and "no_such_module_here" in line and "current folder" in line
    line = run_error(capsys, ["train", "--model", "lenet300", "--data", "no_such_data_here:load", "--epochs", "1",
                              "--out", "x.safetensors"])
    assert "--data" in line and "no_such_data_here" in line
    assert not (user_folder / "x.safetensors").exists()


def test_a_module_that_fails_to_import_is_one_line_naming_it(user_folder, capsys, run_error):
    """A SyntaxError in ./broken_net.py, or its own code raising at import: one line naming the flag,
    the module and the first line of the exception, no traceback."""
    (user_folder / "broken_net.py").write_text("def build(:\n    pass\n")
    (user_folder / "broken_data.py").write_text("raise RuntimeError('needs the dataset on /mnt\\nsecond line')\n")
    line = run_error(capsys, ["train", "--model", "broken_net:build", "--epochs", "1", "--out", "x.safetensors"])
    assert "--model 'broken_net:build'" in line and "SyntaxError" in line and "broken_net.py" in line, line
    line = run_error(capsys, ["profile", "x.safetensors", "--model", "broken_net:build"])
    assert "--model 'broken_net:build'" in line and "SyntaxError" in line, line
    line = run_error(capsys, ["train", "--model", "lenet300", "--data", "broken_data:load", "--epochs", "1",
                              "--out", "x.safetensors"])
    assert "--data 'broken_data:load'" in line and "RuntimeError: needs the dataset on /mnt" in line, line
    assert "second line" not in line and "current folder" not in line
    assert not (user_folder / "x.safetensors").exists()
    assert "broken_net" not in sys.modules and "broken_data" not in sys.modules


def test_train_imports_nothing_for_an_hf_folder(user_folder, capsys, run_error):
    """train shares the typed-code import of every command: ``hf:DIR`` is no module:callable."""
    line = run_error(capsys, ["train", "--model", f"hf:{user_folder}", "--data", "npz:missing.npz", "--epochs", "1",
                              "--out", "x.safetensors"])
    assert "cannot import" not in line and "missing.npz" in line, line

"""Shared test helpers, exposed as fixtures.

- ``one_thread``: one intra-op torch thread for a whole module; opt in with
  ``pytestmark = pytest.mark.usefixtures("one_thread")``.
- ``make_dataset``: factory for the separable synthetic ``Dataset`` (class prototypes plus noise).
- ``write_npz``: factory writing a learnable tiny-image ``.npz`` file, returning its ``npz:`` data spec.
- ``train_cli_model``: factory running one tiny ``deepshrink train`` through the CLI.
- ``run_error``: run the CLI expecting a one-line user error with exit code 2.
- ``idx_dir_writer``: factory writing an MNIST-style IDX folder; the IDX encoders themselves
  (``idx_bytes``, ``write_idx_dir``, ...) are plain functions that tests/test_data.py imports
  (pytest puts this folder on sys.path).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deepshrink.cli import main
from deepshrink.data import Dataset, Split


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: far faster for these tiny models on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- synthetic data

def _make_dataset(n_train=256, n_test=64, classes=4, hw=8, noise=0.6, seed=0) -> Dataset:
    """Separable synthetic images: one random prototype per class plus Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(classes, 1, hw, hw, generator=g)

    def split(n):
        y = torch.randint(0, classes, (n,), generator=g)
        x = protos[y] + noise * torch.randn(n, 1, hw, hw, generator=g)
        return Split(x, y)

    return Dataset("synthetic", split(n_train), split(n_test), [0.0], [1.0], classes)


@pytest.fixture(scope="session")
def make_dataset():
    """``make_dataset(n_train=256, n_test=64, classes=4, hw=8, noise=0.6, seed=0) -> Dataset``."""
    return _make_dataset


def _write_npz(path: Path, n_train=256, n_test=64, hw=28, classes=10, seed=0) -> str:
    """Learnable tiny images: a class-dependent bright square plus noise."""
    rng = np.random.default_rng(seed)

    def split(n):
        y = np.arange(n) % classes
        rng.shuffle(y)
        x = rng.integers(0, 80, (n, hw, hw)).astype(np.uint8)
        for i, c in enumerate(y):
            r = (c * 2) % (hw - 4)
            x[i, r:r + 4, r:r + 4] = 255
        return x, y.astype(np.uint8)

    xs, ys = split(n_train)
    xt, yt = split(n_test)
    np.savez(path, x_train=xs, y_train=ys, x_test=xt, y_test=yt)
    return f"npz:{path}"


@pytest.fixture(scope="session")
def write_npz():
    """``write_npz(path, n_train=256, n_test=64, hw=28, classes=10, seed=0) -> "npz:<path>"``."""
    return _write_npz


# ----------------------------------------------------------------------------- CLI

def _train_cli_model(root: Path, out_name: str) -> tuple[Path, str, Path]:
    """One tiny training run through the CLI: lenet300, 1 epoch on ``root/tiny.npz``."""
    spec = _write_npz(root / "tiny.npz")
    out = root / out_name
    code = main(["train", "--model", "lenet300", "--data", spec, "--epochs", "1", "--batch-size", "64",
                 "--no-progress", "--out", str(out)])
    assert code == 0
    return root, spec, out


@pytest.fixture(scope="session")
def train_cli_model():
    """``train_cli_model(root, out_name) -> (root, data_spec, model_file)``."""
    return _train_cli_model


def _run_error(capsys, argv) -> str:
    """Run the CLI expecting a user error: exit 2, one stderr line, no traceback."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("deepshrink: error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="session")
def run_error():
    """``run_error(capsys, argv) -> str``: the single ``deepshrink: error: ...`` line."""
    return _run_error


# ----------------------------------------------------------------------------- IDX files

# put before every torchrun script: the shared imports, a dataset and a teardown
_TORCHRUN_PRELUDE = r"""
import os, sys
import torch
import torch.distributed as dist
from deepshrink.data import Dataset, Split


def synthetic_dataset():
    # 4 classes of noisy 8x8 prototypes (256 train, 64 test), the same on every rank
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(4, 1, 8, 8, generator=g)
    def split(n):
        y = torch.randint(0, 4, (n,), generator=g)
        return Split(protos[y] + 0.6 * torch.randn(n, 1, 8, 8, generator=g), y)
    return Dataset("synthetic", split(256), split(64), [0.0], [1.0], 4)


def finish():
    dist.barrier()  # no rank tears the group down while another still uses it
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)     # skip interpreter teardown: under load gloo's threads can abort it ("terminate called
                    # without an active exception", exit -6) after the work and its checks are done
"""


def _torchrun_two_ranks(source: str, out_dir: Path, *args: str, timeout: int = 120) -> None:
    """Run ``source`` (after the prelude: ``os``, ``sys``, ``torch``, ``dist``, ``Dataset``,
    ``Split``, ``synthetic_dataset()``, ``finish()``) as a script on 2 CPU ranks (torchrun,
    gloo) with ``out_dir`` and ``args`` as its arguments; fail with the tail of its output
    unless every rank exits 0."""
    script = out_dir / "ddp_script.py"
    script.write_text(_TORCHRUN_PRELUDE + source)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
         str(script), str(out_dir), *args],
        cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="session")
def torchrun_two_ranks():
    return _torchrun_two_ranks


from idx_files import write_idx_dir  # noqa: E402


@pytest.fixture(scope="session")
def idx_dir_writer():
    """``write_idx_dir(folder, n_train, n_test, gz, h, w)``: an MNIST-style IDX folder."""
    return write_idx_dir

"""deepshrink models, run as ``python -m deepshrink``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from deepshrink import models
from deepshrink.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_models_command_in_subprocess():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "deepshrink", "models"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in models.names():
        assert name in proc.stdout


def test_cli_models_lists_zoo(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("lenet300", "lenet5", "vgg", "resnet20", "mobilenetv2"):
        assert name in out
    assert "431,080" in out


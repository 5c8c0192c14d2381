"""deepshrink models, run as ``python -m deepshrink``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from deepshrink import models

REPO = Path(__file__).resolve().parents[2]


def test_models_command_in_subprocess():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "deepshrink", "models"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in models.names():
        assert name in proc.stdout

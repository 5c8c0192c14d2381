"""deepshrink models, run as ``python -m deepshrink``, and ``--recipes``: each zoo model's training recipe."""

from __future__ import annotations

import json
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



def test_models_recipes(capsys):
    from dataclasses import asdict

    from deepshrink.cli.models import RECIPE_FIELDS
    from deepshrink.models.recipes import TARGETS, recipe

    assert main(["models", "--recipes", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert list(table) == models.names()
    for name, row in table.items():   # the oracle: what ``deepshrink train --model NAME`` trains with
        cfg = asdict(recipe(name))
        assert {k: row[k] for k in RECIPE_FIELDS} == {k: cfg[k] for k in RECIPE_FIELDS}, name
        assert row.get("target_accuracy") == TARGETS.get(name)
    assert main(["models", "--recipes"]) == 0
    text = capsys.readouterr().out
    assert "epochs" in text and "optimizer" in text and "lr" in text and "augment" in text
    lenet300 = next(line.split() for line in text.splitlines() if line.startswith("lenet300 "))
    assert lenet300[1] == str(recipe("lenet300").epochs) and "off" in lenet300 and "89.5%" in lenet300

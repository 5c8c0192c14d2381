"""deepshrink profile: per-layer costs as a table or JSON; bad input is one line."""

from __future__ import annotations

import json

from deepshrink.cli import main


def test_cli_profile_json(capsys):
    assert main(["profile", "--model", "lenet5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    t = out["totals"]
    for key in ("params", "nonzero_params", "macs", "memory_accesses", "bytes"):
        assert key in t
    assert t["params"] == 431_080
    assert t["macs"] == 2_293_000
    assert out["model"] == "lenet5"


def test_cli_profile_missing_file(capsys, tmp_path):
    code = main(["profile", str(tmp_path / "missing.safetensors")])
    assert code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepshrink: error:")


def test_cli_profile_bad_shape(capsys):
    assert main(["profile", "--model", "lenet5", "--input-shape", "1,1,5,5"]) == 2
    assert capsys.readouterr().err.startswith("deepshrink: error:")


"""Hypothesis mutates the JSON of a real model file and a real .dsz header (tests/fuzz_files.py):
only deepshrink errors come out, and the process's peak memory stays bounded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_GROWTH_MB = 256


def test_mutated_metadata_and_headers_give_only_deepshrink_errors():
    proc = subprocess.run([sys.executable, str(HERE / "fuzz_files.py"), "150"], capture_output=True, text=True,
                          timeout=240, cwd=HERE.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    out = result["outcomes"]
    # both files were really exercised, and most mutations were refused rather than ignored
    assert out.get("st-refused", 0) > 0 and out.get("dsz-refused", 0) > 0, out
    assert sum(out.values()) == 2 * result["examples"], out
    assert result["peak_growth_mb"] < MAX_GROWTH_MB, result

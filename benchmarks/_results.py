"""Shared by the benchmark scripts: write a results JSON and regenerate BENCHMARKS.md.

Every ``benchmarks/results/*.json`` carries ``title``, ``command``, ``machine``, ``date`` and a
``table`` ({"columns": [...], "rows": [[...], ...]}), optionally more ``tables`` (each with a
``title``), plus its raw numbers; BENCHMARKS.md is
rebuilt from all of them, so no figure is typed by hand.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deepshrink.atomic import atomic_write_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"

__all__ = ["machine", "write_result", "regenerate_markdown", "RESULTS", "ROOT"]


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


def write_result(name: str, payload: dict) -> Path:
    payload = {"date": _dt.date.today().isoformat(), "machine": machine(), **payload}
    path = RESULTS / f"{name}.json"
    atomic_write_text(path, json.dumps(payload, indent=1, default=float) + "\n")
    regenerate_markdown()
    return path


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def regenerate_markdown() -> None:
    parts = ["# Benchmarks", "",
             "Generated from `benchmarks/results/*.json` by the scripts in `benchmarks/`; "
             "every figure below was measured by the command shown above its table.", ""]
    for path in sorted(RESULTS.glob("*.json")):
        try:
            res = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        parts += [f"## {res.get('title', path.stem)}", ""]
        if res.get("command"):
            parts += [f"`{res['command']}` ({res.get('date', '?')}, {res.get('machine', {}).get('cpu_count', '?')} cores, "
                      f"torch {res.get('machine', {}).get('torch', '?')})", ""]
        # "table": the main table; "tables": further ones, each with its own "title"
        for table in ([res["table"]] if res.get("table") else []) + list(res.get("tables", [])):
            if table.get("title"):
                parts += [f"**{table['title']}**", ""]
            parts.append("| " + " | ".join(table["columns"]) + " |")
            parts.append("|" + "---|" * len(table["columns"]))
            for row in table["rows"]:
                parts.append("| " + " | ".join(_cell(v) for v in row) + " |")
            parts.append("")
        for note in res.get("notes", []):
            parts.append(f"- {note}")
        parts.append("")
    atomic_write_text(ROOT / "BENCHMARKS.md", "\n".join(parts).rstrip() + "\n")

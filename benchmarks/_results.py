"""Shared by the benchmark scripts: the baselines they start from, the results file as it is
now, the command line that made a result, and writing a results JSON, from which BENCHMARKS.md
is regenerated.

Every ``benchmarks/results/*.json`` carries ``title``, ``command``, ``machine``, ``date`` and a
``table`` ({"columns": [...], "rows": [[...], ...]}), optionally more ``tables`` (each with a
``title``), plus its raw numbers; BENCHMARKS.md is
rebuilt from all of them, so no figure is typed by hand.

The scripts run as files, ``python benchmarks/NAME.py`` (the command every results file
records): Python puts a script's own folder first on ``sys.path``, so the helpers beside it
(this module, ``_teachers``, ``_codec_peers``) import by name, and ``deepshrink`` comes from
the installed package (``make setup`` installs it in editable mode).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path

import torch

try:
    from deepshrink.atomic import atomic_write_text
    from deepshrink.io import load_model
except ModuleNotFoundError as exc:
    if exc.name != "deepshrink":
        raise
    raise SystemExit("deepshrink is not installed in this Python: run `make setup` "
                     "(or `pip install -e .`) first") from None

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BASELINES = ROOT / "checkpoints" / "baselines"

__all__ = ["ROOT", "RESULTS", "BASELINES", "baseline_path", "load_baseline", "previous", "command",
           "command_from_args", "merge_commands", "machine", "write_result", "regenerate_markdown"]


def baseline_path(name: str) -> Path:
    """The committed baseline checkpoint of zoo model ``name`` (written by baselines.py)."""
    return BASELINES / f"{name}.safetensors"


def load_baseline(name: str):
    """(model, ModelInfo, the training settings it recorded) of the baseline ``name``."""
    model, info = load_model(baseline_path(name))
    return model, info, info.train_config()


def previous(name: str) -> dict:
    """The results file ``name`` as it is now ({} if there is none): runs not repeated are kept
    from it, so a benchmark's parts can run apart."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def command(script: str, args: list[str] | tuple[str, ...] = (), python: str = "python") -> str:
    """The command line recorded with a result: ``python benchmarks/SCRIPT.py ARGS``."""
    return " ".join([f"{python} benchmarks/{script}.py", *args])


def command_from_args(script: str, args) -> str:
    """``command`` with every option of an argparse namespace spelt out (flags set: named;
    flags unset and options left at None: omitted), so the record does not depend on defaults."""
    parts = []
    for key, value in vars(args).items():
        if value is False or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        else:
            parts.append(f"{flag} {' '.join(map(str, value)) if isinstance(value, list) else value}")
    return command(script, parts)


def merge_commands(*groups) -> list[str]:
    """The commands of several runs, in order, each once."""
    return list(dict.fromkeys(c for group in groups for c in group))


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


def write_result(name: str, payload: dict, *, rebuilt: bool = False) -> Path:
    """Write ``results/NAME.json`` (stamped with today's date and this machine) and regenerate
    BENCHMARKS.md. ``rebuilt``: nothing was measured (tables rebuilt from the stored runs), so
    the file keeps the date and machine of the runs it describes."""
    stamp = {"date": _dt.date.today().isoformat(), "machine": machine()}
    if rebuilt:
        old = previous(name)
        stamp.update({k: old[k] for k in stamp if k in old})
    path = RESULTS / f"{name}.json"
    atomic_write_text(path, json.dumps({**stamp, **payload}, indent=1, default=float) + "\n")
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

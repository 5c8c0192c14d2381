"""The README runs as written: every ```bash/```sh/```shell and ```python block of README.md, in
order, in a temporary working folder, with tiny epoch counts, so the README cannot drift from the
code again.

How it runs (``test_readme_runs``):

* the working folder is a fresh temporary one holding a copy of ``checkpoints/`` (what a fresh
  clone has); every output goes to its ``runs/``, nothing is written into the repository;
* ``deepshrink`` and ``python`` resolve to this interpreter's virtual environment (the README tells
  the user to activate it: ``. .venv/bin/activate``);
* the data is a subset of the real Fashion-MNIST (:data:`N_TRAIN` training and :data:`N_TEST` test
  images, first of each split), written as an IDX folder and named by ``$DEEPSHRINK_DATA``, the
  variable the library already honours for the ``fashion-mnist`` spec;
* :func:`shrink_shell` / :func:`shrink_python` make the epoch counts tiny (``--epochs N``,
  ``--finetune-epochs N``, ``--centroid-epochs N``, ``epochs=N`` become 1; a command that trains
  several epochs by default gets its epoch flag set to 1, :data:`DEFAULT_EPOCHS`) and lift
  ``compress``'s accuracy budget (``--max-drop 100``), which tiny training cannot meet; nothing
  else changes;
* the inputs a user brings for the Hugging Face example (``models/bert``, ``sentences.txt``) are a
  tiny random-weight BERT and random sentences (tests/hf_files.py);
* each shell command (a line, with its ``\\`` continuations) must exit 0; each Python block runs as
  its own script and must exit 0.

A block is skipped only when the line before it is ``<!-- readme-test: skip -->``; the skipped
blocks are exactly :data:`SKIPPED` (the set-up commands, which install and must not run here).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from deepshrink.cli import build_parser
from deepshrink.idx import read_idx
from hf_files import bert_folder, write_sentences
from idx_files import write_idx_files

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FASHION = Path("/usr/share/datasets/fashion-mnist")
SKIP_MARK = "<!-- readme-test: skip -->"
SHELL_LANGS = ("bash", "sh", "shell")
N_TRAIN, N_TEST = 1000, 250            # the Fashion-MNIST subset the commands see
COMMAND_TIMEOUT = 240                  # seconds for one command or block (a hang fails, never waits forever)

# the first line of every block the test skips, and why
SKIPPED = {
    "make demo": "installs the environment and runs the full demo",
}


@dataclass
class Block:
    """One fenced code block of the README."""

    lang: str
    code: str
    line: int          # 1-based line of the opening fence
    skip: bool

    @property
    def first_line(self) -> str:
        return self.code.strip().splitlines()[0].split("#")[0].strip() if self.code.strip() else ""


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text`` in order: language (lower case, '' when none), code, where, and
    whether the line before the fence (blank lines aside) is :data:`SKIP_MARK`."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^\s*```\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1).lower()
        j = i + 1
        while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
            j += 1
        before = next((lines[k].strip() for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        blocks.append(Block(lang, "\n".join(lines[start + 1:j]) + "\n", start + 1, before == SKIP_MARK))
        i = j + 1
    return blocks


def shell_commands(code: str) -> list[str]:
    """The commands of a shell block: lines joined over ``\\`` continuations, blank lines and
    whole-line comments dropped (a trailing comment stays: the shell ignores it)."""
    out: list[str] = []
    pending = ""
    for raw in code.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip() and not line.lstrip().startswith("#"):
            out.append(line.strip())
    if pending.strip():
        out.append(pending.strip())
    return out


_EPOCH_FLAGS = r"(?<![\w-])--(?:epochs|finetune-epochs|centroid-epochs)"
# commands that train several epochs unless told otherwise, and the flag that says how many
DEFAULT_EPOCHS = {"train": "--epochs", "distill": "--epochs", "prune": "--finetune-epochs",
                  "prune-channels": "--finetune-epochs", "compress": "--finetune-epochs",
                  "search": "--finetune-epochs"}


def _append(cmd: str, words: str) -> str:
    """``cmd`` with ``words`` added before its trailing comment, if any."""
    code, hash_, comment = cmd.partition(" #")
    return code.rstrip() + " " + words + (" #" + comment if hash_ else "")


def shrink_shell(cmd: str) -> str:
    """``cmd`` with tiny epoch counts and no accuracy budget to meet (see the module docstring)."""
    cmd = re.sub(rf"({_EPOCH_FLAGS})([ =])[0-9.]+", r"\1\g<2>1", cmd)
    m = re.match(r"deepshrink\s+([\w-]+)", cmd)
    command = m.group(1) if m else None
    flag = DEFAULT_EPOCHS.get(command)
    if flag and not re.search(rf"(?<![\w-]){flag}[ =]", cmd):
        cmd = _append(cmd, f"{flag} 1")
    if command in ("compress", "search"):
        if re.search(r"--max-drop[ =]", cmd):
            cmd = re.sub(r"--max-drop([ =])[0-9.]+", r"--max-drop\g<1>100", cmd)
        else:
            cmd = _append(cmd, "--max-drop 100")
    return cmd


def shrink_python(code: str) -> str:
    """``code`` with every ``epochs=N`` keyword argument set to 1."""
    return re.sub(r"\bepochs=[0-9.]+", "epochs=1", code)


# ----------------------------------------------------------------------------- fast checks


@pytest.fixture(scope="module")
def blocks() -> list[Block]:
    return readme_blocks(README.read_text())


def test_parser_finds_blocks_continuations_and_skips():
    text = ("x\n<!-- readme-test: skip -->\n\n```sh\nmake demo\n```\n"
            "```bash\ndeepshrink a \\\n    --b 1   # note\n# comment\n\ndeepshrink c\n```\n"
            "```python\nprint(1)\n```\n```\nplain\n```\n")
    got = readme_blocks(text)
    assert [(b.lang, b.skip, b.line) for b in got] == [("sh", True, 4), ("bash", False, 7), ("python", False, 14),
                                                      ("", False, 17)]
    assert shell_commands(got[1].code) == ["deepshrink a      --b 1   # note", "deepshrink c"]


def test_shrinking_rewrites_only_epoch_counts_and_compress_budget():
    assert shrink_shell("deepshrink prune m --finetune-epochs 20 --sparsity 0.9") == \
        "deepshrink prune m --finetune-epochs 1 --sparsity 0.9"
    assert shrink_shell("deepshrink train --epochs=3 --out x") == "deepshrink train --epochs=1 --out x"
    assert shrink_shell("deepshrink train --model m --out x   # recipe") == \
        "deepshrink train --model m --out x --epochs 1 # recipe"
    assert shrink_shell("deepshrink distill --warmup-epochs 2 --out x") == \
        "deepshrink distill --warmup-epochs 2 --out x --epochs 1"
    assert shrink_shell("deepshrink compress m --max-drop 0.5 --centroid-epochs 2") == \
        "deepshrink compress m --max-drop 100 --centroid-epochs 1 --finetune-epochs 1"
    assert shrink_shell("deepshrink compress m --out x.dsz   # note") == \
        "deepshrink compress m --out x.dsz --finetune-epochs 1 --max-drop 100 # note"
    assert shrink_shell("deepshrink prune-channels m --max-drop 0.5 --finetune-epochs 6") == \
        "deepshrink prune-channels m --max-drop 0.5 --finetune-epochs 1"
    assert shrink_shell("deepshrink quantize m --out x") == "deepshrink quantize m --out x"
    assert shrink_python("TrainConfig(epochs=10, augment=False)") == "TrainConfig(epochs=1, augment=False)"


def test_skipped_blocks_are_only_the_listed_setup_commands(blocks):
    skipped = {b.first_line for b in blocks if b.skip}
    assert skipped == set(SKIPPED), "a skipped README block must be listed (with its reason) in SKIPPED"


def test_readme_commands_use_the_current_flag_spellings(blocks):
    """Every option a README ``deepshrink`` command passes is one its ``--help`` lists: no hidden old
    spelling, no unknown flag; and the commands are called one way, bare ``deepshrink``."""
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    checked = 0
    for b in blocks:
        if b.lang not in SHELL_LANGS or b.skip:
            continue
        for cmd in shell_commands(b.code):
            for part in cmd.split("|"):
                words = part.split("#")[0].split()
                if ".venv/bin/deepshrink" in words:
                    pytest.fail(f"README line {b.line}: call deepshrink as the README says (venv active), not "
                                f".venv/bin/deepshrink: {cmd}")
                if not words or words[0] != "deepshrink" or len(words) < 2:
                    continue
                parser = sub[words[1]]
                visible = {s for a in parser._actions if a.help != "==SUPPRESS=="
                           for s in a.option_strings if s not in getattr(a, "hidden_aliases", ())}
                for w in words[2:]:
                    flag = w.split("=")[0]
                    if flag.startswith("--"):
                        assert flag in visible, f"README line {b.line}: deepshrink {words[1]} has no listed {flag}"
                        checked += 1
    assert checked > 20


def test_readme_prose_uses_no_old_flag_spelling():
    """Inline code too (``deepshrink compress FILE [--bits 8] ...``): no option the README names
    is an old spelling that some command only keeps as a hidden alias."""
    visible, old = set(), set()
    for parser in next(a for a in build_parser()._actions if a.dest == "command").choices.values():
        for a in parser._actions:
            hidden = set(getattr(a, "hidden_aliases", ())) | (set(a.option_strings) if a.help == "==SUPPRESS==" else set())
            old |= hidden
            visible |= set(a.option_strings) - hidden
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", README.read_text()))
    assert not named & (old - visible), "README: use the current spelling (deepshrink <command> --help)"


# ----------------------------------------------------------------------------- the run


def _tiny_fashion(folder: Path) -> None:
    """The first N_TRAIN / N_TEST images of the real Fashion-MNIST, as an uncompressed IDX folder."""
    x = read_idx(FASHION / "train-images-idx3-ubyte.gz")[:N_TRAIN]
    y = read_idx(FASHION / "train-labels-idx1-ubyte.gz")[:N_TRAIN]
    xt = read_idx(FASHION / "t10k-images-idx3-ubyte.gz")[:N_TEST]
    yt = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")[:N_TEST]
    write_idx_files(folder, np.ascontiguousarray(x), np.ascontiguousarray(y), np.ascontiguousarray(xt),
                    np.ascontiguousarray(yt), gz=False)


def _user_inputs(work: Path) -> None:
    """What the README's Hugging Face example expects the user to bring: a model folder and sentences."""
    pytest.importorskip("transformers")
    bert_folder(work / "models" / "bert", initializer_range=0.2)
    write_sentences(work / "sentences.txt", n=60)


def _run(argv, what: str, work: Path, env: dict) -> float:
    """Run one command or block in its own process group; fail unless it exits 0 within
    COMMAND_TIMEOUT (then the whole group is killed, so no grandchild keeps the pipes open)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{what}: still running after {COMMAND_TIMEOUT} s\n--- stdout\n{out[-3000:]}\n--- stderr\n"
                    f"{err[-3000:]}")
    took = time.perf_counter() - t0
    assert proc.returncode == 0, f"{what} exited {proc.returncode}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}"
    return took


@pytest.mark.timeout(600)   # measured 3.5-4 minutes on 2 cores shared with other jobs; each command has its own limit
@pytest.mark.skipif(not (FASHION / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="needs the Debian package dataset-fashion-mnist (make test installs it)")
def test_readme_runs(blocks, tmp_path):
    work = tmp_path / "clone"
    work.mkdir()
    shutil.copytree(ROOT / "checkpoints", work / "checkpoints")
    data = tmp_path / "fashion-mnist-subset"
    _tiny_fashion(data)
    _user_inputs(work)
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "DEEPSHRINK_DATA": str(data),
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    env.pop("VIRTUAL_ENV", None)
    timings: list[tuple[float, str]] = []
    ran = 0
    for b in blocks:
        if b.skip or b.lang not in SHELL_LANGS + ("python",):
            continue
        if b.lang == "python":
            script = tmp_path / f"readme_block_line{b.line}.py"
            script.write_text(shrink_python(b.code))
            timings.append((_run([sys.executable, str(script)], f"README line {b.line}: python block", work, env),
                            f"python block at line {b.line}"))
            ran += 1
            continue
        for cmd in shell_commands(b.code):
            cmd = shrink_shell(cmd)
            timings.append((_run(["bash", "-e", "-o", "pipefail", "-c", cmd], f"README line {b.line}: {cmd}", work, env),
                            cmd))
            ran += 1
    assert ran > 30
    assert any((work / "runs").iterdir())                  # the outputs went to the working folder
    for took, what in sorted(timings, reverse=True)[:8]:   # shown with -rA or on failure
        print(f"{took:6.1f} s  {what}")

"""Hostile files against the readers, before and after the hardening, side by side.

Each file is loaded in a fresh subprocess by two readers of the same machine: the current tree,
and the tree as it was before the hardening (``git archive`` of ``--before REV`` into a temporary
folder, put first on ``PYTHONPATH``). Peak memory is the growth of the process's resident high-water
mark during the one call (``/proc/self/clear_refs`` resets it to the current RSS first, so the
imports' peak hides nothing), as measured by ``tests/codec/dsz_bombs.py``'s probe.

Files: the audit's .dsz repros (a zlib'd codebook of 4096 x 65536, 2^28 const-coded codes, float64
masks, zlib'd float64 zeros), every kind of allocation pushed to the new limit of a 1 MiB file
(current reader only: the old one has no such limit), and a 261 kB gzip IDX file holding 256 MiB
of zeros (``read_idx`` and ``data.load``).

``python benchmarks/hardening.py [--before 84f425f] [--no-before] [--skip-limits]``
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from _results import ROOT, command_from_args, write_result

MIB = 1 << 20


def _bombs_module():
    """tests/codec/dsz_bombs.py, loaded by path (it builds the hostile files)."""
    spec = importlib.util.spec_from_file_location("dsz_bombs", ROOT / "tests" / "codec" / "dsz_bombs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _old_tree(rev: str, folder: Path) -> Path:
    """The package as it was at ``rev``, unpacked under ``folder``."""
    blob = subprocess.run(["git", "archive", rev, "deepshrink"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def _probe(code: str, paths: list[Path], pythonpath: Path | None, timeout: float = 900) -> list[tuple[int, str]]:
    """[(peak growth in bytes, outcome)] for each path, in one fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    out = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True,
                         timeout=timeout, env=env, cwd=pythonpath or ROOT)
    if out.returncode:
        raise RuntimeError(f"probe failed ({out.returncode}): {out.stderr[-2000:]}")
    rows = [line.split(" ", 2) for line in out.stdout.splitlines()]
    return [(int(peak), outcome) for _, peak, outcome in rows]


def _idx_probe(bombs) -> str:
    """The .dsz probe with the load call swapped for ``read_idx`` / ``data.load``."""
    return bombs._PROBE.replace("from deepshrink.codec import load_compressed",
                                "from deepshrink.data import read_idx, load as load_data").replace(
        "        load_compressed(path)",
        "        read_idx(path) if path.endswith('.gz') else load_data('idx:' + path)")


def _idx_bomb(folder: Path) -> tuple[Path, Path]:
    """(a gzip IDX file of 256 MiB of zeros, an idx: folder whose training images are that file)."""
    n = 256 * MIB // (28 * 28)
    head = bytes([0, 0, 8, 3]) + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    payload = gzip.compress(head + bytes(n * 28 * 28), 9)
    one = folder / "bomb-images-idx3-ubyte.gz"
    one.write_bytes(payload)
    data = folder / "idx"
    data.mkdir()
    (data / "train-images-idx3-ubyte.gz").write_bytes(payload)
    labels = bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes(n)
    (data / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels, 9))
    small = bytes([0, 0, 8, 3]) + (4).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(4 * 784)
    (data / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(small))
    (data / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 4, 0, 1, 2, 3])))
    return one, data


def _mib(peak: int | None):
    return "-" if peak is None else round(peak / MIB, 1)


def _outcome(text: str) -> str:
    return "loaded" if text == "loaded" else text.split(":", 1)[0]


def measure(args, tmp: Path) -> dict:
    bombs = _bombs_module()
    old = None if args.no_before else _old_tree(args.before, tmp / "before")
    files = {f"audit: {k}": v for k, v in bombs.audit_bombs().items()}
    if not args.skip_limits:
        files |= {f"at the 1 MiB limit: {k}": v for k, v in bombs.limit_bombs(1 << 20).items()}
    paths = []
    for i, (name, blob) in enumerate(files.items()):
        paths.append(tmp / f"f{i}.dsz")
        paths[-1].write_bytes(blob)
        print(f"{name}: {len(blob):,} bytes", flush=True)
    idx_file, idx_dir = _idx_bomb(tmp)
    rows = []
    after = _probe(bombs._PROBE, paths, None)
    audit = [p for p, name in zip(paths, files) if name.startswith("audit")]
    before = dict(zip(audit, _probe(bombs._PROBE, audit, old))) if old else {}
    idx_names = {idx_file: "IDX gzip, 256 MiB of zeros: read_idx", idx_dir: "IDX gzip, 256 MiB of zeros: data.load"}
    idx_after = _probe(_idx_probe(bombs), list(idx_names), None)
    idx_before = _probe(_idx_probe(bombs), list(idx_names), old) if old else [(None, "-")] * 2
    for path, name, (peak, outcome) in zip(paths, files, after):
        b = before.get(path, (None, "-"))
        rows.append([name, path.stat().st_size, _mib(b[0]), _outcome(b[1]),
                     round(peak / MIB, 1), _outcome(outcome)])
    for (path, name), (peak, outcome), b in zip(idx_names.items(), idx_after, idx_before):
        size = path.stat().st_size if path.is_file() else (path / "train-images-idx3-ubyte.gz").stat().st_size
        rows.append([name, size, _mib(b[0]), _outcome(b[1]), round(peak / MIB, 1),
                     _outcome(outcome)])
    for r in rows:
        print(" | ".join(str(v) for v in r), flush=True)
    return {"rows": rows, "worst_limit_mib": max((r[4] for r in rows if r[0].startswith("at the")), default=None)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default="84f425f", help="git revision of the reader before the hardening")
    p.add_argument("--no-before", action="store_true", help="measure the current reader only")
    p.add_argument("--skip-limits", action="store_true", help="only the audit's files and the IDX bomb")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        res = measure(args, Path(d))
    write_result("hardening", {
        "title": "Hostile files: peak memory of the readers before and after the hardening",
        "command": command_from_args("hardening", args),
        "table": {"columns": ["file", "bytes", f"before ({args.before}): peak MiB", "before: outcome",
                              "after: peak MiB", "after: outcome"], "rows": res["rows"]},
        "worst_at_limit_mib": res["worst_limit_mib"],
        "notes": ["Peak: growth of the resident high-water mark during the one load call, in a fresh process "
                  "(/proc/self/clear_refs resets it first). 'before' runs the package as it was at the given "
                  "revision (git archive), same Python, same files.",
                  "Target: no .dsz under 1 MB makes load_compressed exceed 256 MB (244 MiB) with default limits "
                  "(docs/FORMAT.md §5). The IDX file's 256 MiB are really present; what the reader can save is "
                  "the copies around them (the float32 result of data.load is 1 GiB by itself)."]})


if __name__ == "__main__":
    main()

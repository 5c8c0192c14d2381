"""Our MAC counts against peer counters (thop, ptflops) on every zoo model, input 1x1x28x28.

    .venv/bin/pip install --no-deps thop ptflops    # the `bench` extra; both need only torch
    .venv/bin/python benchmarks/profile_macs.py

A peer that is not installed is left out (its columns show "-").

For each model: our MACs (total and per layer type), each peer's, the difference, and the
difference explained by numbers:

* thop (module hooks) counts conv and linear MACs like us (no bias term), and adds
  4 ops per element for every affine BatchNorm (2 to normalise, 2 for the affine) and
  (window + 1) ops per output for adaptive average pooling; ReLU, max pooling and dropout
  are 0; the residual adds of a forward() are invisible to it. We count BatchNorm, pooling
  and adds under ``multiplications``/``additions``, never under ``macs``.
* ptflops, ``aten`` backend (dispatcher ops): ``aten.convolution`` and ``aten.addmm`` count
  the MACs plus one addition per output element when there is a bias; eval-mode BatchNorm,
  pooling and adds are zero-ops. We count bias additions under ``additions``.

Also the wall time of ``profile_model`` (median of 5) and whether it stays under 2 s.
Writes benchmarks/results/profile.json. Downloads nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.metadata
import io
import math
import statistics
import time
import sys
import warnings
from collections import defaultdict

import torch
from torch import nn

from _results import ROOT, command, write_result

from deepshrink import models
from deepshrink.profile import profile_model

SHAPE = (1, 1, 28, 28)
TIME_LIMIT_S = 2.0
MAC_TYPES = ("Conv2d", "Linear")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------- ours

def ours(model: nn.Module, x: torch.Tensor) -> dict:
    prof = profile_model(model, x)
    macs_by_type: dict[str, int] = defaultdict(int)
    other_ops: dict[str, int] = defaultdict(int)     # multiplications + additions outside conv/linear
    bias_adds = 0
    for r in prof.rows:
        if r.macs:
            macs_by_type[r.type] += r.macs
        if r.type in MAC_TYPES:
            # additions = (per-output terms - 1) * outputs + (outputs if bias)
            bias_adds += r.additions - (r.macs - math.prod(r.output_shape))
        elif r.multiplications or r.additions:
            other_ops[r.type] += r.multiplications + r.additions
    t = prof.totals
    return {"macs": t["macs"], "params": t["params"], "macs_by_type": dict(macs_by_type),
            "conv_linear_macs": sum(macs_by_type.get(k, 0) for k in MAC_TYPES),
            "bias_additions": bias_adds, "non_mac_ops_by_type": dict(other_ops),
            "additions": t["additions"], "multiplications": t["multiplications"]}


def time_profile(model: nn.Module, x: torch.Tensor, repeats: int = 5) -> dict:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        profile_model(model, x)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"median_s": med, "repeats": repeats, "limit_s": TIME_LIMIT_S, "pass": med < TIME_LIMIT_S}


# ---------------------------------------------------------------- thop

def thop_counts(model: nn.Module, x: torch.Tensor) -> dict:
    import thop

    m = copy.deepcopy(model).eval()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        total, params, tree = thop.profile(m, inputs=(x,), verbose=False, ret_layer_info=True)
    by_type: dict[str, int] = defaultdict(int)

    def walk(module: nn.Module, node: dict) -> None:
        children = dict(module.named_children())
        for name, (ops, _, sub) in node.items():
            child = children[name]
            if sub:                      # a container: thop went inside it
                walk(child, sub)
            elif ops:
                by_type[type(child).__name__] += int(ops)

    walk(m, tree)
    conv_linear = sum(by_type.get(k, 0) for k in MAC_TYPES)
    return {"macs": int(total), "params": int(params), "ops_by_type": dict(by_type),
            "conv_linear_macs": conv_linear,
            "other_ops": {k: v for k, v in by_type.items() if k not in MAC_TYPES}}


# ---------------------------------------------------------------- ptflops (aten backend)

def ptflops_counts(model: nn.Module, x: torch.Tensor) -> dict:
    from ptflops.aten_engine import FlopCounterMode

    m = copy.deepcopy(model).eval()  # FlopCounterMode leaves hooks on the model it is given
    counter = FlopCounterMode(m, output_params={"serialize_params": {}, "print_params": {"file": io.StringIO()}})
    with torch.no_grad(), counter:
        m(x)
    by_op = {str(k).split(".")[-1]: int(v) for k, v in counter.flop_counts["Global"].items()}
    return {"macs": int(counter.complexity), "ops_by_aten_op": by_op}


# ---------------------------------------------------------------- comparison

def explain_thop(o: dict, p: dict) -> dict:
    diff = p["macs"] - o["macs"]
    conv_linear_diff = p["conv_linear_macs"] - o["conv_linear_macs"]
    other = sum(p["other_ops"].values())
    parts = [f"conv+linear MACs differ by {conv_linear_diff:,}"]
    parts += [f"thop counts {k} as {v:,} ops (ours: {o['non_mac_ops_by_type'].get(k, 0):,} "
              f"multiplications + additions, not MACs)" for k, v in sorted(p["other_ops"].items())]
    if "add" in o["non_mac_ops_by_type"]:
        parts.append(f"residual adds (ours, under additions, not MACs: "
                     f"{o['non_mac_ops_by_type']['add']:,}) are not seen by thop")
    return {"difference": diff, "conv_linear_difference": conv_linear_diff,
            "thop_non_mac_ops": other, "unexplained": diff - conv_linear_diff - other,
            "text": "; ".join(parts)}


def explain_ptflops(o: dict, p: dict) -> dict:
    diff = p["macs"] - o["macs"]
    return {"difference": diff, "our_bias_additions": o["bias_additions"],
            "unexplained": diff - o["bias_additions"],
            "text": (f"aten.convolution/addmm add one bias addition per output: ours counts "
                     f"{o['bias_additions']:,} of them under additions")}


def measure(x: torch.Tensor, peers: dict) -> list[dict]:
    """Per zoo model: ours, each installed peer with its difference explained, and our timing."""
    results = []
    for name in models.names():
        model = models.build(name).eval()
        o = ours(model, x)
        entry = {"model": name, "ours": o, "profile_time": time_profile(model, x)}
        if peers["thop"]:
            th = thop_counts(model, x)
            entry["thop"] = {**th, "explanation": explain_thop(o, th), "params_agree": th["params"] == o["params"]}
        if peers["ptflops"]:
            pt = ptflops_counts(model, x)
            entry["ptflops"] = {**pt, "explanation": explain_ptflops(o, pt)}
        results.append(entry)
    return results


def print_report(results: list[dict], peers: dict) -> None:
    print(f"MACs on input {'x'.join(map(str, SHAPE))}; peers: "
          + (", ".join(f"{k} {v}" for k, v in peers.items() if v) or "none installed"))
    head = (f"{'model':<12}{'ours':>13}{'conv+fc':>13}{'thop':>13}{'thop-ours':>11}{'unexpl.':>8}"
            f"{'ptflops':>13}{'pt-ours':>9}{'unexpl.':>8}{'time s':>8}  <2s")
    print(head)
    print("-" * len(head))
    for e in results:
        o, th, pt = e["ours"], e.get("thop"), e.get("ptflops")
        cells = [f"{e['model']:<12}", f"{o['macs']:>13,}", f"{o['conv_linear_macs']:>13,}"]
        cells += ([f"{th['macs']:>13,}", f"{th['explanation']['difference']:>11,}",
                   f"{th['explanation']['unexplained']:>8,}"] if th else [f"{'-':>13}", f"{'-':>11}", f"{'-':>8}"])
        cells += ([f"{pt['macs']:>13,}", f"{pt['explanation']['difference']:>9,}",
                   f"{pt['explanation']['unexplained']:>8,}"] if pt else [f"{'-':>13}", f"{'-':>9}", f"{'-':>8}"])
        tm = e["profile_time"]
        cells += [f"{tm['median_s']:>8.3f}", "  pass" if tm["pass"] else "  FAIL"]
        print("".join(cells))
    print()
    for e in results:
        print(f"{e['model']}: ours by type {e['ours']['macs_by_type']}")
        if "thop" in e:
            print(f"  thop - ours = {e['thop']['explanation']['difference']:,}: {e['thop']['explanation']['text']}")
        if "ptflops" in e:
            print(f"  ptflops - ours = {e['ptflops']['explanation']['difference']:,}: "
                  f"{e['ptflops']['explanation']['text']}  (per op {e['ptflops']['ops_by_aten_op']})")


def table(results: list[dict]) -> dict:
    """title / command / machine / table / notes: the layout the other benchmark results use."""
    columns = ["model", "ours MACs", "ours conv+fc MACs", "thop", "thop - ours", "thop unexplained",
               "ptflops (aten)", "ptflops - ours", "ptflops unexplained", "profile_model s", "< 2 s"]
    rows = []
    for e in results:
        th, pt = e.get("thop"), e.get("ptflops")
        rows.append([e["model"], e["ours"]["macs"], e["ours"]["conv_linear_macs"],
                     th["macs"] if th else None, th["explanation"]["difference"] if th else None,
                     th["explanation"]["unexplained"] if th else None,
                     pt["macs"] if pt else None, pt["explanation"]["difference"] if pt else None,
                     pt["explanation"]["unexplained"] if pt else None,
                     round(e["profile_time"]["median_s"], 4), "pass" if e["profile_time"]["pass"] else "FAIL"])
    return {"columns": columns, "rows": rows}


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # no options; --help
    torch.manual_seed(0)
    torch.set_num_threads(1)
    peers = {"thop": _version("thop"), "ptflops": _version("ptflops")}
    results = measure(torch.zeros(*SHAPE), peers)
    print_report(results, peers)
    all_explained = all(e[p]["explanation"]["unexplained"] == 0 for e in results for p in ("thop", "ptflops") if p in e)
    all_fast = all(e["profile_time"]["pass"] for e in results)
    print(f"\nevery difference explained: {'yes' if all_explained else 'NO'}; "
          f"profile_model under {TIME_LIMIT_S:g} s on every model: {'pass' if all_fast else 'FAIL'}")
    notes = [f"{e['model']}: {p} - ours: {e[p]['explanation']['text']}"
             for e in results for p in ("thop", "ptflops") if p in e and e[p]["explanation"]["difference"]]
    path = write_result("profile", {
        "title": "Profiler: MAC counts against peer counters",
        "command": command("profile_macs", python=".venv/bin/python"),
        "input_shape": list(SHAPE), "peers": peers,
        "all_differences_explained": all_explained, "profile_time_pass": all_fast,
        "table": table(results), "notes": notes,
        "models": results,
    })
    print(f"wrote {path.relative_to(ROOT)} and BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

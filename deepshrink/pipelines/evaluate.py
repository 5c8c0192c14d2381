"""``deepshrink evaluate`` as one call: the test accuracy of a model file (or ``hf:DIR``), on the
data set it records (normalised with its own statistics) or on another of the same image shape;
with ``reference``, its fidelity to the original model on the same test inputs
(:mod:`deepshrink.fidelity`: cosine of outputs, top-1 agreement and KL of logits).

An early-exit file (``deepshrink early-exit``) is evaluated both ways: ``accuracy`` is the whole
model's (every sample through every layer, what loading it as a plain model gives), ``adaptive``
the model as deployed, each sample leaving at the first exit whose threshold it passes, with the
share of samples leaving at each exit and the expected MACs per sample on this test split.

Text data (``text:FILE``) has no labels: its accuracy is not computed, and asking for it without
a reference is one error saying what to measure instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..exit_heads import EXITS_KEY, ExitPlan
from ..exits import (EarlyExitModel, adaptive_accuracy, exit_shares, expected_cost, heads_of, measure_stage_macs,
                     path_costs)
from ..exits.policies import decision_macs
from ..fidelity import Fidelity, fidelity, output_kind
from ..io import load_teacher
from ..train import evaluate
from .inputs import open_model_and_data

__all__ = ["EvaluateRun", "evaluate_file", "adaptive_result"]


@dataclass
class EvaluateRun:
    accuracy: float | None              # on the test split, in [0, 1]; None for unlabelled data
    data: str                           # the data spec evaluated on
    images: int                         # test samples (images, or sentences)
    labelled: bool = True
    fidelity: Fidelity | None = None    # agreement with ``reference`` on the same test samples
    reference: str | None = None
    adaptive: dict | None = None        # an early-exit file: accuracy, shares, expected_macs as deployed


@torch.no_grad()
def adaptive_result(model, info, ds, where: str, batch_size: int = 500) -> dict | None:
    """An early-exit model as deployed on ``ds``'s test split (None when ``info`` records no exits
    or no policy): its accuracy, the share of samples leaving at each exit, and the expected MACs
    per sample from those shares (each stage counted by the profiler)."""
    raw = info.extra.get(EXITS_KEY)
    if raw is None:
        return None
    plan = ExitPlan.from_dict(raw, where)
    if plan.policy is None:
        return None
    ee = EarlyExitModel.from_model(model, info, where).eval().freeze()
    accuracy, exits = adaptive_accuracy(ee, ds.test.x, ds.test.y, batch_size)
    shares = exit_shares(exits, len(plan.heads) + 1)
    costs = measure_stage_macs(model, plan.layers, list(heads_of(model, where)), ds.test.x[:1],
                               decision_macs(plan.policy))
    paths = path_costs(costs, plan.enabled())
    return {"accuracy": accuracy, "policy": plan.policy, "layers": plan.layers,
            "shares": shares, "expected_macs": expected_cost(shares, paths), "original_macs": costs.full}


def evaluate_file(src: str | os.PathLike, *, data: str | None = None, arch: str | None = None,
                  trust_code: bool = False, reference: str | os.PathLike | None = None,
                  seq_len: int | None = None, tokenizer: str | os.PathLike | None = None, model_kwargs: dict | None = None) -> EvaluateRun:
    """Evaluate ``src`` on the test split of its data: accuracy when the data is labelled, and,
    with ``reference`` (a model file or ``hf:DIR``: the model before compression), fidelity to it.
    ``arch``/``trust_code`` apply to both models; ``seq_len``/``tokenizer`` to text models."""
    model, info, ds = open_model_and_data(src, data, arch, trust_code, seq_len=seq_len, tokenizer=tokenizer, model_kwargs=model_kwargs,
                                          need_labels=False)
    if not ds.labelled and reference is None:
        raise ConfigError(f"{ds.name} has no labels, so an accuracy would mean nothing; measure agreement with "
                          "the original model instead: --reference ORIGINAL (Python: reference=...)")
    accuracy = evaluate(model, ds.test) if ds.labelled else None
    adaptive = adaptive_result(model, info, ds, os.fspath(src)) if ds.labelled else None
    fid = None
    if reference is not None:
        ref = load_teacher(reference, ds, arch=arch, trust_code=trust_code)
        fid = fidelity(model, ref, ds.test.x, kind=output_kind(model))
    return EvaluateRun(accuracy, ds.name, len(ds.test), ds.labelled, fid,
                       os.fspath(reference) if reference is not None else None, adaptive)

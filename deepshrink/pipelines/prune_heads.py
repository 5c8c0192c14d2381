"""``deepshrink prune-heads`` as one call: attention heads and FFN neurons removed from a BERT-class
transformer (``hf:DIR``, or a deepshrink file written from one), the head plan kept in the file.

Scoring, choosing and cutting are :mod:`deepshrink.prune.transformer`. With ``text:FILE`` data, the
``taylor`` criterion calibrates on the first ``batches * batch_size`` sentences of the training
split, and the result's fidelity to the unpruned model (:func:`deepshrink.fidelity.fidelity`) is
measured on the held-out test split, which calibration never sees. There is no fine-tuning here:
the written model is the cut one (distil it back with ``deepshrink distill``).

A file pruned before keeps one plan: the old and the new composed (:func:`compose_head_plans`),
so loading re-applies both to the freshly built architecture.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..fidelity import Fidelity, fidelity
from ..head_plan import HEAD_PLAN_KEY, HeadPlan, compose_head_plans
from ..io import ModelInfo, load_model, save_model
from ..modelfile import example_input
from ..profile import profile_model
from ..prune.transformer import HeadConfig, check_config, prune_transformer
from .inputs import data_for

__all__ = ["HeadRun", "prune_transformer_file"]


@dataclass
class HeadRun:
    model: nn.Module                # the pruned model, as written
    info: ModelInfo                 # what was written beside the model
    cut: HeadPlan                   # this run's cut (indices of the model it was given)
    plan: HeadPlan                  # the file's whole plan: earlier cuts composed with this one
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    fidelity: Fidelity | None       # on the held-out sentences, when data was given

    def to_dict(self) -> dict:
        return {"macs_before": self.macs_before, "macs_after": self.macs_after,
                "params_before": self.params_before, "params_after": self.params_after,
                "cut": self.cut.to_dict(),
                "fidelity": asdict(self.fidelity) if self.fidelity is not None else None}


def _cost(model, info: ModelInfo) -> tuple[int, int]:
    totals = profile_model(model, example_input(info)).totals
    return int(totals["macs"]), int(totals["params"])


def prune_transformer_file(src: str | os.PathLike, out: str | os.PathLike, ratio: float,
                           criterion: str = HeadConfig.criterion, data: str | None = None, *,
                           batches: int = HeadConfig.batches, batch_size: int = HeadConfig.batch_size,
                           seed: int = HeadConfig.seed, seq_len: int | None = None,
                           tokenizer: str | os.PathLike | None = None) -> HeadRun:
    """Remove ``ratio`` of the head + FFN MACs of the transformer in ``src`` by ``criterion``
    (``l1``, ``l2``, ``taylor``: the last needs ``data``) and write the smaller model to ``out``."""
    cfg = HeadConfig(ratio=ratio, criterion=criterion, batches=batches, batch_size=batch_size, seed=seed)
    check_config(cfg)                         # before any file is read
    model, info = load_model(src, seq_len=seq_len, tokenizer=tokenizer)
    ds = data_for(info, data, str(src)) if data is not None else None
    reference = copy.deepcopy(model) if ds is not None else None
    macs_before, params_before = _cost(model, info)
    calibration = None
    if ds is not None:
        x = ds.train.x
        calibration = [x[i * batch_size:(i + 1) * batch_size] for i in range(batches) if i * batch_size < len(x)]
    torch.manual_seed(seed)
    cut = prune_transformer(model, cfg, info.input_shape[0], calibration)
    old = info.extra.get(HEAD_PLAN_KEY)
    plan = compose_head_plans(HeadPlan.from_dict(old, f"{src}: head_plan"), cut) if old else cut
    info.extra[HEAD_PLAN_KEY] = plan.to_dict()
    macs_after, params_after = _cost(model, info)
    fid = fidelity(model, reference, ds.test.x) if ds is not None and len(ds.test.x) else None
    run = HeadRun(model, info, cut, plan, macs_before, macs_after, params_before, params_after, fid)
    facts = {k: v for k, v in run.to_dict().items() if k != "cut"}
    info.record("prune_heads", cfg, **facts)
    save_model(model, out, info)
    return run

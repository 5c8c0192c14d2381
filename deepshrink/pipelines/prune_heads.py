"""``deepshrink prune-heads`` as one call: attention heads and FFN neurons removed from a BERT-class
transformer (``hf:DIR``, or a deepshrink file written from one), the head plan kept in the file.

Scoring, choosing and cutting are :mod:`deepshrink.prune.transformer`. With ``text:FILE`` data, the
``taylor`` criterion calibrates on the first ``batches * batch_size`` sentences of the training
split, and the result's fidelity to the unpruned model (:func:`deepshrink.fidelity.fidelity`) is
measured on the held-out test split, which calibration never sees. ``finetune_epochs`` then
distils the cut model back towards the unpruned one on the training sentences, as ``deepshrink
prune`` does on text (:func:`deepshrink.distill.fidelity_loss.cached_fidelity_loss`: the output and,
for repeated blocks, every block's hidden state, weight ``TEXT_HIDDEN_WEIGHT``; AdamW at the text
defaults of :mod:`.defaults`, dropout off); the fidelity is reported before and after it.

A file pruned before keeps one plan: the old and the new composed (:func:`compose_head_plans`),
so loading re-applies both to the freshly built architecture.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..distill.fidelity_loss import cached_fidelity_loss, dropout_off
from ..distill.hidden import repeated_blocks
from ..errors import ConfigError
from ..fidelity import Fidelity, fidelity
from ..head_plan import HEAD_PLAN_KEY, HeadPlan, compose_head_plans
from ..io import ModelInfo, load_model, save_model
from ..modelfile import example_input
from ..profile import profile_model
from ..prune.transformer import HeadConfig, check_config, prune_transformer
from ..train import TrainConfig, fit
from .defaults import TEXT_BATCH, TEXT_HIDDEN_WEIGHT, TEXT_LR, TEXT_WARMUP
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
    fidelity: Fidelity | None       # on the held-out sentences, when data was given (after fine-tuning, if any)
    fidelity_cut: Fidelity | None = None   # the same, right after the cut (with fine-tuning only)
    finetune_epochs: float = 0.0

    def to_dict(self) -> dict:
        return {"macs_before": self.macs_before, "macs_after": self.macs_after,
                "params_before": self.params_before, "params_after": self.params_after,
                "cut": self.cut.to_dict(),
                "fidelity": asdict(self.fidelity) if self.fidelity is not None else None,
                "fidelity_cut": asdict(self.fidelity_cut) if self.fidelity_cut is not None else None,
                "finetune_epochs": self.finetune_epochs}


def _cost(model, info: ModelInfo) -> tuple[int, int]:
    totals = profile_model(model, example_input(info)).totals
    return int(totals["macs"]), int(totals["params"])


def distill_back(model: nn.Module, reference: nn.Module, ds, epochs: float, seed: int = 0,
                 progress: bool = True) -> None:
    """Fine-tune ``model`` in place towards ``reference`` on ``ds.train`` (no labels)."""
    hidden = TEXT_HIDDEN_WEIGHT if repeated_blocks(model) else 0.0
    loss_fn = cached_fidelity_loss(reference, ds.train, False, hidden_weight=hidden,
                                   student=model if hidden else None)
    tcfg = TrainConfig(epochs=max(1, round(epochs)), lr=TEXT_LR, weight_decay=0.0, optimizer="adam",
                       warmup_epochs=TEXT_WARMUP, batch_size=TEXT_BATCH, augment=False, seed=seed,
                       progress=progress, verbose=False, eval_every=0)
    try:
        with dropout_off(model):
            fit(model, ds, tcfg, loss_fn=loss_fn)
    finally:
        loss_fn.close()
    model.eval()


def prune_transformer_file(src: str | os.PathLike, out: str | os.PathLike, ratio: float,
                           criterion: str = HeadConfig.criterion, data: str | None = None, *,
                           batches: int = HeadConfig.batches, batch_size: int = HeadConfig.batch_size,
                           seed: int = HeadConfig.seed, seq_len: int | None = None,
                           tokenizer: str | os.PathLike | None = None, finetune_epochs: float = 0.0,
                           progress: bool = True) -> HeadRun:
    """Remove ``ratio`` of the head + FFN MACs of the transformer in ``src`` by ``criterion``
    (``l1``, ``l2``, ``taylor``: the last needs ``data``), distil it back for ``finetune_epochs``
    (needs ``data``) and write the smaller model to ``out``."""
    cfg = HeadConfig(ratio=ratio, criterion=criterion, batches=batches, batch_size=batch_size, seed=seed)
    check_config(cfg)                         # before any file is read
    if not 0 <= finetune_epochs < 1e6 or finetune_epochs != round(finetune_epochs):
        raise ConfigError(f"finetune_epochs must be a whole number >= 0, got {finetune_epochs}")
    if finetune_epochs and data is None:
        raise ConfigError("fine-tuning distils from the unpruned model on sentences: give --data text:FILE")
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
    fid_cut = None
    if finetune_epochs:
        distill_back(model, reference, ds, finetune_epochs, seed, progress)
        fid_cut, fid = fid, fidelity(model, reference, ds.test.x) if len(ds.test.x) else None
    run = HeadRun(model, info, cut, plan, macs_before, macs_after, params_before, params_after, fid, fid_cut,
                  float(finetune_epochs))
    facts = {k: v for k, v in run.to_dict().items() if k != "cut"}
    info.record("prune_heads", cfg, **facts)
    save_model(model, out, info)
    return run

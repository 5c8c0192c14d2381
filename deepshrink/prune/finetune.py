"""Prune and fine-tune under a schedule: one-shot, iterative or AGP.

All three spend the same fine-tuning budget (``epochs``), so they compare fairly:

* oneshot   prune to the targets, then fine-tune ``epochs`` with masks held;
* iterative R rounds of (prune to s_r, fine-tune epochs / R);
* agp       fine-tune ``epochs`` while AGP raises the sparsity from 0 to the targets over
            the first ``agp_fraction`` of the steps (updates every quarter epoch), masks
            held for the rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping

from torch import nn

from ..data import Dataset, Split, num_batches
from ..distill import teacher_loss
from ..errors import ConfigError
from ..train import FitResult, TrainConfig, evaluate, fit
from .fine import prune_
from ..masks import MaskCallback, layer_sparsities, sparsity
from .regularize import adjust_dropout, penalized_loss, remove_dead_neurons
from .schedule import GradualPruner

__all__ = ["PruneConfig", "PruneResult", "SCHEDULES", "prune_and_finetune"]

SCHEDULES = ("oneshot", "iterative", "agp")


@dataclass
class PruneConfig:
    sparsity: float | dict = 0.9        # one target, or {parameter name: sparsity}
    include: tuple[str, ...] = ()       # name globs adding weights (an embedding, the output layer)
    exclude: tuple[str, ...] = ()       # name globs removing weights; default targets: deepshrink/targets.py
    rule: str = "magnitude"
    scope: str = "layer"
    schedule: str = "agp"
    epochs: int = 10                    # fine-tuning budget
    rounds: int = 3                     # iterative schedule
    agp_fraction: float = 0.7
    lr: float = 0.01
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: bool = True                # match the model's own training (the CLI reads it from the file)
    penalty: str | None = None          # "l1" or "l2" during fine-tuning
    penalty_lambda: float = 1e-5
    distill: bool = False               # the unpruned model as teacher during fine-tuning
    kd_temperature: float = 4.0
    kd_alpha: float = 0.9
    adjust_dropout: bool = False       # Han's D_r = D_o sqrt(C_r/C_o); measured to hurt LeNet-300 here
    remove_dead: bool = False           # physically drop dead hidden units of Linear chains
    seed: int = 0
    progress: bool = True
    verbose: bool = True


@dataclass
class PruneResult:
    accuracy_before: float
    accuracy_pruned: float | None       # right after the first pruning step (None under AGP)
    accuracy_after: float
    sparsity: float                     # fraction of zeros over the pruned (masked) weights only
    layers: dict[str, float] = field(default_factory=dict)  # per pruned weight
    dead_removed: dict[str, int] = field(default_factory=dict)
    dropout: dict = field(default_factory=dict)
    fits: list[FitResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fits"] = [{"seconds": f.seconds, "accuracy": f.accuracy} for f in self.fits]
        return d


def _train_cfg(cfg: PruneConfig, epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed,
                       batch_size=cfg.batch_size, augment=cfg.augment,
                       progress=cfg.progress, verbose=cfg.verbose, eval_every=0)


def _loss(model: nn.Module, cfg: PruneConfig):
    """The fine-tuning loss: cross-entropy, or KD from the unpruned model, plus a penalty."""
    if cfg.distill and cfg.penalty:
        raise ConfigError("distillation and a weight penalty together are not supported")
    if cfg.distill:
        return teacher_loss(model, cfg.kd_temperature, cfg.kd_alpha)  # copies the model now, unpruned
    return penalized_loss(cfg.penalty, cfg.penalty_lambda) if cfg.penalty else None


def _round_target(s_f: float, r: int, rounds: int) -> float:
    return 1.0 - (1.0 - s_f) ** ((r + 1) / rounds)


def prune_and_finetune(model: nn.Module, data: Dataset, cfg: PruneConfig, loss_fn=None,
                       score: Callable[[nn.Module, Split], float] | None = None) -> PruneResult:
    """Prune ``model`` in place under ``cfg.schedule``; ``loss_fn`` (a ``fit`` loss, e.g. from
    another teacher) replaces the loss ``cfg`` describes. ``score(model, split)`` measures the
    result's "accuracies" (default: top-1 accuracy; :func:`deepshrink.scoring.scorer_for` gives
    fidelity to the dense model for unlabelled data)."""
    score = score or evaluate
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")
    if cfg.epochs < 0:
        raise ConfigError(f"fine-tuning epochs must be >= 0, got {cfg.epochs}")
    before = score(model, data.test)
    drop0 = {n: m.p for n, m in model.named_modules() if isinstance(m, nn.Dropout)}
    loss_fn = loss_fn if loss_fn is not None else _loss(model, cfg)
    fits: list[FitResult] = []
    pruned_acc = None
    if cfg.schedule == "agp" and cfg.epochs > 0:
        per_epoch = num_batches(len(data.train), _train_cfg(cfg, 1).batch_size)
        steps = per_epoch * cfg.epochs
        dt = max(1, per_epoch // 4)
        n = max(1, int(cfg.agp_fraction * steps) // dt)
        pruner = GradualPruner(model, cfg.sparsity, t0=0, n=n, dt=dt, rule=cfg.rule, scope=cfg.scope,
                               include=cfg.include, exclude=cfg.exclude)
        callbacks = [pruner]
        if cfg.adjust_dropout:  # follow each AGP update, so training sees the adjusted rates
            callbacks.append(lambda m, info: adjust_dropout(m, drop0) if info.global_step % dt == 0 else None)
        fits.append(fit(model, data, _train_cfg(cfg, cfg.epochs), callbacks=callbacks, loss_fn=loss_fn))
    else:
        if cfg.schedule == "iterative" and cfg.epochs > 0:
            rounds = max(1, min(cfg.rounds, cfg.epochs))
            per = [cfg.epochs // rounds + (1 if r < cfg.epochs % rounds else 0) for r in range(rounds)]
        else:
            rounds, per = 1, [cfg.epochs]
        for r, ep in enumerate(per):
            # round r keeps (1 - s_f)^((r+1)/R): the same fraction of the survivors goes each round
            target = ({k: _round_target(v, r, rounds) for k, v in cfg.sparsity.items()}
                      if isinstance(cfg.sparsity, Mapping) else _round_target(cfg.sparsity, r, rounds))
            prune_(model, target, cfg.rule, cfg.scope, cfg.seed, include=cfg.include, exclude=cfg.exclude)
            if pruned_acc is None:
                pruned_acc = score(model, data.test)
            if cfg.adjust_dropout:
                adjust_dropout(model, drop0)
            if ep > 0:
                fits.append(fit(model, data, _train_cfg(cfg, ep), callbacks=[MaskCallback()], loss_fn=loss_fn))
    dropout = adjust_dropout(model, drop0) if cfg.adjust_dropout else {}
    dead = remove_dead_neurons(model) if cfg.remove_dead else {}
    return PruneResult(before, pruned_acc, score(model, data.test), sparsity(model),
                       layer_sparsities(model), dead, dropout, fits)

"""Prune and fine-tune under a schedule: one-shot, iterative or AGP.

All three spend the same fine-tuning budget (``epochs``), so they compare fairly:

* oneshot   prune to the targets, then fine-tune ``epochs`` with masks held;
* iterative R rounds of (prune to s_r, fine-tune epochs / R);
* agp       fine-tune ``epochs`` while AGP raises the sparsity from 0 to the targets over
            the first ``agp_fraction`` of the steps (updates every quarter epoch), masks
            held for the rest.

Rules: the data-free masks of :mod:`.fine` (magnitude, std, random), or ``reconstruct``
(:mod:`.reconstruct`: Wanda masks and least-squares compensation measured on ``calibration``
training samples; Linear weights only, one-shot or iterative). Left unset (None), the rule is
magnitude on labelled data and reconstruct on unlabelled data (text), where fine-tuning can only
distil and one-shot magnitude pruning loses far more than a short distillation wins back; the
schedule is AGP for magnitude rules and one-shot for reconstruct. Left unset, the scope is global
(one magnitude threshold across the layers) for one target under a data-free rule, and per layer
for reconstruct, a per-layer map or a threshold; and on labelled data the fine-tuning distils from
the unpruned model (T = 2, alpha = 0.5) unless a penalty is asked for. Both were chosen on the
LeNets at 92% (exploratory runs on the validation split, seed 0, 10 epochs): per-layer scope lost
0.42 / 2.0 pp where global lost 0.06 / 0.32, and self-distillation brought LeNet-5's 0.32 to 0.12.
The fine-tuning budget defaults to 30 epochs: with those two defaults LeNet-300 at 92% lost 0.29 pp on
the validation split after 10 epochs, 0.15 after 20 and -0.23 (a gain) after 30 (means of 3 seeds);
LeNet-5 0.12 after 10 and -0.22 after 20 (seed 0).
benchmarks/compression_frontier.py measures the defaults on the test split over 3 seeds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Mapping

from torch import nn

from ..data import Dataset, Split, num_batches
from ..distill import teacher_loss
from ..errors import ConfigError
from ..train import FitResult, TrainConfig, evaluate, fit
from .fine import RULES, prune_
from .reconstruct import reconstruct_prune_
from ..masks import MaskCallback, layer_sparsities, sparsity
from .regularize import adjust_dropout, penalized_loss, remove_dead_neurons
from .schedule import GradualPruner

__all__ = ["PruneConfig", "PruneResult", "SCHEDULES", "PRUNE_RULES", "RECONSTRUCT", "prune_and_finetune",
           "resolve_rule"]

SCHEDULES = ("oneshot", "iterative", "agp")
RECONSTRUCT = "reconstruct"
PRUNE_RULES = RULES + (RECONSTRUCT,)


@dataclass
class PruneConfig:
    sparsity: float | dict = 0.9        # one target, or {parameter name: sparsity}
    threshold_std: float | None = None  # instead: |w| < s x scale x std(layer) goes (prune/threshold.py)
    threshold_scale: dict = field(default_factory=dict)   # {layer: multiplier of threshold_std}, 1 where absent
    include: tuple[str, ...] = ()       # name globs adding weights (an embedding, the output layer)
    exclude: tuple[str, ...] = ()       # name globs removing weights; default targets: deepshrink/targets.py
    rule: str | None = None             # None: magnitude, or reconstruct on unlabelled data (see above)
    scope: str | None = None            # None: global for one target of a magnitude-family rule on labelled
                                        # data, else layer (see resolve_rule)
    schedule: str | None = None         # None: agp, or oneshot for the reconstruct rule
    epochs: int = 30                    # fine-tuning budget
    rounds: int = 3                     # iterative schedule
    agp_fraction: float = 0.7
    lr: float = 0.01
    weight_decay: float = 5e-4
    optimizer: str = "sgd"              # "sgd" (Nesterov momentum) or "adam" (AdamW)
    warmup_epochs: float = 0.0
    calibration: int = 1024             # reconstruct: training samples its Hessians are measured on
    hidden_weight: float | None = None  # unlabelled data: per-block hidden-state distillation (distill/hidden.py);
                                        # None: TEXT_HIDDEN_WEIGHT where the model has repeated blocks, else 0
    batch_size: int = 128
    augment: bool = True                # match the model's own training (the CLI reads it from the file)
    penalty: str | None = None          # "l1" or "l2" during fine-tuning
    penalty_lambda: float = 1e-5
    distill: bool | None = None         # the unpruned model as teacher during fine-tuning; None: on labelled
                                        # data unless a penalty is asked for (see resolve_rule)
    kd_temperature: float = 2.0         # self-distillation measured at T=2, alpha=0.5 (T=4, alpha=0.9 lost
    kd_alpha: float = 0.5               # 0.3 pp more on LeNet-300 at 92%: BENCHMARKS.md, the frontier table)
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


def resolve_rule(cfg: PruneConfig, data: Dataset) -> PruneConfig:
    """``cfg`` with its rule and schedule decided for ``data`` (see the module docstring) and checked."""
    rule = cfg.rule or (RECONSTRUCT if not data.labelled else "magnitude")
    schedule = cfg.schedule or ("oneshot" if rule == RECONSTRUCT else "agp")
    if rule not in PRUNE_RULES:
        raise ConfigError(f"unknown rule {rule!r}; choose one of {', '.join(PRUNE_RULES)}")
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if rule == RECONSTRUCT:
        if schedule == "agp":
            raise ConfigError("the reconstruct rule prunes from calibration data at chosen points; "
                              "use schedule oneshot or iterative, not agp")
        if cfg.scope not in (None, "layer"):
            raise ConfigError("the reconstruct rule prunes each layer to its own sparsity: use scope 'layer'")
        if cfg.calibration < 1:
            raise ConfigError(f"calibration must be >= 1 sample, got {cfg.calibration}")
    scope = cfg.scope or ("layer" if rule == RECONSTRUCT or isinstance(cfg.sparsity, Mapping)
                          or cfg.threshold_std is not None else "global")
    if scope not in ("layer", "global"):
        raise ConfigError(f"scope must be 'layer' or 'global', got {scope!r}")
    distill = cfg.distill if cfg.distill is not None else (data.labelled and not cfg.penalty)
    return replace(cfg, rule=rule, schedule=schedule, scope=scope, distill=distill)


def _prune_step(model: nn.Module, target, cfg: PruneConfig, data: Dataset) -> None:
    if cfg.rule == RECONSTRUCT:
        reconstruct_prune_(model, target, data.train.x[:cfg.calibration], include=cfg.include,
                           exclude=cfg.exclude, progress=cfg.progress)
    else:
        prune_(model, target, cfg.rule, cfg.scope, cfg.seed, include=cfg.include, exclude=cfg.exclude)


def _train_cfg(cfg: PruneConfig, epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed,
                       optimizer=cfg.optimizer, warmup_epochs=cfg.warmup_epochs,
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
                       score: Callable[[nn.Module, Split], float] | None = None,
                       on_pruned: Callable[[nn.Module], None] | None = None) -> PruneResult:
    """Prune ``model`` in place under ``cfg.schedule``; ``loss_fn`` (a ``fit`` loss, e.g. from
    another teacher) replaces the loss ``cfg`` describes. ``score(model, split)`` measures the
    result's "accuracies" (default: top-1 accuracy; :func:`deepshrink.scoring.scorer_for` gives
    fidelity to the dense model for unlabelled data). ``on_pruned(model)`` runs once, right after
    the first pruning step of a oneshot or iterative schedule, before any fine-tuning."""
    score = score or evaluate
    cfg = resolve_rule(cfg, data)
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
            _prune_step(model, target, cfg, data)
            if pruned_acc is None:
                pruned_acc = score(model, data.test)
                if on_pruned is not None:
                    on_pruned(model)
            if cfg.adjust_dropout:
                adjust_dropout(model, drop0)
            if ep > 0:
                fits.append(fit(model, data, _train_cfg(cfg, ep), callbacks=[MaskCallback()], loss_fn=loss_fn))
    dropout = adjust_dropout(model, drop0) if cfg.adjust_dropout else {}
    dead = remove_dead_neurons(model) if cfg.remove_dead else {}
    return PruneResult(before, pruned_acc, score(model, data.test), sparsity(model),
                       layer_sparsities(model), dead, dropout, fits)

"""``deepshrink early-exit`` as one call: exit heads attached to a model file, trained, a policy and
its thresholds chosen on the validation split, the result measured once on the test split and
written as one model file (heads and thresholds inside; :mod:`deepshrink.exits`).

1. exits at ``cfg.layers`` (default: the end of each resolution stage), each cut checked;
2. heads trained on the frozen backbone (default; features cached) or jointly with it, with
   optional self-distillation from the final exit, on the training images left after the
   validation split is carved;
3. each stage's cost counted (MACs, by the profiler) or timed (``cost="latency"``);
4. on the validation split, for each policy (max-softmax, entropy, learned), the cheapest
   thresholds whose accuracy is within ``max_drop`` pp of the original model's there; the
   cheapest policy wins (or the one named);
5. the test split, once: the adaptive model (batch inference that stops) against the original,
   its accuracy, exit shares and expected MACs per sample.

``recalibrate`` keeps the heads a file already has (say, after ``prune``, ``quantize`` or
``compress`` changed the backbone) and only chooses the thresholds again. The file's ``accuracy``
stays the backbone's own (what loading it without exits gives; in joint mode the retrained one);
the adaptive accuracy is in its history.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

import torch

from ..data import for_selection, val_label, with_validation
from ..errors import ConfigError, DataError, ModelError
from ..exit_heads import EXITS_KEY, HEADS_ATTR, POLICY_NAMES, ExitPlan
from ..exits import (EarlyExitModel, ExitTraining, adaptive_accuracy, PolicyChoice, StageCosts, attach_exits, calibrate,
                     collect_exit_logits, export_stages, exit_shares, expected_cost, heads_of, measure_stage_latency,
                     measure_stage_macs, path_costs, plot_curves, policy_name, train_heads)
from ..exits.calibrate import LAMBDAS
from ..exits.policies import decision_macs
from ..io import ModelInfo, load_model, save_model
from ..modelfile import input_kind
from ..train import evaluate
from .inputs import open_model_and_data

__all__ = ["EarlyExitConfig", "EarlyExitRun", "early_exit_file", "open_early_exit", "COSTS"]

COSTS = ("macs", "latency")


@dataclass
class EarlyExitConfig:
    """Every default of ``deepshrink early-exit`` in one place."""

    layers: list[str] | None = None       # None: the end of each resolution stage (exits.default_exit_layers)
    head_depth: int = 3
    head_width: int | None = None          # None: the channels the head reads
    training: ExitTraining = field(default_factory=ExitTraining)
    policy: str = "auto"                   # "auto": the cheapest on validation; or max_softmax | entropy | learned
    max_drop: float = 0.5                  # pp below the original's validation accuracy
    cost: str = "macs"                     # what the search minimises and the learned gates price: macs | latency
    grid: int = 100                        # candidate thresholds per exit
    lambdas: tuple[float, ...] = LAMBDAS   # learned policy: prices of a whole model's cost in errors
    val_size: int | None = None
    recalibrate: bool = False              # keep the file's heads; choose the thresholds again
    latency_repeats: int = 30              # cost="latency": timings per stage
    batch_size: int = 500                  # inference batches on the validation and test splits
    progress: bool = True
    verbose: bool = True

    def check(self) -> None:
        if self.policy != "auto":
            self.policy = policy_name(self.policy)
        if self.cost not in COSTS:
            raise ConfigError(f"--cost must be one of {', '.join(COSTS)}, got {self.cost!r}")
        if not 0 <= self.max_drop <= 100:
            raise ConfigError(f"--max-drop must be in [0, 100] pp, got {self.max_drop}")
        if self.grid < 1 or self.latency_repeats < 1 or self.batch_size < 1:
            raise ConfigError("grid, latency repeats and batch size must be >= 1 "
                              f"(got {self.grid}, {self.latency_repeats}, {self.batch_size})")
        if not self.lambdas or any(not (0 <= v < math.inf) for v in self.lambdas):
            raise ConfigError(f"--lambdas must be finite numbers >= 0, got {list(self.lambdas)}")
        if self.head_depth < 0 or (self.head_width is not None and self.head_width < 1):
            raise ConfigError(f"--head-depth must be >= 0 and --head-width >= 1 (got {self.head_depth}, "
                              f"{self.head_width})")


@dataclass
class EarlyExitRun:
    info: ModelInfo                        # what was written beside the model
    plan: ExitPlan
    costs: StageCosts                      # MACs of each stage (whatever ``cost`` the search used)
    choice: PolicyChoice                   # the chosen policy, on the validation split
    choices: dict[str, PolicyChoice]       # every policy tried, on the validation split
    test: dict                             # accuracy, original_accuracy, expected_macs, original_macs, shares ...
    training: dict = field(default_factory=dict)
    plot: str | None = None
    onnx: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"layers": self.plan.layers, "policy": self.plan.policy, "thresholds": self.plan.thresholds,
                "validation": self.choice.to_dict(), "policies": {k: v.to_dict() for k, v in self.choices.items()},
                "costs": self.costs.to_dict(), "test": self.test, "training": self.training, "plot": self.plot,
                "onnx": self.onnx}


def _say(cfg: EarlyExitConfig, line: str) -> None:
    if cfg.verbose:
        print(line, flush=True)


def _heads(model, plan: ExitPlan | None, src, ds, example, cfg: EarlyExitConfig) -> tuple[ExitPlan, dict]:
    """The exit plan: the file's (``recalibrate``), or new heads placed and trained."""
    if plan is not None and not isinstance(getattr(model, HEADS_ATTR, None), torch.nn.Module):
        raise ModelError(f"{src}: records exit heads, but its model has lost them (linear quantization rebuilt it "
                         "as a traced graph, which keeps only what the forward pass runs); an early-exit model "
                         "composes with prune, quantize --method kmeans and compress")
    if cfg.recalibrate:
        if plan is None:
            raise ConfigError(f"{src}: has no exit heads to recalibrate; drop --recalibrate to attach new ones")
        _say(cfg, f"keeping the file's {len(plan.heads)} exit head(s) at {', '.join(plan.layers)}")
        return ExitPlan(plan.heads), {}
    layers = cfg.layers if cfg.layers is not None or plan is None else plan.layers   # new heads where the old ones were
    torch.manual_seed(cfg.training.seed)                    # the heads' initial weights
    plan = attach_exits(model, example, layers, ds.num_classes, cfg.head_depth, cfg.head_width, str(src))
    _say(cfg, f"exits at {', '.join(plan.layers)}: heads of depth {cfg.head_depth}, width "
              f"{', '.join(str(h.width) for h in plan.heads)}")
    result = train_heads(model, plan.layers, heads_of(model), for_selection(ds), cfg.training,
                         [tuple(h.in_shape) for h in plan.heads])
    return plan, {"mode": cfg.training.mode, "epochs": cfg.training.epochs, "history": result.history,
                  "cached_features": result.cached, "seconds": result.seconds}


def early_exit_file(src: str | os.PathLike, out: str | os.PathLike, cfg: EarlyExitConfig | None = None, *,
                    data: str | None = None, arch: str | None = None, trust_code: bool = False,
                    model_kwargs: dict | None = None, plot: str | os.PathLike | None = None,
                    onnx_dir: str | os.PathLike | None = None) -> EarlyExitRun:
    """Make ``src`` an early-exit model and write it to ``out`` (see the module's steps). ``plot``:
    a PNG of each policy's accuracy vs average-MACs curve (validation split); ``onnx_dir``: each
    stage as an ONNX file there."""
    cfg = cfg or EarlyExitConfig()
    cfg.check()
    model, info, ds = open_model_and_data(src, data, arch, trust_code, model_kwargs=model_kwargs)
    if input_kind(info) == "tokens":
        raise DataError(f"{src}: early exit places heads on image feature maps; this model takes token ids")
    ds = with_validation(ds, cfg.val_size)
    example = ds.val.x[:2]
    old = info.extra.get(EXITS_KEY)
    plan, training = _heads(model, ExitPlan.from_dict(old, str(src)) if old is not None else None, src, ds, example,
                            cfg)
    heads = list(heads_of(model))
    model.eval()
    _say(cfg, "counting each stage's MACs" + (" and timing it at batch 1" if cfg.cost == "latency" else ""))
    macs = measure_stage_macs(model, plan.layers, heads, example)
    search_costs = macs if cfg.cost == "macs" else measure_stage_latency(
        model, plan.layers, heads, example, repeats=cfg.latency_repeats)
    ee = EarlyExitModel(model, plan, str(src))
    policies = POLICY_NAMES if cfg.policy == "auto" else (cfg.policy,)
    _say(cfg, f"choosing the {'policy and ' if cfg.policy == 'auto' else ''}thresholds on {val_label(ds)}: "
              f"at most {cfg.max_drop:g} pp below the original, lowest expected {search_costs.unit}")
    val_logits = collect_exit_logits(ee, ds.val.x, cfg.batch_size, cfg.progress, "validation exits")
    choice, choices = calibrate(val_logits, ds.val.y, search_costs, cfg.max_drop, policies, cfg.lambdas, cfg.grid)
    plan.policy, plan.thresholds = choice.policy, list(choice.result.thresholds)
    plan.gates = list(choice.gates) if choice.policy == "learned" else []
    paths = path_costs(_with_decision(macs, plan.policy), plan.enabled())
    plan.stage_macs = [int(round(v)) for v in paths]
    plan.notes = {"max_drop": cfg.max_drop, "cost": cfg.cost, "lambda": choice.lam, "grid": cfg.grid,
                  "val_images": len(ds.val), "val_accuracy": choice.result.accuracy,
                  "val_shares": choice.result.shares}         # deepshrink profile's expected MACs use these

    _say(cfg, f"test split ({len(ds.test)} images): the adaptive model against the original")
    original = evaluate(model, ds.test, cfg.batch_size)
    accuracy, exits = adaptive_accuracy(ee.freeze(), ds.test.x, ds.test.y, cfg.batch_size)   # as deployed
    shares = exit_shares(exits, len(plan.heads) + 1)
    expected = expected_cost(shares, paths)
    test = {"accuracy": accuracy, "original_accuracy": original, "drop_pp": (original - accuracy) * 100,
            "expected_macs": expected, "original_macs": macs.full, "macs_reduction": macs.full / max(expected, 1e-12),
            "shares": shares, "images": len(ds.test)}

    info.extra[EXITS_KEY] = plan.to_dict()
    entry = {"layers": plan.layers, "policy": plan.policy, "thresholds": plan.thresholds,
             "adaptive_accuracy": accuracy, "expected_macs": expected, "shares": shares,
             "val_accuracy": choice.result.accuracy, "training": {k: v for k, v in training.items() if k != "history"}}
    config = {k: v for k, v in asdict(cfg).items() if k not in ("progress", "verbose")}
    if training.get("mode") == "joint":
        info.record("early_exit", config, accuracy=original, **entry)       # the backbone itself changed
    else:
        info.record("early_exit", config, **entry)
    model.to(memory_format=torch.contiguous_format)
    save_model(model, out, info)
    run = EarlyExitRun(info, plan, macs, choice, choices, test, training)
    if plot is not None:
        original_val = (val_logits[-1].argmax(1) == ds.val.y).float().mean().item()
        plot_curves({name: [(c.cost, c.accuracy) for c in ch.curve] for name, ch in choices.items()}, plot,
                    original=(search_costs.full, original_val), chosen=(choice.result.cost, choice.result.accuracy),
                    unit=search_costs.unit)
        run.plot = os.fspath(plot)
    if onnx_dir is not None:
        _say(cfg, f"exporting each stage to ONNX in {onnx_dir}")
        run.onnx = [os.fspath(p) for p in export_stages(ee, onnx_dir, list(info.input_shape),
                                                        {"source": os.path.basename(os.fspath(out))})]
    return run


def _with_decision(costs: StageCosts, policy: str) -> StageCosts:
    return StageCosts(costs.backbone, costs.heads, float(decision_macs(policy)), costs.unit)


def open_early_exit(path: str | os.PathLike, *, trust_code: bool = False) -> tuple[EarlyExitModel, ModelInfo]:
    """An early-exit model file, ready for adaptive inference (eval mode, heads frozen:
    :meth:`~deepshrink.exits.EarlyExitModel.freeze`): ``(EarlyExitModel, info)``."""
    model, info = load_model(path, trust_code=trust_code)
    return EarlyExitModel.from_model(model, info, os.fspath(path)).eval().freeze(), info

"""Training, evaluation and fine-tuning on in-memory data, seeded and resumable.

* The batch order and augmentation are pure functions of (seed, epoch, batch), the global RNG
  (dropout) is seeded from ``seed`` when a run starts and restored when it resumes, and the
  learning rate is a pure function of the global step (cosine, optional linear warm-up), so
  two runs with one config agree bit for bit, and a run resumed from a training-state file ends
  bit-identical to an uninterrupted one.
* Callbacks run after every optimizer step (``fn(model, info)``): pruning re-applies masks
  there, quantization-aware training its fake quantizers, AGP updates its target sparsity.
* Under ``torchrun --nproc_per_node=N`` the same call trains with DistributedDataParallel
  (gloo on CPU): each rank takes an equal strided share of every epoch's permutation.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .atomic import atomic_open
from .data import Dataset, Split, iterate_batches, num_batches
from .errors import ConfigError, FormatError, TrainingError, first_line

__all__ = [
    "TrainConfig",
    "StepInfo",
    "FitResult",
    "fit",
    "fine_tune",
    "evaluate",
    "predict",
    "lr_at",
    "seed_everything",
    "distributed_context",
]


@dataclass
class TrainConfig:
    """Every training default in one place."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"            # "sgd" (Nesterov momentum) or "adam" (AdamW)
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"          # "cosine" or "constant"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: bool = True              # random 2-pixel shift + horizontal flip
    seed: int = 0
    channels_last: bool = True        # faster CPU convolutions; no effect on MLPs
    eval_every: int = 1               # epochs between test-set evaluations (0: only at the end)
    evaluate_at_end: bool = True      # with eval_every 0: measure the test accuracy once at the end
                                      # (False: FitResult.accuracy stays None, e.g. a short-term tune)
    checkpoint: str | None = None     # training-state file: written during training, resumed from
    checkpoint_every: int = 0         # optimizer steps between checkpoints (0: end of each epoch)
    progress: bool = True
    verbose: bool = True

    def check(self) -> None:
        if self.epochs < 0 or self.batch_size < 1:
            raise ConfigError(f"epochs must be >= 0 and batch_size >= 1 (got {self.epochs}, {self.batch_size})")
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if not 0 <= self.warmup_epochs < math.inf or self.checkpoint_every < 0 or self.eval_every < 0:
            raise ConfigError("warmup_epochs (finite), checkpoint_every and eval_every must be >= 0")
        if not 0 <= self.weight_decay < math.inf or not 0 <= self.momentum < math.inf:
            raise ConfigError(f"weight_decay and momentum must be finite and >= 0 "
                              f"(got {self.weight_decay}, {self.momentum})")
        if not (0 < self.lr < math.inf) or not (0 <= self.label_smoothing < 1):
            raise ConfigError(f"lr must be > 0 and label_smoothing in [0, 1) (got {self.lr}, {self.label_smoothing})")


@dataclass
class StepInfo:
    epoch: int
    step: int            # batch index within the epoch
    global_step: int     # optimizer steps done so far, this one included
    total_steps: int
    loss: float


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    accuracy: float | None = None     # test accuracy after the last epoch, in [0, 1]
    seconds: float = 0.0
    resumed_from: int | None = None   # global step the run resumed at, if it did


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)


def lr_at(step: int, total: int, base: float, warmup: int = 0, schedule: str = "cosine") -> float:
    """Learning rate at optimizer step ``step`` (0-based) of ``total``."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return base
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1.0 + math.cos(math.pi * min(1.0, t)))


def distributed_context() -> tuple[int, int]:
    """(rank, world size); starts a gloo process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group("gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000, progress: bool = False,
            desc: str = "evaluating") -> torch.Tensor:
    """Logits for ``x`` (N, ...) in eval mode; restores the model's mode afterwards.
    ``progress``: a bar on stderr, counting images, labelled ``desc``."""
    was_training = model.training
    model.eval()
    cl = _has_conv(model) and x.dim() == 4
    outs = []
    bar = tqdm(total=len(x), desc=desc, unit="img", disable=not progress, leave=False, file=sys.stderr,
               delay=1.0)   # only a pass that takes a while shows one
    for lo in range(0, len(x), batch_size):
        xb = x[lo:lo + batch_size]
        if cl:
            xb = xb.contiguous(memory_format=torch.channels_last)
        outs.append(model(xb))
        bar.update(len(xb))
    bar.close()
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate(model: nn.Module, data: Split | Dataset, batch_size: int = 1000, progress: bool = False,
             desc: str = "test accuracy") -> float:
    """Top-1 accuracy in [0, 1] on a split (a Dataset means its test split); ``progress``: a bar."""
    split = data.test if isinstance(data, Dataset) else data
    if len(split) == 0:
        return float("nan")
    logits = predict(model, split.x, batch_size, progress, desc)
    return (logits.argmax(1) == split.y).float().mean().item()


def _make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _identity_keys(cfg: TrainConfig, n_train: int, world: int) -> dict:
    """The settings a resumed run must share with the run that wrote the checkpoint."""
    keys = ("epochs", "batch_size", "optimizer", "lr", "seed", "schedule", "augment")
    return {**{k: getattr(cfg, k) for k in keys}, "n_train": n_train, "world": world}


def _save_state(path: str, model, opt, epoch, step, global_step, history, ident, running=(0.0, 0)) -> None:
    state = {
        "running": list(running),  # (loss sum, samples seen) of the epoch in progress
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": torch.get_rng_state(),
        "epoch": epoch, "step": step, "global_step": global_step,
        "history": history, "ident": ident,
    }
    with atomic_open(path) as fh:
        torch.save(state, fh)


def _load_state(path: str, ident: dict) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # never fall back to unsafe loading; torch's message spans many lines
        what = ("it holds objects other than tensors; loading never executes code"
                if "weights_only" in str(exc) else first_line(exc))
        raise FormatError(f"{path}: unreadable training-state file ({what})") from None
    if not isinstance(state, dict) or state.get("ident") != ident:
        raise ConfigError(
            f"{path}: training state was written with other settings "
            f"({state.get('ident') if isinstance(state, dict) else '?'}); delete it or match them"
        )
    return state


def _diverged(loss_value: float, world: int) -> bool:
    """A non-finite loss on any rank (under DDP every rank must stop at the same step, or the
    others would wait in the gradient all-reduce)."""
    bad = not math.isfinite(loss_value)
    if world > 1:
        flag = torch.tensor([1.0 if bad else 0.0])
        dist.all_reduce(flag)
        bad = flag.item() > 0
    return bad


def fit(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig | None = None,
    callbacks: Sequence[Callable[[nn.Module, StepInfo], None]] = (),
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    params: Iterable[torch.nn.Parameter] | None = None,
) -> FitResult:
    """Train ``model`` in place on ``data.train``; evaluate on ``data.test`` (labelled data only:
    on unlabelled data, such as text, no accuracy is measured and ``FitResult.accuracy`` is None).

    ``loss_fn(model, logits, x, y)`` replaces the default cross-entropy (distillation,
    penalties). ``params`` restricts what the optimizer updates (default: all parameters).
    """
    cfg = config or TrainConfig()
    cfg.check()
    run = _prepare(model, data, cfg, callbacks, loss_fn, params)
    start_epoch, start_step, running = _resume_or_seed(run)
    run.t0 = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        _train_epoch(run, epoch, start_step, running)
        start_step, running = 0, (0.0, 0)
        _print_epoch(run, epoch)
    return _finish(run)


@dataclass(eq=False)
class _Run:
    """One ``fit`` call: what stays fixed while it trains, and how far it has got."""

    model: nn.Module
    net: nn.Module                    # the model, or its DistributedDataParallel wrapper
    opt: torch.optim.Optimizer
    cfg: TrainConfig
    data: Dataset
    criterion: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, x, y) -> loss
    callbacks: Sequence[Callable[[nn.Module, StepInfo], None]]
    rank: int
    world: int
    steps_per_epoch: int              # optimizer steps per epoch on each rank
    total: int                        # optimizer steps of the whole run
    warmup: int                       # linear LR warm-up steps
    ident: dict                       # settings a training-state file must match to be resumed
    channels_last: bool
    global_step: int = 0              # optimizer steps done so far
    t0: float = 0.0                   # perf_counter when the first epoch started
    result: FitResult = field(default_factory=FitResult)


def _prepare(model, data, cfg, callbacks, loss_fn, params) -> _Run:
    """Memory format, DDP wrapper, optimizer and step counts; nothing trained or loaded yet."""
    rank, world = distributed_context()
    channels_last = cfg.channels_last and _has_conv(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    net: nn.Module = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = _make_optimizer(list(params) if params is not None else model.parameters(), cfg)
    steps_per_epoch = num_batches(len(data.train), cfg.batch_size, world)

    def criterion(logits, x, y):
        if loss_fn is not None:
            return loss_fn(model, logits, x, y)
        return F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)

    return _Run(model, net, opt, cfg, data, criterion, callbacks, rank, world, steps_per_epoch,
                total=steps_per_epoch * cfg.epochs, warmup=int(round(cfg.warmup_epochs * steps_per_epoch)),
                ident=_identity_keys(cfg, len(data.train), world), channels_last=channels_last)


def _resume_or_seed(run: _Run) -> tuple[int, int, tuple[float, int]]:
    """(epoch, batch, running loss) to start at: restored from the training-state file when there
    is one, else the beginning, with the global RNG seeded (dropout and any other global draws:
    the run is a function of its config)."""
    cfg = run.cfg
    start_epoch = start_step = 0
    running = (0.0, 0)
    if cfg.checkpoint and Path(cfg.checkpoint).is_file():
        state = _load_state(cfg.checkpoint, run.ident)
        run.model.load_state_dict(state["model"])
        run.opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start_epoch, start_step, run.global_step = state["epoch"], state["step"], state["global_step"]
        run.result.history = list(state["history"])
        run.result.resumed_from = run.global_step
        running = tuple(state.get("running", (0.0, 0)))
    else:
        torch.manual_seed(cfg.seed)
    if start_step >= run.steps_per_epoch:
        start_epoch, start_step = start_epoch + 1, 0
    return start_epoch, start_step, running if start_step else (0.0, 0)


def _train_epoch(run: _Run, epoch: int, start_step: int, running: tuple[float, int]) -> None:
    """The epoch's batches from ``start_step`` on; after its last one, the epoch's record; the
    training state whenever one is due. ``running``: (loss sum, samples) of the steps before."""
    cfg = run.cfg
    run.net.train()
    bar = tqdm(total=run.steps_per_epoch, initial=start_step, desc=f"epoch {epoch + 1}/{cfg.epochs}",
               disable=not cfg.progress or run.rank != 0, leave=False, file=sys.stderr)
    loss_sum, seen = running
    batches = iterate_batches(run.data.train, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch,
                              rank=run.rank, world=run.world, augment=cfg.augment, start=start_step)
    for step, (x, y) in enumerate(batches, start=start_step):
        info, lr = _train_step(run, x, y, epoch, step)
        loss_sum += info.loss * len(y)
        seen += len(y)
        bar.update(1)
        bar.set_postfix(loss=f"{info.loss:.3f}", lr=f"{lr:.4f}")
        last = step + 1 == run.steps_per_epoch
        if last:  # recorded before the state is written, so a resume carries it
            run.result.history.append(_epoch_record(run, epoch, loss_sum, seen))
        _checkpoint_if_due(run, epoch, step, last, (loss_sum, seen))
    bar.close()


def _train_step(run: _Run, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int) -> tuple[StepInfo, float]:
    """One optimizer step at the scheduled LR, then the callbacks; (their StepInfo, the LR)."""
    if run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    lr = lr_at(run.global_step, run.total, run.cfg.lr, run.warmup, run.cfg.schedule)
    for group in run.opt.param_groups:
        group["lr"] = lr
    logits = run.net(x)
    loss = run.criterion(logits, x, y)
    loss_value = loss.item()
    if _diverged(loss_value, run.world):  # stop before a NaN reaches the weights
        what = f"the loss is {loss_value}" if not math.isfinite(loss_value) else "another rank's loss is not finite"
        # free the autograd graph now: under DDP it holds the reducer's pending state, which
        # must not outlive the process group (the traceback would keep it until exit)
        del logits, loss
        raise TrainingError(f"training diverged: {what} at epoch {epoch + 1}, step {step + 1} "
                            f"(LR {lr:.4g}); lower the LR or add warmup epochs")
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    run.global_step += 1
    info = StepInfo(epoch, step, run.global_step, run.total, loss_value)
    for cb in run.callbacks:
        cb(run.model, info)
    return info, lr


def _checkpoint_if_due(run: _Run, epoch: int, step: int, last: bool, running: tuple[float, int]) -> None:
    """Rank 0 writes the training state at the end of each epoch, and every
    ``checkpoint_every`` optimizer steps when that is set."""
    cfg = run.cfg
    if not cfg.checkpoint or run.rank != 0:
        return
    if last or (cfg.checkpoint_every and run.global_step % cfg.checkpoint_every == 0):
        where = (epoch + 1, 0) if last else (epoch, step + 1)
        _save_state(cfg.checkpoint, run.model, run.opt, *where, run.global_step, run.result.history, run.ident,
                    (0.0, 0) if last else running)


def _epoch_record(run: _Run, epoch: int, loss_sum: float, seen: int) -> dict:
    cfg = run.cfg
    is_last = epoch + 1 == cfg.epochs
    do_eval = is_last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)
    do_eval = do_eval and run.data.labelled   # unlabelled data (text): no accuracy against placeholder labels
    return {
        "epoch": epoch + 1,
        "loss": loss_sum / max(1, seen),
        "accuracy": evaluate(run.model, run.data.test) if do_eval else None,
        "seconds": time.perf_counter() - run.t0,
    }


def _print_epoch(run: _Run, epoch: int) -> None:
    """Rank 0's one line per epoch (``verbose``): the last record's loss and test accuracy (``val
    acc`` when ``data.test`` is the validation split: :func:`deepshrink.data.for_selection`)."""
    if run.rank == 0 and run.cfg.verbose and run.result.history:
        rec = run.result.history[-1]
        split = "val" if run.data.val is not None and run.data.test is run.data.val else "test"
        acc = f"  {split} acc {rec['accuracy'] * 100:.2f}%" if rec.get("accuracy") is not None else ""
        print(f"epoch {epoch + 1}/{run.cfg.epochs}  loss {rec['loss']:.4f}{acc}  ({rec['seconds']:.0f} s)", flush=True)


def _finish(run: _Run) -> FitResult:
    """Wall time and final accuracy (the last record's, else measured now)."""
    result = run.result
    result.seconds = time.perf_counter() - run.t0
    if result.history and result.history[-1].get("accuracy") is not None:
        result.accuracy = result.history[-1]["accuracy"]
    elif run.data.labelled and run.cfg.evaluate_at_end:
        result.accuracy = evaluate(run.model, run.data.test)
    return result


def fine_tune(model: nn.Module, data: Dataset, config: TrainConfig | None = None,
              callbacks=(), loss_fn=None, **overrides) -> FitResult:
    """``fit`` with fine-tuning defaults: a few epochs at a tenth of the training LR."""
    base = config or TrainConfig(epochs=3, lr=0.005, warmup_epochs=0.0)
    cfg = TrainConfig(**{**asdict(base), **overrides})
    return fit(model, data, cfg, callbacks=callbacks, loss_fn=loss_fn)

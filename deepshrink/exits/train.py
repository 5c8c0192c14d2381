"""Training exit heads: on a frozen backbone, or jointly with it (BranchyNet's weighted sum of exit
losses, Teerapittayanon et al. 2016), optionally distilling each head from the model's own output.

The loss of one batch, with exit logits ``z_k`` (k < E), the model's output ``z_E`` and weights ``w_k``:

    L = sum_k w_k l_k / sum_k w_k,   l_k = (1 - a) CE(z_k, y) + a T^2 KL(softmax(z_E / T) || softmax(z_k / T))

(``a`` = ``kd_alpha``: 0 is plain cross-entropy; the final exit is the teacher, detached, as in
self-distillation). In ``joint`` mode the model's own output is one more term, ``w_E CE(z_E, y)``,
and every parameter trains (through :func:`deepshrink.train.fit`: its schedule, augmentation,
seeds and DDP). In ``frozen`` mode only the heads train and the backbone is never changed
(BatchNorm statistics included), so a sample that leaves at the last exit gets exactly the
original model's output. Its features do not change either: they are computed once and cached
(float16, when they fit in ``cache_bytes``), so each epoch costs only the heads.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data import Dataset, Split, iterate_batches
from ..distill.losses import kd_loss
from ..errors import ConfigError
from ..train import TrainConfig, fit, lr_at
from .taps import layer_outputs, tapped

__all__ = ["MODES", "ExitTraining", "TrainResult", "exit_loss", "train_heads", "feature_bytes"]

MODES = ("frozen", "joint")


@dataclass
class ExitTraining:
    """Every default of exit-head training in one place."""

    mode: str = "frozen"                   # "frozen": heads only; "joint": heads and backbone together
    epochs: float = 8
    lr: float | None = None                # None: 0.05 (frozen, SGD on fresh heads); 0.005 (joint, fine-tuning)
    batch_size: int = 128
    weight_decay: float = 5e-4
    exit_weights: list[float] | None = None   # one per head (+ one for the model's output in joint mode); None: all 1
    kd_alpha: float = 0.5                  # weight of distillation from the final exit (0: off)
    kd_temperature: float = 4.0
    augment: bool = False                  # joint mode only (frozen mode caches features)
    cache_bytes: int = 4 << 30             # frozen mode: cache the features when they fit in this many bytes
    seed: int = 0
    progress: bool = True
    verbose: bool = True

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (0.05 if self.mode == "frozen" else 0.005)

    def check(self, n_heads: int) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"exit training mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not (0 <= self.epochs < math.inf) or self.batch_size < 1:
            raise ConfigError(f"epochs must be >= 0 and batch size >= 1 (got {self.epochs}, {self.batch_size})")
        if self.lr is not None and not 0 < self.lr < math.inf:
            raise ConfigError(f"the learning rate must be > 0, got {self.lr}")
        if not 0 <= self.kd_alpha <= 1 or not self.kd_temperature > 0:
            raise ConfigError(f"need kd_alpha in [0, 1] and kd_temperature > 0 "
                              f"(got {self.kd_alpha}, {self.kd_temperature})")
        if self.augment and self.mode != "joint":
            raise ConfigError("--augment on needs --mode joint: frozen mode computes the model's features once")
        want = n_heads + (1 if self.mode == "joint" else 0)
        if self.exit_weights is not None:
            if len(self.exit_weights) != want:
                raise ConfigError(f"--exit-weights: {want} weights needed (one per exit"
                                  f"{', the model output last' if self.mode == 'joint' else ''}), "
                                  f"got {len(self.exit_weights)}")
            if any(not (0 <= w < math.inf) for w in self.exit_weights) or sum(self.exit_weights) <= 0:
                raise ConfigError(f"--exit-weights must be finite, >= 0 and not all 0, got {self.exit_weights}")

    def weights(self, n_heads: int) -> list[float]:
        return list(self.exit_weights) if self.exit_weights is not None else \
            [1.0] * (n_heads + (1 if self.mode == "joint" else 0))


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)   # per epoch: loss, seconds
    cached: bool = False
    seconds: float = 0.0


def exit_loss(exit_logits: list[torch.Tensor], final_logits: torch.Tensor | None, y: torch.Tensor,
              weights: list[float], kd_alpha: float = 0.0, temperature: float = 4.0) -> torch.Tensor:
    """The weighted mean of the exits' losses (see the module's formula). ``weights``: one per exit
    logit, plus one for ``final_logits`` when it is to be trained too (joint mode)."""
    terms = []
    for z, w in zip(exit_logits, weights):
        if kd_alpha > 0 and final_logits is not None:
            terms.append(w * kd_loss(z, final_logits.detach(), y, temperature, kd_alpha))
        else:
            terms.append(w * F.cross_entropy(z, y))
    if len(weights) > len(exit_logits) and final_logits is not None:
        terms.append(weights[len(exit_logits)] * F.cross_entropy(final_logits, y))
    return torch.stack(terms).sum() / sum(weights)


def feature_bytes(shapes: list[tuple[int, ...]], n: int, bytes_per_value: int = 2) -> int:
    """What caching ``n`` samples' features of these per-sample shapes takes."""
    return n * bytes_per_value * sum(math.prod(s) for s in shapes)


def _say(cfg: ExitTraining, line: str) -> None:
    if cfg.verbose:
        print(line, flush=True)


@torch.no_grad()
def _cache(model: nn.Module, layers: list[str], split: Split, need_final: bool, cfg: ExitTraining):
    """Every layer's output (float16) and, for distillation, the model's output, for the whole split."""
    feats: list[list[torch.Tensor]] = [[] for _ in layers]
    finals: list[torch.Tensor] = []
    bar = tqdm(total=len(split), desc="caching features", unit="img", disable=not cfg.progress, leave=False,
               file=sys.stderr)
    for lo in range(0, len(split), 500):
        outs, final = layer_outputs(model, split.x[lo:lo + 500], layers, full=need_final)
        for i, f in enumerate(outs):
            feats[i].append(f.to(torch.float16))
        if need_final:
            finals.append(final.float())
        bar.update(min(500, len(split) - lo))
    bar.close()
    return [torch.cat(f) for f in feats], (torch.cat(finals) if need_final else None)


def _frozen(model: nn.Module, layers: list[str], heads: nn.ModuleList, train: Split, cfg: ExitTraining,
            shapes: list[tuple[int, ...]]) -> TrainResult:
    """Heads only, on the backbone in eval mode; features cached when they fit."""
    model.eval()
    need_final = cfg.kd_alpha > 0
    result = TrainResult(cached=feature_bytes(shapes, len(train)) <= cfg.cache_bytes)
    t0 = time.perf_counter()
    if result.cached:
        _say(cfg, f"computing the backbone's features at {', '.join(layers)} once for {len(train)} training images "
                  f"({feature_bytes(shapes, len(train)) / 2**20:.0f} MiB, float16)")
        feats, finals = _cache(model, layers, train, need_final, cfg)
    params = [p for h in heads for p in h.parameters()]
    opt = torch.optim.SGD(params, lr=cfg.learning_rate(), momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    weights = cfg.weights(len(layers))
    index = Split(torch.arange(len(train)), train.y)
    full_epochs = math.ceil(cfg.epochs)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = max(1, int(round(cfg.epochs * steps_per_epoch)))
    step = 0
    heads.train()
    _say(cfg, f"training {len(layers)} exit head(s) on the frozen backbone: {cfg.epochs:g} epoch(s), "
              f"lr {cfg.learning_rate():g}" + (f", distilled from the final exit (alpha {cfg.kd_alpha:g})"
                                                 if need_final else ""))
    try:
        for epoch in range(full_epochs):
            loss_sum = seen = 0
            bar = tqdm(total=steps_per_epoch, desc=f"heads epoch {epoch + 1}/{full_epochs}", leave=False,
                       disable=not cfg.progress, file=sys.stderr)
            for idx, y in iterate_batches(index, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch):
                if step >= total:
                    break
                if result.cached:
                    xs = [f[idx].float() for f in feats]
                    final = finals[idx] if need_final else None
                else:
                    with torch.no_grad():
                        xs, final = layer_outputs(model, train.x[idx], layers, full=need_final)
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, total, cfg.learning_rate())
                logits = [h(x) for h, x in zip(heads, xs)]
                loss = exit_loss(logits, final, y, weights, cfg.kd_alpha, cfg.kd_temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                loss_sum += loss.item() * len(y)
                seen += len(y)
                bar.update(1)
            bar.close()
            if seen:
                result.history.append({"epoch": epoch + 1, "loss": loss_sum / seen,
                                       "seconds": time.perf_counter() - t0})
                _say(cfg, f"heads epoch {epoch + 1}/{full_epochs}  loss {loss_sum / seen:.4f}  "
                          f"({time.perf_counter() - t0:.0f} s)")
    finally:
        heads.eval()
    result.seconds = time.perf_counter() - t0
    return result


class _Joint(nn.Module):
    """The backbone whose forward also runs the heads (at their layers) and keeps their logits."""

    def __init__(self, model: nn.Module, layers: list[str], heads: nn.ModuleList):
        super().__init__()
        self.model, self.layers = model, layers
        self.exit_logits: list[torch.Tensor] = []
        self._heads = [heads]          # not a child: the heads are the model's own ``exit_heads``

    def forward(self, x):
        self.exit_logits = [None] * len(self.layers)
        heads = self._heads[0]

        def run_head(i, out):
            self.exit_logits[i] = heads[i](out)

        with tapped(self.model, self.layers, run_head):
            return self.model(x)


def _joint(model: nn.Module, layers: list[str], heads: nn.ModuleList, data: Dataset, cfg: ExitTraining) -> TrainResult:
    """Heads and backbone together through :func:`deepshrink.train.fit` (``data.test``: where it reports)."""
    net = _Joint(model, layers, heads)
    weights = cfg.weights(len(layers))

    def loss_fn(m, logits, x, y):
        return exit_loss(net.exit_logits, logits, y, weights, cfg.kd_alpha, cfg.kd_temperature)

    _say(cfg, f"training {len(layers)} exit head(s) jointly with the backbone: {cfg.epochs:g} epoch(s), "
              f"lr {cfg.learning_rate():g}, exit weights {weights}")
    train_cfg = TrainConfig(epochs=int(math.ceil(cfg.epochs)), batch_size=cfg.batch_size, lr=cfg.learning_rate(),
                            weight_decay=cfg.weight_decay, augment=cfg.augment, seed=cfg.seed, eval_every=0,
                            progress=cfg.progress, verbose=cfg.verbose)
    fitted = fit(net, data, train_cfg, loss_fn=loss_fn)
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return TrainResult(history=fitted.history, seconds=fitted.seconds)


def train_heads(model: nn.Module, layers: list[str], heads: nn.ModuleList, data: Dataset, cfg: ExitTraining,
                shapes: list[tuple[int, ...]]) -> TrainResult:
    """Train ``heads`` (the model's ``exit_heads``) at ``layers`` on ``data.train``; ``shapes``: each
    layer's output per sample. Joint mode reports on ``data.test`` (pass the validation view)."""
    cfg.check(len(layers))
    torch.manual_seed(cfg.seed)
    if cfg.epochs == 0:
        return TrainResult()
    if cfg.mode == "joint":
        return _joint(model, layers, heads, data, cfg)
    return _frozen(model, layers, heads, data.train, cfg, shapes)


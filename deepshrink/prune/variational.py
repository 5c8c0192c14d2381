"""Sparse variational dropout (Molchanov, Ashukha & Vetrov, "Variational Dropout Sparsifies Deep
Neural Networks", ICML 2017).

Each target weight gets multiplicative Gaussian noise, ``w ~ N(theta, alpha * theta^2)``, learnt
per weight. The variance is parameterised additively, ``sigma^2 = alpha * theta^2`` with
``log sigma^2`` the trained parameter, so that the gradient of theta does not carry the noise
(the paper's "additive reparameterisation"). Training minimises, per sample,

    task loss + beta * KL(q(w) || log-uniform prior) / N_train

with the local reparameterisation trick: a layer's pre-activation ``b = x theta^T`` (a Conv2d:
``conv(x, theta)``) is sampled as ``b ~ N(x theta^T, x^2 (sigma^2)^T)``, one draw per output
element. The KL has no closed form; the paper's fit (its Eq. 14) is

    -KL ~= k1 sigmoid(k2 + k3 log alpha) - 0.5 log(1 + 1/alpha) - k1,
    k1 = 0.63576, k2 = 1.87320, k3 = 1.48695.

It pushes log alpha up (the noise over the signal) wherever the data allows; a weight with
``log alpha > 3`` (noise 20x the weight's magnitude) carries nothing and is pruned
(:func:`keep_masks`). ``beta`` is warmed up from 0 to 1 (:func:`kl_weight`), as the paper
trains from a pretrained model.

The maths are pure functions of tensors; :class:`SparseVD` holds the per-weight ``log sigma^2``
as parameters of the layers it is attached to (so ``model.parameters()`` trains them) and a
forward hook per layer that adds the sampled noise in training mode. Detach before saving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset, Split, num_batches
from ..errors import ConfigError
from ..masks import set_mask
from ..targets import prunable_weights
from ..train import TrainConfig, evaluate, fit

__all__ = ["K1", "K2", "K3", "LOG_ALPHA_THRESHOLD", "log_alpha", "neg_kl", "kl_weight", "SparseVD", "VDConfig",
           "sparse_vd_prune_"]

K1, K2, K3 = 0.63576, 1.87320, 1.48695
LOG_ALPHA_THRESHOLD = 3.0      # the paper's: prune where log alpha > 3
LOG_SIGMA2_INIT = -10.0        # the paper's initial log sigma^2
_SUFFIX = "_log_sigma2"
_EPS = 1e-8


def log_alpha(theta: torch.Tensor, log_sigma2: torch.Tensor) -> torch.Tensor:
    """log alpha = log sigma^2 - log theta^2, clamped to [-10, 10] as in the paper's code (same shape)."""
    return torch.clamp(log_sigma2 - torch.log(theta * theta + _EPS), -10.0, 10.0)


def neg_kl(la: torch.Tensor) -> torch.Tensor:
    """-KL(q || log-uniform) per weight, the paper's Eq. 14 fit, from log alpha (same shape)."""
    return K1 * torch.sigmoid(K2 + K3 * la) - 0.5 * F.softplus(-la) - K1


def kl_weight(step: int, total: int, warmup: float) -> float:
    """beta at optimizer step ``step`` of ``total``: linear from 0 to 1 over the first ``warmup``
    share of the steps, then 1."""
    if warmup <= 0:
        return 1.0
    return min(1.0, step / max(1.0, warmup * total))


def _noise_std(module: nn.Module, x: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """sqrt(x^2 * sigma^2) through the layer's own op: the pre-activation's standard deviation."""
    if isinstance(module, nn.Linear):
        var = F.linear(x * x, sigma2)                                   # (..., out)
    else:
        var = F.conv2d(x * x, sigma2, None, module.stride, module.padding, module.dilation, module.groups)
    return torch.sqrt(var + _EPS)


class SparseVD:
    """Sparse VD on the named weights of ``model`` (Linear and Conv2d only); attaches on creation.

    ``names``: {parameter name: weight}, e.g. :func:`deepshrink.targets.prunable_weights`.
    ``init_log_alpha``: start every weight at this log alpha (log sigma^2 = log theta^2 + it), which
    from a trained model reaches the pruning threshold in far fewer steps than the paper's
    log sigma^2 = -10 (None), chosen for training from scratch.
    """

    def __init__(self, model: nn.Module, names, threshold: float = LOG_ALPHA_THRESHOLD,
                 init_log_alpha: float | None = None):
        if not math.isfinite(threshold):
            raise ConfigError(f"sparse variational dropout: log alpha threshold must be finite, got {threshold}")
        self.threshold = float(threshold)
        self.layers: dict[str, tuple[nn.Module, str]] = {}
        self._hooks = []
        for name in names:
            mod_name, _, attr = name.rpartition(".")
            module = model.get_submodule(mod_name) if mod_name else model
            if not isinstance(module, (nn.Linear, nn.Conv2d)) or attr != "weight":
                raise ConfigError(f"sparse variational dropout: {name!r} is not the weight of a Linear or "
                                  f"Conv2d layer ({type(module).__name__})")
            if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
                raise ConfigError(f"sparse variational dropout: {name!r} pads with {module.padding_mode!r}; "
                                  "only zero padding is supported")
            w = module.weight.detach()
            init = (torch.full_like(w, LOG_SIGMA2_INIT) if init_log_alpha is None
                    else torch.log(w * w + _EPS) + init_log_alpha)      # every weight at the same log alpha
            module.register_parameter(attr + _SUFFIX, nn.Parameter(init))
            self._hooks.append(module.register_forward_hook(self._hook))
            self.layers[name] = (module, attr)
        if not self.layers:
            raise ConfigError("sparse variational dropout: no Linear or Conv2d weight to act on")

    @staticmethod
    def _hook(module: nn.Module, inputs: tuple, output: torch.Tensor):
        if not module.training or not torch.is_grad_enabled():
            return None      # inference: the mean weights theta (the pruned ones zeroed by keep_masks)
        sigma2 = torch.exp(getattr(module, "weight" + _SUFFIX))
        return output + _noise_std(module, inputs[0], sigma2) * torch.randn_like(output)

    def log_alphas(self) -> dict[str, torch.Tensor]:
        """{weight name: log alpha}, detached."""
        return {n: log_alpha(getattr(m, a), getattr(m, a + _SUFFIX)).detach() for n, (m, a) in self.layers.items()}

    def kl(self) -> torch.Tensor:
        """The summed KL of every attached weight (a scalar with gradient)."""
        total = 0.0
        for m, a in self.layers.values():
            total = total - neg_kl(log_alpha(getattr(m, a), getattr(m, a + _SUFFIX))).sum()
        return total

    def keep_masks(self) -> dict[str, torch.Tensor]:
        """{weight name: bool mask}, True where log alpha is below the threshold (the weight stays)."""
        return {n: la < self.threshold for n, la in self.log_alphas().items()}

    def sparsity(self) -> float:
        masks = self.keep_masks()
        total = sum(m.numel() for m in masks.values())
        return 1.0 - sum(int(m.sum()) for m in masks.values()) / max(total, 1)

    def loss(self, task_loss, n_train: int, total_steps: int, warmup: float = 0.5):
        """A ``fit`` loss: ``task_loss`` (a ``fit`` loss, None: cross-entropy) + beta * KL / n_train,
        beta warmed up over the first ``warmup`` share of ``total_steps`` (counted per call)."""
        if n_train < 1 or total_steps < 1:
            raise ConfigError("sparse variational dropout needs training data and at least one step")
        state = {"step": 0}

        def loss_fn(model, logits, x, y):
            base = F.cross_entropy(logits, y) if task_loss is None else task_loss(model, logits, x, y)
            beta = kl_weight(state["step"], total_steps, warmup)
            state["step"] += 1
            return base + beta * self.kl() / n_train

        return loss_fn

    def detach(self) -> dict[str, torch.Tensor]:
        """Remove the hooks and the log sigma^2 parameters; returns :meth:`keep_masks` as they were."""
        masks = self.keep_masks()
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for m, a in self.layers.values():
            delattr(m, a + _SUFFIX)
        return masks


@dataclass
class VDConfig:
    """Training under sparse VD: Adam (no weight decay: the KL is the regulariser) at ``lr``,
    beta warmed up over ``kl_warmup`` of the steps, then the weights above ``threshold`` masked and
    ``finetune_epochs`` of masked fine-tuning at ``finetune_lr`` (SGD, the project's default loop)."""

    epochs: int = 10
    lr: float = 1e-3
    schedule: str = "constant"
    kl_warmup: float = 0.5
    threshold: float = LOG_ALPHA_THRESHOLD
    batch_size: int = 128
    augment: bool = False
    seed: int = 0
    progress: bool = True
    verbose: bool = True


def sparse_vd_prune_(model: nn.Module, data: Dataset, cfg: VDConfig | None = None, loss_fn=None,
                     score: Callable[[nn.Module, Split], float] | None = None,
                     include=(), exclude=()) -> float:
    """Train ``model`` in place under sparse VD on ``data.train`` (its default pruning targets,
    :func:`deepshrink.targets.prunable_weights` with ``include``/``exclude``), then mask every weight
    whose log alpha exceeds the threshold; returns ``score(model, data.test)`` (default: accuracy).
    ``loss_fn``: the task loss (a ``fit`` loss, e.g. distillation); None: cross-entropy."""
    cfg = cfg or VDConfig()
    if cfg.epochs < 1:
        raise ConfigError(f"sparse variational dropout needs at least one epoch, got {cfg.epochs}")
    vd = SparseVD(model, prunable_weights(model, include, exclude), cfg.threshold)
    tcfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, optimizer="adam", weight_decay=0.0, schedule=cfg.schedule,
                       batch_size=cfg.batch_size, augment=cfg.augment, seed=cfg.seed, progress=cfg.progress,
                       verbose=cfg.verbose, eval_every=0, evaluate_at_end=False)
    steps = num_batches(len(data.train), cfg.batch_size) * cfg.epochs
    try:
        fit(model, data, tcfg, loss_fn=vd.loss(loss_fn, len(data.train), steps, cfg.kl_warmup))
    finally:
        masks = vd.detach()
    for name, keep in masks.items():
        set_mask(model, name, keep)
    return (score or evaluate)(model, data.test)

"""Fidelity: how closely a compressed model reproduces its original, measured without labels.

Compression should change a model's function as little as possible; where the data has no
labels (text), agreement with the original is the only honest measure, and where it has labels
it says what accuracy alone hides (Hinton et al. 2015 compare soft targets; Sentence-BERT
embeddings are compared by cosine). On the same inputs, with ``o`` the model's output row and
``r`` the reference's:

* cosine  ``o . r / (|o| |r|)`` per row, mean and min (embeddings and logits alike);
* logits only: top-1 agreement ``mean(argmax o == argmax r)`` and the mean KL divergence
  ``KL(softmax r || softmax o) = sum softmax(r) * (log_softmax r - log_softmax o)``, in nats.

An output ``(N, ..., D)`` is compared row by row over its last dimension (per token for token-level
logits ``(N, L, V)``, pad positions included). Sums run in float64, and identical outputs give a
cosine of exactly 1 and a KL of exactly 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError, ModelError

__all__ = ["Fidelity", "OUTPUT_KINDS", "fidelity", "output_kind"]

OUTPUT_KINDS = ("logits", "embedding")


@dataclass
class Fidelity:
    """Agreement of a model with its reference over ``rows`` output rows of ``samples`` inputs."""

    kind: str                       # "logits" or "embedding"
    samples: int
    rows: int
    cosine_mean: float
    cosine_min: float
    agreement: float | None = None  # logits: top-1 agreement in [0, 1]
    kl_mean: float | None = None    # logits: mean KL(reference || model), nats

    def to_dict(self) -> dict:
        return asdict(self)


def output_kind(model: nn.Module) -> str:
    """``model.output_kind`` when it declares one (a bare Hugging Face encoder: embedding), else logits."""
    kind = getattr(model, "output_kind", "logits")
    return kind if kind in OUTPUT_KINDS else "logits"


def _rows(out, which: str, n: int) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != n:
        raise ModelError(f"the {which} returned {type(out).__name__} {list(getattr(out, 'shape', []))}, "
                         f"not one tensor with {n} rows")
    return out.detach().to(torch.float64).reshape(n, -1) if out.dim() == 1 else \
        out.detach().to(torch.float64).reshape(-1, out.shape[-1])


def _cosine(o: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Row-wise ``o . r / sqrt(|o|^2 |r|^2)``: exactly 1 for identical rows (sqrt of a square is exact
    in IEEE arithmetic, which ``F.cosine_similarity``'s separate normalisations are not); 0 for a zero row."""
    dot = (o * r).sum(-1)
    norms = ((o * o).sum(-1) * (r * r).sum(-1)).sqrt()
    return torch.where(norms > 0, dot / norms.clamp_min(torch.finfo(norms.dtype).tiny), torch.zeros_like(dot))


@torch.inference_mode()
def fidelity(model: nn.Module, reference: nn.Module, x: torch.Tensor, *, kind: str | None = None,
             batch_size: int = 256) -> Fidelity:
    """Compare ``model`` with ``reference`` on the inputs ``x`` (N, ...); ``kind`` defaults to the
    model's :func:`output_kind`. Both run in eval mode; their modes are restored."""
    kind = kind or output_kind(model)
    if kind not in OUTPUT_KINDS:
        raise ConfigError(f"output kind {kind!r}: choose {' or '.join(OUTPUT_KINDS)}")
    if len(x) == 0:
        raise ConfigError("fidelity needs at least one input")
    modes = model.training, reference.training
    model.eval(), reference.eval()
    cos_sum, cos_min, agree, kl_sum, rows = 0.0, float("inf"), 0, 0.0, 0
    try:
        for lo in range(0, len(x), batch_size):
            xb = x[lo:lo + batch_size]
            o, r = _rows(model(xb), "model", len(xb)), _rows(reference(xb), "reference", len(xb))
            if o.shape != r.shape:
                raise ModelError(f"the model gives outputs of {list(o.shape)} per batch, the reference {list(r.shape)}")
            cos = _cosine(o, r)                                              # (rows,)
            cos_sum, cos_min, rows = cos_sum + cos.sum().item(), min(cos_min, cos.min().item()), rows + len(cos)
            if kind == "logits":
                agree += (o.argmax(-1) == r.argmax(-1)).sum().item()
                lr, lo_ = F.log_softmax(r, -1), F.log_softmax(o, -1)
                kl_sum += (lr.exp() * (lr - lo_)).sum().item()
    finally:
        model.train(modes[0]), reference.train(modes[1])
    logits = kind == "logits"
    return Fidelity(kind, len(x), rows, cos_sum / rows, cos_min,
                    agree / rows if logits else None, kl_sum / rows if logits else None)

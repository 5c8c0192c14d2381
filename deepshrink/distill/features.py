"""Feature distillation: match a student layer's output to a teacher layer's (FitNets-style hints,
Romero et al. 2015), on layers picked by name.

Forward hooks capture the outputs of the named modules. Where the two widths differ a learned
adapter maps the student's feature to the teacher's width (a 1x1 convolution for feature maps,
a linear layer for vectors); where the spatial sizes differ both maps are average-pooled to the
smaller size (adaptive pooling). A feature map paired with a vector is pooled globally to
(N, C) first. The adapters are trained with the student and thrown away afterwards.

:class:`FeatureStudent` wraps the student so that ``fit`` (and DistributedDataParallel) sees
one module whose forward returns the student's logits and leaves the adapted features in
``.adapted``; the teacher's features are captured by the same kind of hook in the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

__all__ = ["FeatureCapture", "FeatureStudent", "parse_pairs", "match_teacher"]


def parse_pairs(specs) -> list[tuple[str, str]]:
    """``["fc2:classifier.1", ...]`` or pairs -> [(student layer, teacher layer), ...]."""
    out = []
    for spec in specs or ():
        if isinstance(spec, str):
            s, sep, t = spec.partition(":")
            if not sep or not s or not t:
                raise ConfigError(f"feature pair {spec!r}: expected STUDENT_LAYER:TEACHER_LAYER")
            out.append((s, t))
        else:
            s, t = spec
            out.append((str(s), str(t)))
    return out


def _module(model: nn.Module, name: str, who: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        raise ConfigError(f"{who} has no layer {name!r}; its layers: {', '.join(names[:30])}") from None


class FeatureCapture:
    """Forward hooks storing the outputs of named modules in ``.outputs`` (name -> tensor)."""

    def __init__(self, model: nn.Module, names: list[str], who: str):
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = [_module(model, n, who).register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name):
        def hook(module, inputs, output):
            self.outputs[name] = output.clone()  # a following in-place op (ReLU) must not change it
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _shapes(model: nn.Module, names: list[str], x: torch.Tensor, who: str) -> list[tuple[int, ...]]:
    """Output shapes (without N) of the named layers on a sample batch, in eval mode."""
    cap = FeatureCapture(model, names, who)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was)
        cap.remove()
    for n in names:
        if cap.outputs[n].dim() not in (2, 4):
            raise ConfigError(f"{who} layer {n!r}: output {tuple(cap.outputs[n].shape)} is neither "
                              "(N, C) nor (N, C, H, W)")
    return [tuple(cap.outputs[n].shape[1:]) for n in names]


def _target(s: tuple, t: tuple) -> tuple:
    """Common (C_t[, H, W]) the pair is compared at: the teacher's width, the smaller size."""
    if len(s) == 3 and len(t) == 3:
        return (t[0], min(s[1], t[1]), min(s[2], t[2]))
    return (t[0],)


def _pool(f: torch.Tensor, shape: tuple) -> torch.Tensor:
    """Bring a (N, C, H, W) or (N, C) feature to ``shape`` (without N) by average pooling."""
    if f.dim() == 4 and len(shape) == 1:
        return f.mean(dim=(2, 3))                               # (N, C)
    if f.dim() == 4 and tuple(f.shape[2:]) != tuple(shape[1:]):
        return F.adaptive_avg_pool2d(f, shape[1:])              # (N, C, h, w)
    return f


class FeatureStudent(nn.Module):
    """The student plus adapters; forward returns the student's logits."""

    def __init__(self, student: nn.Module, teacher: nn.Module, pairs, sample: torch.Tensor):
        super().__init__()
        self.pairs = parse_pairs(pairs)
        if not self.pairs:
            raise ConfigError("feature distillation needs at least one STUDENT_LAYER:TEACHER_LAYER pair")
        self.student = student
        s_names, t_names = [p[0] for p in self.pairs], [p[1] for p in self.pairs]
        s_shapes = _shapes(student, s_names, sample, "the student")
        t_shapes = _shapes(teacher, t_names, sample, "the teacher")
        self.targets = [_target(s, t) for s, t in zip(s_shapes, t_shapes)]
        self.adapters = nn.ModuleList()
        for s, t, tgt in zip(s_shapes, t_shapes, self.targets):
            if s[0] == t[0]:
                self.adapters.append(nn.Identity())
            elif len(tgt) == 3:
                self.adapters.append(nn.Conv2d(s[0], t[0], 1, bias=False))  # (N, C_s, h, w) -> (N, C_t, h, w)
            else:
                self.adapters.append(nn.Linear(s[0], t[0]))                 # (N, C_s) -> (N, C_t)
        self._capture = FeatureCapture(student, s_names, "the student")
        self.adapted: list[torch.Tensor] = []

    def forward(self, x):
        self._capture.outputs.clear()
        logits = self.student(x)
        self.adapted = [ad(_pool(self._capture.outputs[n], tgt))
                        for (n, _), ad, tgt in zip(self.pairs, self.adapters, self.targets)]
        return logits

    def release(self) -> nn.Module:
        """Remove the hooks and hand back the bare student."""
        self._capture.remove()
        self.adapted = []
        return self.student


def match_teacher(features: dict[str, torch.Tensor], pairs, targets) -> list[torch.Tensor]:
    """The teacher's captured features pooled to each pair's common shape."""
    return [_pool(features[t], tgt) for (_, t), tgt in zip(pairs, targets)]

"""Each stage of an early-exit model as its own ONNX file, so a runtime can stop between them.

Stage ``i`` runs the backbone from the ``i-1``-th enabled exit's layer (stage 0: from the image) to
the ``i``-th, plus that exit's head and decision score; the last stage runs to the model's output:

    stage 0:  input (N, C, H, W)            -> feature (N, ...), logits (N, K), score (N,)
    stage i:  feature of the exit before it -> feature, logits, score
    last:     feature of the last exit      -> logits

A sample leaves after stage ``i`` when ``score >= threshold`` (the file's ``threshold``
metadata_props entry); only the rest of the batch is handed to stage ``i + 1``.

Cutting the backbone needs no graph surgery and no fx: the stage module runs the whole model on a
constant placeholder input, a tap replaces the start layer's output with the stage's input and
another ends the pass at the stop layer (:mod:`.taps`). The TorchScript exporter records what
ran; everything computed from the placeholder is unused and dropped from the graph. Each file is
checked in ONNX Runtime (batch size 3) against the stage in PyTorch; a disagreement is a
ModelError, never a file.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_write_bytes
from ..errors import ModelError, first_line
from .model import EarlyExitModel
from .policies import exit_score
from .taps import StopForward, tapped

__all__ = ["StageModule", "stage_modules", "export_stages", "CHECK_TOL", "OPSET"]

OPSET = 17
CHECK_TOL = 1e-4


class StageModule(nn.Module):
    """The backbone from layer ``start`` (None: the input) to layer ``stop`` (None: the output), then
    the exit's head and score (``head`` None for the last stage)."""

    def __init__(self, ee: EarlyExitModel, start: str | None, stop: str | None, exit_index: int | None,
                 input_shape: list[int]):
        super().__init__()
        self.ee, self.start, self.stop, self.exit_index = ee, start, stop, exit_index
        self.register_buffer("placeholder", torch.zeros(1, *input_shape), persistent=False)

    def forward(self, x):
        got: list[torch.Tensor] = []
        layers, actions = [], []
        if self.start is not None:
            layers.append(self.start)
            actions.append(lambda out: x)
        if self.stop is not None:
            layers.append(self.stop)

            def stop(out):
                got.append(out)
                raise StopForward
            actions.append(stop)
        model = self.ee.model
        with tapped(model, layers, lambda i, out: actions[i](out)):
            try:
                final = model(self.placeholder if self.start is not None else x)
            except StopForward:
                final = None
        if self.stop is None:
            return final
        feature = got[0]
        k = self.exit_index
        plan = self.ee.plan
        logits = self.ee.heads[k](feature)
        score = exit_score(plan.policy, logits, plan.gates[k] if plan.gates else None)
        return feature, logits, score


def stage_modules(ee: EarlyExitModel, input_shape: list[int]) -> list[StageModule]:
    """One module per stage: the enabled exits' layers are the boundaries."""
    plan = ee.plan
    on = [k for k, t in enumerate(plan.thresholds) if t is not None] if plan.policy else []
    bounds = [plan.heads[k].layer for k in on]
    stages, start = [], None
    for k, layer in zip(on, bounds):
        stages.append(StageModule(ee, start, layer, k, input_shape).eval())
        start = layer
    stages.append(StageModule(ee, start, None, None, input_shape).eval())
    return stages


def _export(stage: StageModule, x: torch.Tensor, last: bool) -> bytes:
    names = ["logits"] if last else ["feature", "logits", "score"]
    axes = {"input": {0: "batch"}, **{n: {0: "batch"} for n in names}}
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")          # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(stage, (x,), buf, dynamo=False, opset_version=OPSET, input_names=["input"],
                          output_names=names, dynamic_axes=axes)
    return buf.getvalue()


def _check(blob: bytes, stage: StageModule, x: torch.Tensor, where: str) -> None:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": x.numpy()})
    except Exception as exc:  # ORT's own exception types
        raise ModelError(f"{where}: ONNX Runtime cannot run the exported stage ({first_line(exc)})") from None
    with torch.no_grad():
        ref = stage(x)
    ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    for name, a, b in zip(("feature", "logits", "score"), got, ref):
        b = b.float().numpy()
        if a.shape != b.shape or (b.size and float(np.abs(a - b).max()) > CHECK_TOL * max(1.0, float(np.abs(b).max()))):
            raise ModelError(f"{where}: the exported stage's {name} disagrees with PyTorch "
                             f"(shape {a.shape} vs {b.shape})")


def export_stages(ee: EarlyExitModel, out_dir: str | os.PathLike, input_shape: list[int],
                  metadata: dict | None = None) -> list[Path]:
    """Write ``stage0.onnx`` ... into ``out_dir`` (created if missing), each checked in ONNX Runtime;
    returns their paths. ``metadata``: extra metadata_props (strings) for every file."""
    import onnx
    ee = ee.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages = stage_modules(ee, input_shape)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, *input_shape, generator=g)                   # (3, C, H, W)
    paths = []
    for i, stage in enumerate(stages):
        last = i == len(stages) - 1
        where = f"{out / f'stage{i}.onnx'}"
        try:
            blob = _export(stage, x, last)
        except Exception as exc:  # the exporter's own error types
            raise ModelError(f"{where}: cannot export stage {i} ({first_line(exc)})") from None
        _check(blob, stage, x, where)
        proto = onnx.load_from_string(blob)
        props = {"stage": str(i), "stages": str(len(stages)),
                 "input": "image" if stage.start is None else f"feature of {stage.start}",
                 "next": "" if last else f"stage{i + 1}.onnx", **(metadata or {})}
        if not last:
            props.update({"exit_layer": stage.stop, "policy": ee.plan.policy,
                          "threshold": repr(float(ee.plan.thresholds[stage.exit_index])),
                          "rule": "leave when score >= threshold"})
        onnx.helper.set_model_props(proto, props)
        path = out / f"stage{i}.onnx"
        atomic_write_bytes(path, proto.SerializeToString())
        paths.append(path)
        if not last:
            with torch.no_grad():
                x = stage(x)[0]                                     # the next stage's input
    return paths

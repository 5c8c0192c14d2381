"""fp32 ONNX from any ``nn.Module`` (images or token ids), checked against PyTorch; and ONNX
Runtime's own dynamic int8 of that graph, the peer path a user would try first.

Two exporters, chosen by trying (measured on torch 2.13, onnxscript 0.7, a 2-layer BERT):

* the TorchScript exporter (``dynamo=False``, opset 17): 0.1-1.5 s; it traces one example, so
  a shape read as a Python int is baked into the graph and the file is silently wrong for
  another batch size. It runs the zoo (its file is unchanged byte for byte) and a BERT wrapper
  that takes token ids.
* the dynamo exporter (``torch.export`` + onnxscript, opset 18): 2-12 s; symbolic shapes, and
  decompositions for operators TorchScript has no ONNX symbolic for.

``export_onnx`` runs the TorchScript exporter, then the written graph in ONNX Runtime on a
probe of another batch size (and sequence length) against PyTorch; if either fails it exports
with dynamo and checks again. A graph that still disagrees is a ModelError, never a file.
Axes: ``input`` (N, C, H, W) float32 with a dynamic batch, or (N, L) int64 token ids with
dynamic batch and sequence; one output named after the model's ``output_kind`` (``logits``
unless the model says ``embedding``). The input layout, the exporter and the caller's
``metadata`` (e.g. the normalisation mean and std) go to the file's ``metadata_props``.

``export_ort_dynamic_int8``: ``onnxruntime.quantization.quantize_dynamic`` (int8 weights,
activations quantized per call from their observed range: ORT's DynamicQuantizeLinear ->
MatMulInteger / ConvInteger) applied to that fp32 graph.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_write_bytes
from ..errors import ConfigError, ModelError

__all__ = ["OPSET", "DYNAMO_OPSET", "EXPORTERS", "export_onnx", "export_ort_dynamic_int8", "onnx_metadata"]

OPSET = 17                   # TorchScript exporter
DYNAMO_OPSET = 18            # the dynamo exporter's lowest well-supported opset
EXPORTERS = ("auto", "torchscript", "dynamo")
CHECK_TOL = 1e-4             # |ONNX Runtime - PyTorch| <= CHECK_TOL * max(1, |PyTorch|) on the probe


def _example(inputs) -> tuple[torch.Tensor, str]:
    """(example batch, layout in words) from a shape without batch (float images) or a tensor."""
    if isinstance(inputs, torch.Tensor):
        x = inputs.detach()
        if not x.is_floating_point():
            if x.dim() != 2:
                raise ConfigError(f"token ids must be (N, L), got shape {tuple(x.shape)}")
            return x.to(torch.int64), "token ids int64 (N, L)"
        x = x.float()
    else:
        x = torch.zeros(1, *[int(d) for d in inputs])
    if x.dim() == 0:
        raise ConfigError("the example input needs a batch axis")
    return x, "NCHW float32" if x.dim() == 4 else f"float32 (N, {', '.join(map(str, x.shape[1:]))})"


def _probe(x: torch.Tensor) -> torch.Tensor:
    """Another batch size (and sequence length for tokens) than the example, seeded."""
    g = torch.Generator().manual_seed(0)
    n = x.shape[0] + 2
    if x.is_floating_point():
        return torch.randn(n, *x.shape[1:], generator=g)
    ids = torch.unique(torch.cat([x.flatten().cpu(), torch.tensor([0, 1])]))   # ids the model has seen
    return ids[torch.randint(len(ids), (n, max(1, x.shape[1] // 2)), generator=g)]


def _torchscript(model, x, out_name, opset, tokens) -> bytes:
    buf = io.BytesIO()
    axes = {0: "batch", 1: "seq"} if tokens else {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)     # the legacy exporter is our choice
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the probe checks what tracing baked in
        out = model(x)
        out_axes = {0: "batch", 1: "seq"} if tokens and out.dim() >= 3 and out.shape[1] == x.shape[1] else {0: "batch"}
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=opset, input_names=["input"],
                          output_names=[out_name], dynamic_axes={"input": axes, out_name: out_axes})
    return buf.getvalue()


def _dynamo(model, x, out_name, opset, tokens) -> bytes:
    reps = (2, 2) if tokens else (2,) + (1,) * (x.dim() - 1)
    x = x.repeat(*reps)          # sizes >= 2: torch.export specialises a size-1 axis to a constant
    dims = {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC} if tokens else {0: torch.export.Dim.DYNAMIC}
    with torch.no_grad(), warnings.catch_warnings(), _quiet("torch.onnx"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x,), dynamo=True, opset_version=max(opset, DYNAMO_OPSET),
                                    input_names=["input"], dynamic_shapes=(dims,), verbose=False)
    # named here, not through output_names: the exporter would give ``embedding`` to the output
    # and keep it on the aten.embedding node too (a duplicate name ONNX Runtime refuses)
    graph, out = program.model.graph, program.model.graph.outputs[0]
    for node in graph.all_nodes():
        for value in node.outputs:
            if value.name == out_name and value is not out:
                value.name = f"{out_name}_inner"
    out.name = out_name
    return program.model_proto.SerializeToString()


def _disagreement(blob: bytes, model: nn.Module, probe: torch.Tensor) -> str | None:
    """Why the graph in ``blob`` is wrong on ``probe`` (None when it agrees with PyTorch)."""
    import onnxruntime as ort
    opts, quiet = ort.SessionOptions(), ort.RunOptions()
    opts.log_severity_level = quiet.log_severity_level = 4     # a failure is reported below, not logged
    opts.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: probe.numpy()}, quiet)[0]
    except Exception as exc:  # ORT's own exception types (Fail, InvalidArgument, ...)
        return f"ONNX Runtime cannot run it on shape {tuple(probe.shape)} ({_first_line(exc)})"
    with torch.no_grad():
        ref = model(probe.to(_device(model))).float().cpu().numpy()
    if got.shape != ref.shape:
        return f"output shape {got.shape} on input {tuple(probe.shape)}, PyTorch gives {ref.shape}"
    diff = float(np.abs(got - ref).max()) if ref.size else 0.0
    return None if diff <= CHECK_TOL * max(1.0, float(np.abs(ref).max(initial=0.0))) else \
        f"max |ONNX Runtime - PyTorch| = {diff:.3g} on shape {tuple(probe.shape)}"


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()        # the dynamo exporter colours its text
    text = (text.splitlines() or [type(exc).__name__])[0]
    return f"{type(exc).__name__}: {text[:200]}"


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@contextlib.contextmanager
def _quiet(logger: str | None):
    """Only errors from ``logger`` (None: the root logger) meanwhile."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _with_metadata(blob: bytes, props: dict[str, str]) -> bytes:
    import onnx
    proto = onnx.load_from_string(blob)
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, **props})
    return proto.SerializeToString()


def _props(layout: str, exporter: str, metadata: dict | None) -> dict[str, str]:
    props = {"input_layout": layout, "exporter": exporter}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"ONNX metadata keys must be non-empty strings, got {key!r}")
        props[key] = value if isinstance(value, str) else json.dumps(value)
    return props


def export_onnx(model: nn.Module, path: str | os.PathLike, inputs, opset: int = OPSET, *,
                metadata: dict | None = None, exporter: str = "auto", check: bool = True) -> str:
    """Write ``model`` as fp32 ONNX; ``inputs`` is a shape without batch (float images, as
    ``info.input_shape``) or an example tensor (float images, or int64 token ids (N, L)).
    Returns the exporter that wrote the file (``"torchscript"`` or ``"dynamo"``)."""
    if exporter not in EXPORTERS:
        raise ConfigError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    model = model.eval()
    x, layout = _example(inputs)
    x = x.to(_device(model))
    tokens = not x.is_floating_point()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # the user's forward: any exception type
        raise ModelError(f"{type(model).__name__}: its forward fails on the example input {tuple(x.shape)} "
                         f"{str(x.dtype).removeprefix('torch.')} ({_first_line(exc)})") from None
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"{type(model).__name__}: ONNX export needs a forward that returns one tensor, got "
                         f"{type(out).__name__} (wrap the model, e.g. deepshrink.hf.HFModel for transformers)")
    out_name = getattr(model, "output_kind", "logits")
    out_name = out_name if isinstance(out_name, str) and out_name.isidentifier() else "logits"
    probe, failures = _probe(x), []
    for name in ("torchscript", "dynamo") if exporter == "auto" else (exporter,):
        try:
            blob = (_torchscript if name == "torchscript" else _dynamo)(model, x, out_name, opset, tokens)
        except Exception as exc:  # each exporter has its own error types; the other one may succeed
            failures.append(f"{name} exporter: {_first_line(exc)}")
            continue
        why = _disagreement(blob, model, probe) if check else None
        if why is None:
            atomic_write_bytes(path, _with_metadata(blob, _props(layout, name, metadata)))
            return name
        failures.append(f"{name} exporter: {why}")
    raise ModelError(f"{type(model).__name__}: cannot be exported to ONNX ({'; '.join(failures)})")


def export_ort_dynamic_int8(model: nn.Module, path: str | os.PathLike, inputs, per_channel: bool = False, *,
                            metadata: dict | None = None) -> str:
    """ONNX Runtime dynamic int8 (``quantize_dynamic``, QInt8 weights) of ``export_onnx(model)``;
    returns the fp32 exporter used. The file records ``quantization`` in its metadata."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        name = export_onnx(model, fp32, inputs, metadata=metadata)
        try:
            with _quiet(None):    # its advice to pre-process the graph is logged on the root logger
                quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, per_channel=per_channel)
        except Exception as exc:  # onnxruntime.quantization raises plain exceptions of many types
            raise ModelError(f"{type(model).__name__}: ONNX Runtime quantize_dynamic failed ({_first_line(exc)})") \
                from None
        how = f"onnxruntime quantize_dynamic QInt8 weights, {'per channel' if per_channel else 'per tensor'}"
        atomic_write_bytes(path, _with_metadata(int8.read_bytes(), {"quantization": how}))
    return name


def onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, as a dict."""
    import onnx
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}

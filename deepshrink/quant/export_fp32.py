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
``normalize=(mean, std)`` bakes the normalisation in: the graph's first nodes compute
``(x - mean) / std`` per channel, so it takes the images as loaded, in [0, 1], and the file says
so (:func:`input_value_props`). The exporters' own printing (the TorchScript exporter dumps its
whole IR on a failure, from C++) is captured, and a model that calls a custom autograd Function
without an ONNX ``symbolic`` (AdderNet's L1-distance layers) is one ModelError naming the layers.

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
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_write_bytes
from ..errors import ConfigError, ModelError

__all__ = ["OPSET", "DYNAMO_OPSET", "EXPORTERS", "export_onnx", "export_ort_dynamic_int8", "onnx_metadata",
           "input_value_props"]

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


@contextlib.contextmanager
def _captured_output():
    """The process's stdout and stderr (file descriptors 1 and 2) go to a temporary file
    meanwhile: the TorchScript exporter prints its whole IR graph from C++ when it fails (some
    200 lines for LeNet-5), which no Python-level redirection catches. The failure itself is
    still raised, and reported in one line by the caller."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved: list[tuple[int, int]] = []
    with tempfile.TemporaryFile() as sink:
        try:
            for fd in (1, 2):
                try:
                    saved.append((fd, os.dup(fd)))
                except OSError:       # not open: nothing to hide there
                    continue
                os.dup2(sink.fileno(), fd)
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)


class _Normalized(nn.Module):
    """``model`` after ``(x - mean) / std`` per channel (axis 1): the normalisation as the
    exported graph's first nodes (Sub, Div), so the graph takes the images as loaded."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.output_kind = getattr(model, "output_kind", "logits")
        device = _device(model)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32, device=device))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return self.model((x - self.mean.view(shape)) / self.std.view(shape))


def _check_normalize(normalize, x: torch.Tensor) -> tuple[list[float], list[float]]:
    """``(mean, std)`` as float lists, one value per input channel (or one for all)."""
    try:
        mean, std = ([float(v) for v in values] for values in normalize)
    except (TypeError, ValueError):
        raise ConfigError(f"normalize must be (mean, std), two lists of numbers; got {normalize!r}") from None
    if not x.is_floating_point():
        raise ConfigError("normalize: the model takes token ids; only an image model has a normalisation to bake")
    channels = x.shape[1] if x.dim() >= 2 else 1
    if len(mean) != len(std) or len(mean) not in (1, channels):
        raise ConfigError(f"normalize: {len(mean)} means and {len(std)} stds for an input of {channels} channels")
    if not all(np.isfinite(mean)) or not all(np.isfinite(s) and s > 0 for s in std):
        raise ConfigError(f"normalize: mean {mean} and std {std} must be finite, std > 0")
    return mean, std


def input_value_props(mean, std, baked: bool) -> dict[str, str]:
    """The metadata saying which values an image graph expects: ``mean`` and ``std`` (JSON
    lists), ``preprocessing_baked`` (``true``: the graph normalises; ``false``: the caller does),
    ``input_values`` (in words) and ``input_range`` (JSON ``[lo, hi]``). Images are as
    deepshrink loads them: 8-bit pixels divided by 255, in [0, 1]."""
    if mean is None or std is None:
        return {"preprocessing_baked": "false",
                "input_values": "as the model was trained (the model file records no normalisation)"}
    mean, std = [float(v) for v in mean], [float(v) for v in std]
    props = {"mean": json.dumps(mean), "std": json.dumps(std), "preprocessing_baked": json.dumps(bool(baked))}
    if baked:
        props["input_values"] = ("raw images in [0, 1] (8-bit pixels / 255); the graph's first nodes compute "
                                 "(x - mean) / std per channel")
        props["input_range"] = json.dumps([0.0, 1.0])
    else:
        props["input_values"] = ("normalised images: (x - mean) / std per channel, x in [0, 1] (8-bit pixels / "
                                 "255); or export with the normalisation baked in")
        lo = min((0.0 - m) / s for m, s in zip(mean, std))
        hi = max((1.0 - m) / s for m, s in zip(mean, std))
        props["input_range"] = json.dumps([round(lo, 4), round(hi, 4)])
    return props


def _custom_functions(model: nn.Module, x: torch.Tensor) -> list[tuple[str, str, str]]:
    """``(layer, layer class, function)`` for each call of a custom autograd Function without an
    ONNX ``symbolic`` in ``model``'s forward on ``x`` (found by tracing it once); [] when none
    is found or the model cannot be traced."""
    try:
        with torch.no_grad(), warnings.catch_warnings(), _captured_output():
            warnings.simplefilter("ignore")
            graph = torch.jit.trace(model, (x,), check_trace=False, strict=False).inlined_graph
    except Exception:  # a model the tracer refuses: nothing to add to the exporters' own reasons
        return []
    modules = dict(model.named_modules())
    found: list[tuple[str, str, str]] = []
    for node in graph.nodes():
        if node.kind() != "prim::PythonOp":
            continue
        fn = getattr(node.pyobj(), "__self__", None)
        if fn is None or hasattr(fn, "symbolic"):
            continue
        layer = node.scopeName().split("/")[-1].removeprefix("__module.").removeprefix("__module")
        owner = modules.get(layer)
        entry = (layer or "forward", type(owner).__name__ if owner is not None else "", fn.__name__)
        if entry not in found:
            found.append(entry)
    return found


def _custom_function_error(model: nn.Module, found: list[tuple[str, str, str]]) -> ModelError:
    """One line: which layers cannot be exported, and why."""
    by_class: dict[str, list[str]] = {}
    for layer, cls, _ in found:
        by_class.setdefault(cls, []).append(layer)
    parts = []
    for cls, layers in by_class.items():
        shown = ", ".join(layers[:4]) + (f" and {len(layers) - 4} more" if len(layers) > 4 else "")
        parts.append(f"{shown} ({cls})" if cls else shown)
    fns = ", ".join(dict.fromkeys(fn for _, _, fn in found))
    adder = " (AdderNet's L1 distance has no ONNX equivalent)" if any("Adder" in c for c in by_class) else ""
    return ModelError(f"{type(model).__name__}: cannot be exported to ONNX: {'; '.join(parts)} compute through "
                      f"custom autograd functions ({fns}) with no ONNX operator{adder}; run the model in PyTorch, "
                      "or export one without these layers")


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
                metadata: dict | None = None, exporter: str = "auto", check: bool = True,
                normalize: tuple | None = None) -> str:
    """Write ``model`` as fp32 ONNX; ``inputs`` is a shape without batch (float images, as
    ``info.input_shape``) or an example tensor (float images, or int64 token ids (N, L)).
    ``normalize=(mean, std)``: the graph normalises its input itself (its first nodes), and its
    metadata says so. Returns the exporter that wrote the file (``"torchscript"`` or ``"dynamo"``)."""
    if exporter not in EXPORTERS:
        raise ConfigError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    model = user_model = model.eval()
    x, layout = _example(inputs)
    x = x.to(_device(model))
    tokens = not x.is_floating_point()
    if normalize is not None:
        mean, std = _check_normalize(normalize, x)
        model = _Normalized(model, mean, std).eval()
        metadata = {**(metadata or {}), **input_value_props(mean, std, baked=True)}   # what the graph does wins
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # the user's forward: any exception type
        raise ModelError(f"{type(user_model).__name__}: its forward fails on the example input {tuple(x.shape)} "
                         f"{str(x.dtype).removeprefix('torch.')} ({_first_line(exc)})") from None
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"{type(user_model).__name__}: ONNX export needs a forward that returns one tensor, got "
                         f"{type(out).__name__} (wrap the model, e.g. deepshrink.hf.HFModel for transformers)")
    out_name = getattr(model, "output_kind", "logits")
    out_name = out_name if isinstance(out_name, str) and out_name.isidentifier() else "logits"
    probe, failures = _probe(x), []
    for name in ("torchscript", "dynamo") if exporter == "auto" else (exporter,):
        try:
            with _captured_output():
                blob = (_torchscript if name == "torchscript" else _dynamo)(model, x, out_name, opset, tokens)
        except Exception as exc:  # each exporter has its own error types; the other one may succeed
            failures.append(f"{name} exporter: {_first_line(exc)}")
            continue
        why = _disagreement(blob, model, probe) if check else None
        if why is None:
            atomic_write_bytes(path, _with_metadata(blob, _props(layout, name, metadata)))
            return name
        failures.append(f"{name} exporter: {why}")
    found = _custom_functions(user_model, x)
    if found:
        raise _custom_function_error(user_model, found)
    raise ModelError(f"{type(user_model).__name__}: cannot be exported to ONNX ({'; '.join(failures)})")


def export_ort_dynamic_int8(model: nn.Module, path: str | os.PathLike, inputs, per_channel: bool = False, *,
                            metadata: dict | None = None, normalize: tuple | None = None) -> str:
    """ONNX Runtime dynamic int8 (``quantize_dynamic``, QInt8 weights) of ``export_onnx(model)``
    (``metadata`` and ``normalize`` as there); returns the fp32 exporter used. The file records
    ``quantization`` in its metadata, beside the fp32 graph's."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        name = export_onnx(model, fp32, inputs, metadata=metadata, normalize=normalize)
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

"""ONNX export: the float model, and our int8 model as a QDQ graph for ONNX Runtime.

fp32 (any nn.Module, images or token ids) and ONNX Runtime's dynamic int8: ``export_fp32.py``.

int8 QDQ: the graph is written node by node from our fake-quantized GraphModule with
``onnx.helper``, so the file carries exactly our calibrated grids: every quantizer becomes
QuantizeLinear -> DequantizeLinear (uint8 activations), every weight an int8 initializer
behind a per-channel DequantizeLinear, every bias an int32 initializer with scale S_in S_w.
ONNX Runtime recognises DQ -> Conv/Gemm/Add/pool -> Q and fuses it into QLinearConv, QGemm,
QLinearAdd, QLinearGlobalAveragePool and int8 max-pooling (its QDQ transformers). It lives in
``deepshrink.quant`` because it is a view of the quantized graph, not of any float model.
``normalize=(mean, std)`` puts the normalisation before the first quantizer (float Sub, Div), so
the graph takes the images as loaded; the file's ``metadata_props`` record the input layout, the
quantization and the caller's ``metadata``, as the fp32 export's do.
"""

from __future__ import annotations

import os

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from ..atomic import atomic_write_bytes
from ..errors import ModelError
from .export_fp32 import (OPSET, _check_normalize, _example, _props, export_onnx, export_ort_dynamic_int8,
                          input_value_props)
from .fakequant import QuantLayer, SharedFakeQuant
from .graph import fused_relu, node_kind, quantizer_of
from .integer import Grid
from .linear import quantize

if TYPE_CHECKING:  # onnx is imported where a graph is written, so `import deepshrink` stays light
    import onnx

__all__ = ["export_onnx", "export_ort_dynamic_int8", "export_qdq", "OPSET"]


class _Writer:
    def __init__(self, gm: fx.GraphModule):
        self.gm, self.mods = gm, dict(gm.named_modules())
        self.nodes: list = []
        self.inits: list = []
        self.names: dict = {}       # fx node -> ONNX tensor name (float, on a grid where quantized)
        self.count = 0

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, stem: str, array: np.ndarray) -> str:
        from onnx import numpy_helper
        name = self.fresh(stem)
        # np.ascontiguousarray would turn a 0-d scale into shape (1,): ORT fuses Add only with scalars
        self.inits.append(numpy_helper.from_array(np.array(array, order="C", copy=True), name))
        return name

    def op(self, op_type: str, inputs: list[str], stem: str, **attrs) -> str:
        from onnx import helper
        out = self.fresh(stem)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def qdq(self, x: str, g: Grid, stem: str) -> str:
        if g.qmax - g.qmin < 254:  # QuantizeLinear saturates at the 8-bit limits, not at 2^b - 1
            raise ModelError(f"{stem}: ONNX QDQ export needs 8-bit activations "
                             f"(this grid has codes {g.qmin}..{g.qmax})")
        dtype = np.uint8 if g.qmin >= 0 else np.int8
        s = self.const(f"{stem}_scale", np.array(g.scale, np.float32))
        z = self.const(f"{stem}_zp", np.array(g.zero_point, dtype))
        q = self.op("QuantizeLinear", [x, s, z], f"{stem}_q")
        return self.op("DequantizeLinear", [q, s, z], f"{stem}_dq")

    def layer(self, node: fx.Node) -> str:
        ql: QuantLayer = self.mods[node.target]
        layer, wq = ql.layer, ql.weight_fq
        gin = Grid.of(quantizer_of(node.args[0], self.mods))
        per_channel = wq.scale.numel() > 1
        w_codes = quantize(layer.weight.detach(), wq.scale, wq.zero_point, wq.scheme.qmin, wq.scheme.qmax,
                           0 if per_channel else None).numpy().astype(np.int8)
        w_scale = wq.scale.detach().numpy().astype(np.float32)
        w_zp = wq.zero_point.numpy().astype(np.int8)
        if not per_channel:
            w_scale, w_zp = w_scale.reshape(()), w_zp.reshape(())
        axis = {"axis": 0} if per_channel else {}
        stem = node.name
        w = self.op("DequantizeLinear", [self.const(f"{stem}_w", w_codes), self.const(f"{stem}_w_scale", w_scale),
                                         self.const(f"{stem}_w_zp", w_zp)], f"{stem}_w_dq", **axis)
        inputs = [self.names[node.args[0]], w]
        if layer.bias is not None:
            b_scale = (np.float32(gin.scale) * wq.scale.detach().numpy().astype(np.float32)).astype(np.float32)
            b_scale = np.broadcast_to(b_scale, (w_codes.shape[0],)).copy()
            b_codes = np.round(layer.bias.detach().double().numpy() / b_scale).clip(-2 ** 31, 2 ** 31 - 1)
            b = self.op("DequantizeLinear", [self.const(f"{stem}_b", b_codes.astype(np.int32)),
                                             self.const(f"{stem}_b_scale", b_scale),
                                             self.const(f"{stem}_b_zp", np.zeros(len(b_scale), np.int32))],
                        f"{stem}_b_dq", axis=0)
            inputs.append(b)
        if isinstance(layer, nn.Conv2d):
            if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
                raise ModelError(f"{node.target}: only explicit zero padding can be exported")
            ph, pw = layer.padding
            return self.op("Conv", inputs, stem, kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                           pads=[ph, pw, ph, pw], dilations=list(layer.dilation), group=layer.groups)
        return self.op("Gemm", inputs, stem, transB=1)

    def pass_op(self, node: fx.Node, src: str) -> str:
        if node.op == "call_module":
            m = self.mods[node.target]
            if isinstance(m, nn.MaxPool2d):
                k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
                s = m.stride if isinstance(m.stride, tuple) else (m.stride or k[0],) * 2
                p = m.padding if isinstance(m.padding, tuple) else (m.padding,) * 2
                return self.op("MaxPool", [src], node.name, kernel_shape=list(k), strides=list(s),
                               pads=[p[0], p[1], p[0], p[1]])
            if isinstance(m, nn.Flatten):
                if m.start_dim != 1 or m.end_dim != -1:
                    raise ModelError(f"{node.name}: only flatten from dim 1 can be exported")
                return self.op("Flatten", [src], node.name, axis=1)
            return src  # dropout (eval), identity
        if (node.op == "call_function" and node.target is torch.flatten) or \
                (node.op == "call_method" and node.target == "flatten"):
            return self.op("Flatten", [src], node.name, axis=1)
        if node.op == "call_method" and node.target == "contiguous":
            return src
        raise ModelError(f"{node.name}: {node.target} cannot be exported to ONNX by the QDQ writer")

    def avg(self, node: fx.Node, src: str) -> str:
        m = self.mods.get(node.target) if node.op == "call_module" else None
        if isinstance(m, nn.AvgPool2d):
            k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
            return self.op("AveragePool", [src], node.name, kernel_shape=list(k), strides=list(k))
        return self.op("GlobalAveragePool", [src], node.name)

    def _clamps_at_zero(self, relu: fx.Node) -> bool:
        """The quantizer after a fused ReLU has Z = q_min, so Q alone applies the ReLU."""
        after = list(relu.users)
        if len(after) != 1 or node_kind(after[0], self.mods) != "fq":
            return False
        g = Grid.of(self.mods[after[0].target])
        return g.zero_point == g.qmin

    def normalized_input(self, mean: list[float], std: list[float], rank: int) -> str:
        """``(input - mean) / std`` per channel: the graph's first nodes."""
        shape = (1, -1) + (1,) * (rank - 2)
        m = self.const("input_mean", np.array(mean, np.float32).reshape(shape))
        s = self.const("input_std", np.array(std, np.float32).reshape(shape))
        return self.op("Div", [self.op("Sub", ["input", m], "input_sub"), s], "input_normalized")

    def write(self, input_shape, normalize: tuple[list[float], list[float]] | None = None) -> onnx.ModelProto:
        import onnx
        from onnx import TensorProto, helper
        out_name = None
        for node in self.gm.graph.nodes:
            kind = node_kind(node, self.mods)
            if kind == "input":
                self.names[node] = "input" if normalize is None else \
                    self.normalized_input(*normalize, rank=len(input_shape) + 1)
            elif kind == "output":
                out_name = self.names[node.args[0]]
            elif kind == "fq":
                m = self.mods[node.target]
                g = Grid.of(m.source if isinstance(m, SharedFakeQuant) else m)
                self.names[node] = self.qdq(self.names[node.args[0]], g, node.name)
            elif kind == "compute" and node.op == "call_module":
                self.names[node] = self.layer(node)
            elif kind == "compute":
                self.names[node] = self.op("Add", [self.names[a] for a in node.args[:2]], node.name)
            elif kind == "relu":
                src = node.args[0]
                fused = node_kind(src, self.mods) == "compute" and fused_relu(src, self.mods) is node
                if fused and self._clamps_at_zero(node):
                    self.names[node] = self.names[src]   # Q saturates at code 0 = real 0: ReLU implied
                    continue
                out = self.op("Relu", [self.names[src]], node.name)
                self.names[node] = out if fused else self.qdq(out, Grid.of(quantizer_of(src, self.mods)), node.name)
            elif kind in ("pass", "avg"):
                src = self.names[node.args[0]]
                out = self.pass_op(node, src) if kind == "pass" else self.avg(node, src)
                grid = quantizer_of(node.args[0], self.mods)
                # same grid as the input: Q/DQ around it lets ORT run the op on int8 codes
                self.names[node] = out if (out == src or kind == "avg" or grid is None) \
                    else self.qdq(out, Grid.of(grid), node.name)
            else:
                raise ModelError(f"{node.name}: {node.op} {node.target} cannot be exported by the QDQ writer")
        x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *input_shape])
        y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", None])
        self.nodes.append(helper.make_node("Identity", [out_name], ["logits"], name="logits"))
        graph = helper.make_graph(self.nodes, "deepshrink_int8", [x], [y], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="deepshrink")
        onnx.checker.check_model(model)
        return model


def export_qdq(gm: fx.GraphModule, path: str | os.PathLike, input_shape, *, metadata: dict | None = None,
               normalize: tuple | None = None) -> None:
    """Write a frozen fake-quantized GraphModule as an int8 QDQ ONNX model; ``metadata`` goes to its
    ``metadata_props``; ``normalize=(mean, std)`` makes the normalisation its first nodes."""
    if not isinstance(gm, fx.GraphModule):
        raise ModelError("ONNX QDQ export needs an fx-quantized model; a module-swapped model (method 'swap') "
                         "has no QDQ export")
    input_shape = [int(d) for d in input_shape]
    metadata = dict(metadata or {})
    if normalize is not None:
        normalize = _check_normalize(normalize, torch.zeros(1, *input_shape))
        metadata.update(input_value_props(*normalize, baked=True))   # what the graph does wins
    metadata.setdefault("quantization", "deepshrink int8 QDQ: the file's calibrated grids (uint8 activations, "
                                        "int8 weights, int32 biases)")
    model = _Writer(gm).write(input_shape, normalize)
    onnx_props = _props(_example(input_shape)[1], "deepshrink QDQ writer", metadata)
    del model.metadata_props[:]
    for key, value in onnx_props.items():
        model.metadata_props.add(key=key, value=value)
    atomic_write_bytes(path, model.SerializeToString())

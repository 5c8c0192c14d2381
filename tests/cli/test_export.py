"""deepshrink export end to end: a quantized file with its own grids, a float file as fp32 and as
int8, checked through ONNX Runtime."""

from __future__ import annotations

import pytest
import torch

from deepshrink.cli import main
from deepshrink.io import load_model
from deepshrink.quant import OrtSession, load_quantized

pytestmark = pytest.mark.usefixtures("one_thread")


def test_quantize_linear_then_export_int8(trained, capsys):
    root, spec, model = trained
    out, onnx = root / "q8.safetensors", root / "q8.onnx"
    assert main(["quantize", str(model), "--bits", "8", "--per-channel", "--calib", "64", "--out", str(out)]) == 0
    assert "accuracy" in capsys.readouterr().out
    gm, info = load_quantized(out)
    assert info.history[-1]["op"] == "quantize" and info.extra["quant"]["config"]["per_channel"]
    assert main(["evaluate", str(out)]) == 0          # io.load_model opens quantized files too
    assert "test accuracy" in capsys.readouterr().out
    assert main(["export", str(out), "--onnx", str(onnx), "--check", "32"]) == 0
    text = capsys.readouterr().out
    assert "int8 QDQ" in text and "ONNX Runtime accuracy on 32 test images" in text
    ops = OrtSession(onnx).fused_ops()
    assert ops["QGemm"] == 3


def test_export_fp32_and_int8_from_float_file(trained, capsys):
    root, spec, model = trained
    assert main(["export", str(model), "--onnx", str(root / "f.onnx")]) == 0
    assert main(["export", str(model), "--onnx", str(root / "i.onnx"), "--int8", "--calib", "32"]) == 0
    m, _ = load_model(model)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(OrtSession(root / "f.onnx")(x), m(x), atol=1e-4)
    assert "QGemm" in OrtSession(root / "i.onnx").fused_ops()

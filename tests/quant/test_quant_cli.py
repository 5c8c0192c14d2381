"""``deepshrink quantize`` and ``deepshrink export`` end to end on a tiny trained LeNet-300."""

from __future__ import annotations

import pytest
import torch

from deepshrink.cli import main
from deepshrink.io import load_model
from deepshrink.quant import OrtSession, load_quantized

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_cli_model):
    return train_cli_model(tmp_path_factory.mktemp("qcli"), "m.safetensors")


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


def test_quantize_qat_lsq_and_kmeans(trained, capsys):
    root, spec, model = trained
    assert main(["quantize", str(model), "--bits", "4", "--qat-epochs", "0.5", "--lsq", "--calib", "32",
                 "--no-progress", "--out", str(root / "q4.safetensors")]) == 0
    gm, info = load_quantized(root / "q4.safetensors")
    assert info.history[-1]["qat"]["lsq"] is True
    assert main(["quantize", str(model), "--method", "kmeans", "--bits", "8", "--fc-bits", "5",
                 "--out", str(root / "km.safetensors")]) == 0
    km, info = load_model(root / "km.safetensors")
    assert km.fc1.weight_codebook.numel() <= 32
    assert torch.isin(km.fc1.weight, km.fc1.weight_codebook).all()


@pytest.mark.parametrize("argv,match", [
    (["--bits", "9"], "bits"),
    (["--calib", "0"], "--calib"),
    (["--qat-epochs", "-1"], "--qat-epochs"),
])
def test_bad_arguments_are_one_line_errors(trained, capsys, run_error, argv, match):
    root, spec, model = trained
    line = run_error(capsys, ["quantize", model, "--out", root / "bad.safetensors", *argv])
    assert match in line

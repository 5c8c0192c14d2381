"""deepshrink export end to end: a quantized file with its own grids, a float file as fp32 and as
int8 (QDQ, and ONNX Runtime's dynamic int8 of image and text models), checked through ONNX Runtime;
the input description it prints; an AdderNet model refused in one line; an ONNX file given where
a model file goes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepshrink import models
from deepshrink.cli import main
from deepshrink.io import ModelInfo, load_model, save_model
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


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def test_export_prints_the_input_it_expects(trained, capsys, tmp_path):
    root, spec, model = trained
    assert main(["export", str(model), "--onnx", str(tmp_path / "f.onnx")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("fp32 ->")
    assert lines[1].startswith("input: NCHW float32 [batch, 1, 28, 28], normalised") and "mean [" in lines[1]
    assert OrtSession(tmp_path / "f.onnx").metadata["preprocessing_baked"] == "false"


def test_ort_int8_of_an_image_model_with_baked_preprocessing(trained, capsys, tmp_path):
    root, spec, model = trained
    out = tmp_path / "o8.onnx"
    assert main(["export", str(model), "--onnx", str(out), "--ort-int8", "--bake-preprocessing", "--check", "32"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("ONNX Runtime dynamic int8") and "raw images in [0, 1]" in lines[1]
    assert lines[2].startswith("ONNX Runtime accuracy on 32 test images")
    sess = OrtSession(out)
    ops = sess.fused_ops()                              # lenet300's three Linear layers in int8
    assert ops["DynamicQuantizeMatMul"] + ops["MatMulIntegerToFloat"] == 3, ops
    assert sess.metadata["quantization"].startswith("onnxruntime quantize_dynamic")
    assert sess.metadata["preprocessing_baked"] == "true"
    m, info = load_model(model)
    raw = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = m((raw - info.mean[0]) / info.std[0]).numpy()     # oracle: PyTorch on normalised images
    assert _cos(sess.run(raw), want) > 0.99


def test_ort_int8_of_a_text_model(tmp_path, capsys, run_error):
    pytest.importorskip("transformers")
    from hf_files import bert_folder

    folder = bert_folder(tmp_path / "bert")
    out = tmp_path / "b8.onnx"
    assert main(["export", f"hf:{folder}", "--seq-len", "16", "--onnx", str(out), "--ort-int8"]) == 0
    text = capsys.readouterr().out
    assert "token ids in" in text and "seq_len 16, pad id 0" in text
    sess = OrtSession(out)
    assert sess.takes_tokens
    assert sess.metadata["seq_len"] == "16" and sess.metadata["pad_id"] == "0"
    assert sess.metadata["source_model"] == "hf:bert" and sess.metadata["input_kind"] == "token ids"
    ops = sess.fused_ops()                              # 2 layers x (q, k, v, o, ffn1, ffn2) in int8
    assert ops["DynamicQuantizeMatMul"] + ops["MatMulIntegerToFloat"] == 12, ops
    ids = torch.randint(5, 22, (4, 16), generator=torch.Generator().manual_seed(0))
    ids[1:, 12:] = 0                                    # padded rows
    model, _ = load_model(f"hf:{folder}", seq_len=16)
    with torch.no_grad():
        assert _cos(sess.run(ids), model(ids).numpy()) > 0.9
    line = run_error(capsys, ["export", f"hf:{folder}", "--onnx", tmp_path / "x.onnx", "--bake-preprocessing"])
    assert "token ids" in line


def test_int8_and_ort_int8_together_are_refused(trained, capsys, run_error, tmp_path):
    root, spec, model = trained
    assert "choose one" in run_error(capsys, ["export", model, "--onnx", tmp_path / "x.onnx", "--int8", "--ort-int8"])


def test_adder_model_is_one_clear_error_line(tmp_path, capfd):
    kwargs = {"conv1": 2, "conv2": 2, "fc1": 4}
    path, out = tmp_path / "adder.safetensors", tmp_path / "adder.onnx"
    save_model(models.build("lenet5_adder", **kwargs), path,
               ModelInfo(arch="lenet5_adder", kwargs=kwargs, mean=[0.5], std=[0.5]))
    capfd.readouterr()
    assert main(["export", str(path), "--onnx", str(out)]) == 2
    stdout, stderr = capfd.readouterr()                 # file descriptors: the exporter prints from C++
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepshrink: error: LeNet5Adder: cannot be exported to ONNX")
    assert "conv1, conv2 (AdderConv2d)" in lines[0] and "fc1 (AdderLinear)" in lines[0]
    assert "no ONNX operator" in lines[0] and "IndexError" not in lines[0]
    assert not out.exists()


def test_an_onnx_file_where_a_model_file_goes_says_so(trained, capsys, run_error, tmp_path):
    root, spec, model = trained
    assert main(["export", str(model), "--onnx", str(tmp_path / "m.onnx")]) == 0
    (tmp_path / "renamed.safetensors").write_bytes((tmp_path / "m.onnx").read_bytes())
    for name in ("m.onnx", "renamed.safetensors"):
        line = run_error(capsys, ["evaluate", tmp_path / name])
        assert f"{name}: is an ONNX file" in line and "onnxruntime" in line and "header length" not in line

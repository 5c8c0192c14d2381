"""ONNX export: fp32 against PyTorch; our int8 QDQ graph, as ONNX Runtime fuses and runs it,
against the integer engine (output codes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepshrink.data import Split
from deepshrink.errors import ConfigError, ModelError
from deepshrink.quant import IntegerModel, OrtSession, QuantConfig, export_onnx, export_qdq, quantize_ptq

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fp32_export_matches_pytorch(tiny_resnet, images, tmp_path):
    export_onnx(tiny_resnet, tmp_path / "m.onnx", [1, 8, 8])
    sess = OrtSession(tmp_path / "m.onnx", batch_size=5)       # dynamic batch axis, ragged last batch
    x = images[1]
    with torch.no_grad():
        assert np.allclose(sess.run(x), tiny_resnet(x).numpy(), atol=1e-5)


@pytest.mark.parametrize("model_fixture,fused", [("tiny_convnet", {"QLinearConv", "QGemm"}),
                                                 ("tiny_resnet", {"QLinearConv", "QLinearAdd",
                                                                  "QLinearGlobalAveragePool", "QGemm"})])
def test_int8_qdq_fused_by_ort_and_agrees_with_engine(model_fixture, fused, images, tmp_path, request):
    model = request.getfixturevalue(model_fixture)
    calib, x = images
    gm = quantize_ptq(model, calib, QuantConfig())
    export_qdq(gm, tmp_path / "q.onnx", [1, 8, 8])
    sess = OrtSession(tmp_path / "q.onnx")
    ops = sess.fused_ops()
    assert fused <= set(ops), ops
    assert not {"Conv", "Gemm", "MatMul", "Add"} & set(ops), ops      # no float compute left
    q, g = IntegerModel(gm).run_codes(x)
    ort_codes = np.round(sess.run(x) / g.scale) + g.zero_point
    # ORT requantizes with a float32 multiplier (ties to even) and adds through its own
    # QLinearAdd arithmetic: codes may differ from ours by one step where a value sits on a
    # rounding boundary; never by more.
    assert np.abs(q.numpy() - ort_codes).max() <= 1


def test_session_evaluate_and_batching(tiny_convnet, images, tmp_path):
    export_onnx(tiny_convnet, tmp_path / "m.onnx", [1, 8, 8])
    x = images[1]
    with torch.no_grad():
        y = tiny_convnet(x).argmax(1)
    sess = OrtSession(tmp_path / "m.onnx", batch_size=3)
    assert sess.evaluate(Split(x, y)) == 1.0
    assert sess(x).shape == (len(x), 5)


def test_low_bit_activations_are_refused_but_low_bit_weights_export(tiny_convnet, images, tmp_path):
    calib, x = images
    with pytest.raises(ModelError, match="8-bit activations"):
        export_qdq(quantize_ptq(tiny_convnet, calib, QuantConfig(act_bits=6)), tmp_path / "a.onnx", [1, 8, 8])
    gm = quantize_ptq(tiny_convnet, calib, QuantConfig(weight_bits=4))
    export_qdq(gm, tmp_path / "w4.onnx", [1, 8, 8])
    q, g = IntegerModel(gm).run_codes(x)
    ort_codes = np.round(OrtSession(tmp_path / "w4.onnx").run(x) / g.scale) + g.zero_point
    assert np.abs(q.numpy() - ort_codes).max() <= 1


def test_bad_onnx_file_is_a_model_error(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError):
        OrtSession(tmp_path / "bad.onnx")


def test_qdq_records_metadata_and_bakes_the_normalisation(tiny_convnet, images, tmp_path):
    onnx = pytest.importorskip("onnx")
    calib, x = images
    gm = quantize_ptq(tiny_convnet, calib, QuantConfig())
    export_qdq(gm, tmp_path / "q.onnx", [1, 8, 8], metadata={"source_model": "tiny"})
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "q.onnx")).metadata_props}
    assert props["source_model"] == "tiny" and props["input_layout"] == "NCHW float32"
    assert props["exporter"] == "deepshrink QDQ writer" and props["quantization"].startswith("deepshrink int8 QDQ")
    mean, std = [0.25], [2.0]
    export_qdq(gm, tmp_path / "baked.onnx", [1, 8, 8], normalize=(mean, std))
    model = onnx.load(str(tmp_path / "baked.onnx"))
    assert [n.op_type for n in model.graph.node[:2]] == ["Sub", "Div"]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["preprocessing_baked"] == "true" and props["mean"] == "[0.25]" and props["std"] == "[2.0]"
    raw = x * std[0] + mean[0]                          # the images before normalisation
    q, g = IntegerModel(gm).run_codes(x)                # oracle: the integer engine on normalised images
    ort_codes = np.round(OrtSession(tmp_path / "baked.onnx").run(raw) / g.scale) + g.zero_point
    assert np.abs(q.numpy() - ort_codes).max() <= 1   # one step at a rounding boundary, as unbaked
    with pytest.raises(ConfigError, match="2 means"):
        export_qdq(gm, tmp_path / "bad.onnx", [1, 8, 8], normalize=([0.1, 0.2], [1.0, 1.0]))

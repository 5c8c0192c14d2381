"""The trained LeNet-5 baseline on Fashion-MNIST: int8 PTQ, engine and ONNX Runtime (slow)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
CKPT = ROOT / "checkpoints" / "baselines" / "lenet5.safetensors"
DATA = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not (CKPT.is_file() and DATA.is_file()), reason="needs the baseline and the data")]


def test_lenet5_int8_ptq_engine_and_ort(tmp_path):
    from deepshrink import data
    from deepshrink.data import Split
    from deepshrink.io import load_model
    from deepshrink.quant import IntegerModel, OrtSession, QuantConfig, export_qdq, quantize_ptq
    from deepshrink.train import evaluate
    model, info = load_model(CKPT)
    ds = data.load("fashion-mnist", mean=info.mean, std=info.std)
    gm = quantize_ptq(model, ds.train.x[:512], QuantConfig())
    base, quant = evaluate(model, ds.test), evaluate(gm, ds.test)
    assert base - quant <= 0.003
    export_qdq(gm, tmp_path / "q.onnx", info.input_shape)
    sess = OrtSession(tmp_path / "q.onnx")
    assert abs(sess.evaluate(ds.test) - quant) <= 0.001
    x = ds.test.x[:500]
    q, g = IntegerModel(gm).run_codes(x)
    with torch.no_grad():
        f64 = torch.round(copy.deepcopy(gm).double()(x.double()) / g.scale) + g.zero_point
    assert (q - f64).abs().max() <= 1
    assert np.abs(q.numpy() - (np.round(sess.run(x) / g.scale) + g.zero_point)).max() <= 1
    assert (q.argmax(1) == ds.test.y[:500]).float().mean() >= 0.88
    assert evaluate(gm, Split(x, ds.test.y[:500])) >= 0.88

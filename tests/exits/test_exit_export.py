"""Each stage as ONNX: chained in ONNX Runtime (each stage handing only the undecided rows on, as a
deployment would), the stages give every sample the exit and the logits the PyTorch model gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepshrink.exits import EarlyExitModel, attach_exits, export_stages
from deepshrink.exits.taps import layer_outputs
from deepshrink.exits.policies import exit_score

pytestmark = pytest.mark.usefixtures("one_thread")


def test_chained_onnx_stages_reproduce_adaptive_inference(fresh, tiny_data, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    x = tiny_data.test.x[:32]
    plan = attach_exits(fresh, x[:2], ["layer1", "layer2"], 4, depth=1)
    plan.policy = "entropy"
    with torch.no_grad():
        outs, _ = layer_outputs(fresh, x, plan.layers)
        scores = [exit_score("entropy", h(o)) for h, o in zip(fresh.exit_heads, outs)]
    plan.thresholds = [float(s.sort().values[10:12].mean()) for s in scores]
    ee = EarlyExitModel(fresh, plan).eval()
    paths = export_stages(ee, tmp_path / "stages", [1, 8, 8])
    assert [p.name for p in paths] == ["stage0.onnx", "stage1.onnx", "stage2.onnx"]
    props = {p.key: p.value for p in onnx.load(str(paths[0])).metadata_props}
    assert props["policy"] == "entropy" and float(props["threshold"]) == plan.thresholds[0]
    with torch.no_grad():
        want, want_exits = ee(x), ee.last_exits
    got = np.zeros((len(x), 4), dtype=np.float32)
    exits = np.full(len(x), 2)
    alive, feed = np.arange(len(x)), x.numpy()
    for i, path in enumerate(paths):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        res = sess.run(None, {"input": feed})
        if i == len(paths) - 1:
            got[alive] = res[0]
            break
        feature, logits, score = res
        leave = score >= plan.thresholds[i]
        got[alive[leave]], exits[alive[leave]] = logits[leave], i
        alive, feed = alive[~leave], feature[~leave]
    assert exits.tolist() == want_exits.tolist() and set(exits.tolist()) == {0, 1, 2}
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)

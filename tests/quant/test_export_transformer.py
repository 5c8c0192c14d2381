"""fp32 ONNX of a user's own models: a tiny random BERT behind a token-id wrapper and a CNN
defined here, run in ONNX Runtime against PyTorch (the oracle); ONNX Runtime's dynamic int8
of the same graphs; the file's metadata; the dynamo fallback (2-12 s per export: BERT's is slow)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from deepshrink.errors import ModelError
from deepshrink.quant import OrtSession, export_onnx, export_ort_dynamic_int8
from deepshrink.quant.export_fp32 import onnx_metadata

pytestmark = pytest.mark.usefixtures("one_thread")
onnx = pytest.importorskip("onnx")


class MeanPooledBert(nn.Module):
    """Token ids (N, L) int64 -> the mean of ``last_hidden_state`` over the non-pad tokens (N, H)."""

    output_kind = "embedding"

    def __init__(self, bert: nn.Module, pad_id: int = 0):
        super().__init__()
        self.bert, self.pad_id = bert, pad_id

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != self.pad_id).long()                                    # (N, L)
        hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state  # (N, L, H)
        w = mask.unsqueeze(-1).to(hidden.dtype)                                # (N, L, 1)
        return (hidden * w).sum(1) / w.sum(1).clamp_min(1e-9)


class UserCNN(nn.Module):
    """A user's CNN, not from the zoo: (N, 3, 12, 12) -> (N, 4)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


class BakedBatch(nn.Module):
    """Reads the batch size as a Python int: tracing bakes it in, a wrong graph for other sizes."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 3)

    def forward(self, x):                          # (N, 3, 2, 2)
        return self.fc(x.reshape(int(x.shape[0]), -1))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def _ids(n: int, length: int, seed: int) -> torch.Tensor:
    ids = torch.randint(1, 100, (n, length), generator=torch.Generator().manual_seed(seed))
    ids[1:, length - 3:] = 0                       # padded rows: the mask must come from the ids
    return ids


@pytest.fixture
def bert_wrapper(tiny_bert):
    return MeanPooledBert(tiny_bert).eval()


@pytest.fixture
def user_cnn():
    torch.manual_seed(0)
    return UserCNN().eval()


def test_bert_exports_and_agrees_with_pytorch(bert_wrapper, token_ids, tmp_path):
    assert export_onnx(bert_wrapper, tmp_path / "b.onnx", token_ids) == "torchscript"
    sess = OrtSession(tmp_path / "b.onnx", batch_size=3)
    assert sess.takes_tokens and sess.session.get_inputs()[0].type == "tensor(int64)"
    assert [o.name for o in sess.session.get_outputs()] == ["embedding"]
    for n in (1, 4):                                # dynamic batch and sequence axes
        for length in (16, 32):
            x = _ids(n, length, seed=n * length)
            with torch.no_grad():
                ref = bert_wrapper(x).numpy()
            assert np.abs(sess.run(x) - ref).max() <= 1e-4, (n, length)
    assert sess.metadata["input_layout"] == "token ids int64 (N, L)"
    with pytest.raises(ModelError, match="token ids"):
        sess.run(np.full((1, 4), 0.5, np.float32))


def test_ort_dynamic_int8_runs_close_to_fp32(bert_wrapper, user_cnn, tmp_path):
    x = _ids(4, 24, seed=1)
    export_ort_dynamic_int8(bert_wrapper, tmp_path / "b8.onnx", x[:1], per_channel=True)
    sess = OrtSession(tmp_path / "b8.onnx")
    ops = sess.fused_ops()                          # every Linear (2 layers x q, k, v, o, ffn1, ffn2) in int8
    assert ops["DynamicQuantizeMatMul"] + ops["MatMulIntegerToFloat"] == 12, ops
    with torch.no_grad():
        assert _cos(sess.run(x), bert_wrapper(x).numpy()) > 0.9
    assert sess.metadata["quantization"].startswith("onnxruntime quantize_dynamic QInt8")
    assert sess.metadata["input_layout"] == "token ids int64 (N, L)"
    images = torch.randn(5, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    export_ort_dynamic_int8(user_cnn, tmp_path / "c8.onnx", [3, 12, 12])
    sess = OrtSession(tmp_path / "c8.onnx")
    ops = sess.fused_ops()
    assert ops["ConvInteger"] == 2 and ops["DynamicQuantizeMatMul"] == 1, ops
    with torch.no_grad():
        assert _cos(sess.run(images), user_cnn(images).numpy()) > 0.9


def test_user_cnn_keeps_the_legacy_graph_and_records_metadata(user_cnn, tmp_path):
    meta = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.25]}
    assert export_onnx(user_cnn, tmp_path / "c.onnx", [3, 12, 12], metadata=meta) == "torchscript"
    proto = onnx.load(str(tmp_path / "c.onnx"))
    assert onnx_metadata(tmp_path / "c.onnx") == {"input_layout": "NCHW float32", "exporter": "torchscript",
                                                   "mean": "[0.5, 0.4, 0.3]", "std": "[0.2, 0.2, 0.25]"}
    buf = io.BytesIO()                              # the TorchScript exporter's own bytes, metadata aside
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(user_cnn, (torch.zeros(1, 3, 12, 12),), buf, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    del proto.metadata_props[:]
    assert proto.SerializeToString() == buf.getvalue()
    images = torch.randn(7, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert np.abs(OrtSession(tmp_path / "c.onnx").run(images) - user_cnn(images).numpy()).max() <= 1e-5


def test_a_model_without_one_tensor_output_is_refused(tiny_bert, token_ids, tmp_path):
    with pytest.raises(ModelError, match="returns one tensor"):
        export_onnx(tiny_bert, tmp_path / "x.onnx", token_ids)
    with pytest.raises(ModelError, match=r"forward fails on the example input \(1, 16\) float32"):
        export_onnx(MeanPooledBert(tiny_bert), tmp_path / "x.onnx", [16])     # a shape means float images
    assert not (tmp_path / "x.onnx").exists()


def test_baked_batch_is_caught_and_exported_by_dynamo(tmp_path):
    torch.manual_seed(0)
    model = BakedBatch().eval()
    assert export_onnx(model, tmp_path / "d.onnx", [3, 2, 2]) == "dynamo"
    x = torch.randn(6, 3, 2, 2)
    sess = OrtSession(tmp_path / "d.onnx")
    assert sess.metadata["exporter"] == "dynamo"
    with torch.no_grad():
        assert np.abs(sess.run(x) - model(x).numpy()).max() <= 1e-5
    with pytest.raises(ModelError, match="torchscript exporter: ONNX Runtime cannot run it on shape"):
        export_onnx(model, tmp_path / "e.onnx", [3, 2, 2], exporter="torchscript")


@pytest.mark.slow
def test_bert_through_dynamo_agrees_with_pytorch(bert_wrapper, token_ids, tmp_path):
    assert export_onnx(bert_wrapper, tmp_path / "b.onnx", token_ids[:1], exporter="dynamo") == "dynamo"
    sess = OrtSession(tmp_path / "b.onnx")
    for n, length in ((1, 16), (4, 32)):
        x = _ids(n, length, seed=7)
        with torch.no_grad():
            assert np.abs(sess.run(x) - bert_wrapper(x).numpy()).max() <= 1e-4

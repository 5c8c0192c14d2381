"""deepshrink.fidelity against brute-force oracles (a Python loop over rows, PyTorch's own
``F.kl_div``), on a CNN defined here, and ``evaluate_file(..., reference=...)`` on files of it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepshrink.errors import ConfigError, ModelError
from deepshrink.fidelity import fidelity, output_kind
from deepshrink.io import ModelInfo, save_model
from deepshrink.pipelines.evaluate import evaluate_file

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cnn(classes: int = 10) -> nn.Module:
    """A user's own CNN (not the zoo): 1x8x8 images -> ``classes`` logits."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, classes))


def _perturbed(model: nn.Module, scale: float, seed: int = 1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    other = tiny_cnn()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return other


def test_identical_models_agree_exactly():
    torch.manual_seed(0)
    model, x = tiny_cnn().eval(), torch.randn(50, 1, 8, 8)
    fid = fidelity(model, model, x, batch_size=16)
    assert (fid.kind, fid.samples, fid.rows) == ("logits", 50, 50)
    assert fid.cosine_mean == 1.0 and fid.cosine_min == 1.0 and fid.agreement == 1.0 and fid.kl_mean == 0.0


def test_metrics_match_brute_force_oracles():
    torch.manual_seed(0)
    model, x = tiny_cnn().eval(), torch.randn(37, 1, 8, 8)
    ref = _perturbed(model, 0.2).eval()
    fid = fidelity(model, ref, x, batch_size=8)
    with torch.no_grad():
        o, r = model(x).double(), ref(x).double()
    cos = [float(o[i] @ r[i] / (o[i].norm() * r[i].norm())) for i in range(len(x))]
    assert fid.cosine_mean == pytest.approx(sum(cos) / len(cos), abs=1e-12)
    assert fid.cosine_min == pytest.approx(min(cos), abs=1e-12)
    assert fid.agreement == sum(int(o[i].argmax() == r[i].argmax()) for i in range(len(x))) / len(x)
    kl = F.kl_div(F.log_softmax(o, 1), F.log_softmax(r, 1), log_target=True, reduction="batchmean").item()
    assert fid.kl_mean == pytest.approx(kl, rel=1e-9) and fid.kl_mean > 0 and fid.cosine_mean < 1


def test_embeddings_report_cosine_only_and_token_outputs_compare_per_row():
    class Encoder(nn.Module):
        output_kind = "embedding"

        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 6)

        def forward(self, ids):                     # (N, L) -> (N, L, 6): one row per token
            return self.emb(ids)

    torch.manual_seed(0)
    a, b, ids = Encoder(), Encoder(), torch.randint(0, 20, (5, 3))
    assert output_kind(a) == "embedding" and output_kind(tiny_cnn()) == "logits"
    fid = fidelity(a, b, ids)
    assert fid.kind == "embedding" and fid.rows == 15 and fid.agreement is None and fid.kl_mean is None
    assert -1 <= fid.cosine_min <= fid.cosine_mean < 1


def test_errors():
    model = tiny_cnn()
    with pytest.raises(ConfigError, match="at least one"):
        fidelity(model, model, torch.zeros(0, 1, 8, 8))
    with pytest.raises(ConfigError, match="output kind"):
        fidelity(model, model, torch.zeros(2, 1, 8, 8), kind="probabilities")
    with pytest.raises(ModelError, match="reference"):
        fidelity(model, tiny_cnn(classes=3), torch.zeros(2, 1, 8, 8))


def test_evaluate_file_reports_accuracy_and_fidelity_of_a_users_cnn(tmp_path, write_npz):
    spec = write_npz(tmp_path / "d.npz", n_train=64, n_test=32, hw=8)
    torch.manual_seed(0)
    model = tiny_cnn()
    info = ModelInfo(arch="test_fidelity:tiny_cnn", input_shape=[1, 8, 8], mean=[0.3], std=[0.3], data=spec)
    save_model(model, tmp_path / "orig.safetensors", info)
    save_model(_perturbed(model, 0.05), tmp_path / "noisy.safetensors", info)
    same = evaluate_file(tmp_path / "orig.safetensors", reference=tmp_path / "orig.safetensors", trust_code=True)
    assert same.labelled and 0 <= same.accuracy <= 1 and same.images == 32
    assert same.fidelity.cosine_mean == 1.0 and same.fidelity.agreement == 1.0 and same.fidelity.kl_mean == 0.0
    noisy = evaluate_file(tmp_path / "noisy.safetensors", reference=tmp_path / "orig.safetensors", trust_code=True)
    assert noisy.fidelity.cosine_mean < 1 and noisy.fidelity.kl_mean > 0 and not math.isnan(noisy.accuracy)
    assert evaluate_file(tmp_path / "orig.safetensors", trust_code=True).fidelity is None

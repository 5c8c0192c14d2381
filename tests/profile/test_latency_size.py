"""Latency measurement (shape of the result only, never a timing value) and storage sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshrink import models
from deepshrink.errors import ConfigError
from deepshrink.profile import compare_latency, measure_latency, model_size
from deepshrink.profile.size import csr_bytes, disk_bytes


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))


# ---------------------------------------------------------------- latency

@pytest.mark.parametrize("repeats", [1, 2, 5, 12])
def test_measure_latency_stats(repeats):
    before = torch.get_num_threads()
    s = measure_latency(_tiny(), torch.zeros(2, 16), warmup=1, repeats=repeats, threads=1)
    assert torch.get_num_threads() == before     # restored after the call
    assert s.repeats == repeats and s.threads == 1
    assert s.median_ms > 0 and s.min_ms > 0 and s.mean_ms > 0
    assert s.min_ms <= s.p10_ms <= s.median_ms <= s.p90_ms


def test_measure_latency_tuple_input_and_default_threads():
    class Two(nn.Module):
        def forward(self, a, b):
            return a @ b

    s = measure_latency(Two(), (torch.ones(4, 4), torch.ones(4, 4)), warmup=0, repeats=3)
    assert s.repeats == 3 and s.threads == torch.get_num_threads()
    assert s.p10_ms <= s.median_ms <= s.p90_ms


def test_compare_latency_fields():
    before = torch.get_num_threads()
    a, b = _tiny(), _tiny()
    c = compare_latency(a, b, torch.zeros(2, 16), warmup=1, repeats=6, threads=1)
    assert torch.get_num_threads() == before
    assert c.a.repeats == c.b.repeats == 6
    assert c.ratio_median > 0 and c.ratio_p10 > 0 and c.ratio_p90 > 0
    assert c.ratio_p10 <= c.ratio_median <= c.ratio_p90


def test_compare_latency_input_b():
    c = compare_latency(_tiny(), nn.Linear(8, 4), torch.zeros(1, 16), warmup=0, repeats=3,
                        input_b=torch.zeros(1, 8))
    assert c.ratio_median > 0


def test_compare_latency_frozen_torchscript_and_eager_mode_restored():
    # a frozen TorchScript module has no training flag; the eager one goes back to train mode
    eager = _tiny().train()
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(_tiny().eval(), torch.zeros(1, 16)))
    assert not hasattr(frozen, "training")
    c = compare_latency(eager, frozen, torch.zeros(1, 16), warmup=1, repeats=3, threads=1)
    assert c.a.repeats == c.b.repeats == 3 and c.ratio_median > 0
    assert eager.training


@pytest.mark.parametrize("kw", [dict(repeats=0), dict(repeats=-3), dict(warmup=-1), dict(threads=0)])
def test_latency_bad_arguments(kw):
    before = torch.get_num_threads()
    with pytest.raises(ConfigError):
        measure_latency(_tiny(), torch.zeros(1, 16), **{"warmup": 0, "repeats": 2, **kw})
    with pytest.raises(ConfigError):
        compare_latency(_tiny(), _tiny(), torch.zeros(1, 16), **{"warmup": 0, "repeats": 2, **kw})
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------- size

def test_lenet5_sizes():
    torch.manual_seed(0)
    model = models.build("lenet5")
    s = model_size(model, bits=8)
    assert s.params == s.nonzero_params == 431_080
    assert s.dense_fp32_bytes == 4 * 431_080
    # weights (conv and fc, 430,500 values) at 8 bits, the 580 biases fp32
    assert s.bits == 8
    assert s.dense_bits_bytes == 430_500 + 580 * 4
    assert s.compressed_bytes is None
    # dense CSR costs more than dense fp32: indices and row pointers on top of every value
    assert s.sparse_csr_bytes > s.dense_fp32_bytes


def test_csr_of_sparse_matrix_is_smaller():
    torch.manual_seed(0)
    fc = nn.Linear(100, 100)
    n_zero = 9_000                                # 90% of the weights
    with torch.no_grad():
        fc.weight.view(-1)[torch.randperm(10_000)[:n_zero]] = 0.0
    # 1,000 fp32 values + 1,000 8-bit column indices (cols 100 < 256) + 101 int32 row pointers
    assert csr_bytes(fc.weight) == 1_000 * 4 + 1_000 + 101 * 4
    assert csr_bytes(fc.weight) < fc.weight.numel() * 4
    s = model_size(fc)
    assert s.nonzero_params == 1_000 + int(torch.count_nonzero(fc.bias))
    assert s.sparse_csr_bytes == csr_bytes(fc.weight) + 100 * 4
    assert s.sparse_csr_bytes < s.dense_fp32_bytes == 4 * 10_100


def test_csr_index_width_and_bits():
    w = torch.ones(2, 300)                        # cols 300 need 16-bit indices
    assert csr_bytes(w) == 600 * 4 + 600 * 2 + 3 * 4
    s = model_size(nn.Linear(300, 2, bias=False), bits=4)
    assert s.dense_bits_bytes == 600 * 4 // 8


def test_compressed_path(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"x" * 1234)
    assert model_size(_tiny(), compressed_path=f).compressed_bytes == 1234


def test_disk_bytes_of_a_file_a_folder_and_nothing(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "m" / "sub").mkdir()
    (tmp_path / "m" / "sub" / "tokenizer.json").write_bytes(b"y" * 24)
    (tmp_path / "m" / "link").symlink_to(tmp_path / "m" / "model.safetensors")     # not counted twice
    assert disk_bytes(tmp_path / "m" / "model.safetensors") == 1000
    assert disk_bytes(tmp_path / "m") == 1024
    assert disk_bytes(tmp_path / "missing") is None

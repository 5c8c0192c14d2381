"""Integer codes for module swap: int8 GEMM against a brute-force integer loop, weight codes against
PyTorch's own per-channel fake quantization, int4 packing (golden bytes, round trip)."""

from __future__ import annotations

import pytest
import torch

from deepshrink.errors import ConfigError
from deepshrink.quant.intmath import int_matmul, int_mm_native, pack_int4, row_codes, unpack_int4, weight_codes

pytestmark = pytest.mark.usefixtures("one_thread")


def brute_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Python integers, one product at a time."""
    m, k = a.shape
    n = b.shape[1]
    al, bl = a.tolist(), b.tolist()
    return torch.tensor([[sum(al[i][t] * bl[t][j] for t in range(k)) for j in range(n)] for i in range(m)],
                        dtype=torch.int32)


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 5, 4), (17, 33, 9), (2, 64, 1)])
def test_int_matmul_equals_an_integer_loop(m, k, n):
    g = torch.Generator().manual_seed(m * 100 + k)
    a = torch.randint(-127, 128, (m, k), generator=g, dtype=torch.int8)
    b = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    out = int_matmul(a, b.t())                                   # a transposed (non-contiguous) operand
    assert out.dtype == torch.int32 and torch.equal(out, brute_matmul(a, b.t()))


def test_int_matmul_extremes_and_fallback(monkeypatch):
    a = torch.full((4, 1000), -127, dtype=torch.int8)            # every product at its maximum
    b = torch.full((1000, 3), -127, dtype=torch.int8)
    assert int(int_matmul(a, b)[0, 0]) == 1000 * 127 * 127
    assert isinstance(int_mm_native(), bool)
    import deepshrink.quant.intmath as im
    monkeypatch.setattr(im, "int_mm_native", lambda: False)      # the exact float64 emulation
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (5, 40), generator=g, dtype=torch.int8)
    b = torch.randint(-127, 128, (40, 6), generator=g, dtype=torch.int8)
    assert torch.equal(im.int_matmul(a, b), brute_matmul(a, b))


@pytest.mark.parametrize("bits", [8, 6, 4, 3])
def test_weight_codes_match_pytorch_fake_quantize(bits):
    w = torch.randn(6, 20, generator=torch.Generator().manual_seed(bits))
    w[2] = 0.0                                                   # an all-zero channel
    codes, scale = weight_codes(w, bits)
    qmax = 2 ** (bits - 1) - 1
    assert codes.dtype == torch.int8 and int(codes.abs().max()) <= qmax
    assert torch.allclose(scale[[0, 1, 3]], w[[0, 1, 3]].abs().amax(1) / qmax)
    ref = torch.fake_quantize_per_channel_affine(w, scale, torch.zeros(6, dtype=torch.int32), 0, -qmax, qmax)
    deq = codes.float() * scale[:, None]
    assert torch.allclose(deq, ref, rtol=0, atol=1e-6) and (deq[2] == 0).all()
    # per tensor: one scale, repeated per row
    codes_t, scale_t = weight_codes(w, bits, per_channel=False)
    assert torch.equal(scale_t, torch.full((6,), float(w.abs().max() / qmax)))
    with pytest.raises(ConfigError):
        weight_codes(w, 9)


def test_int4_packing_golden_bytes_and_round_trip():
    codes = torch.tensor([[1, -1, 7, -7, 0], [-8, 3, 0, 0, 5]], dtype=torch.int8)
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (2, 3)
    assert packed.tolist() == [[0xF1, 0x97, 0x00], [0x38, 0x00, 0x05]]
    assert torch.equal(unpack_int4(packed, 5), codes)
    g = torch.Generator().manual_seed(1)
    for k in (1, 2, 31, 64):
        c = torch.randint(-8, 8, (7, k), generator=g, dtype=torch.int8)
        assert torch.equal(unpack_int4(pack_int4(c), k), c)
        assert torch.equal(unpack_int4(pack_int4(c)[[3, 0]], k), c[[3, 0]])   # rows unpack alone


def test_every_byte_unpacks_to_its_two_nibbles():
    """Oracle: Python's two's complement of each nibble, low nibble first."""
    def nib(n):
        return n - 16 if n >= 8 else n
    data = torch.arange(256, dtype=torch.uint8).reshape(2, 128)
    want = [[v for b in row for v in (nib(b & 0xF), nib(b >> 4))] for row in data.tolist()]
    got = unpack_int4(data, 256)
    assert got.dtype == torch.int8 and got.tolist() == want
    assert unpack_int4(data, 255).tolist() == [row[:255] for row in want]


def test_row_codes_formula():
    x = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [3.0, 1.5, -0.75]])
    codes, scale = row_codes(x, 8)
    assert torch.allclose(scale[[0, 2]], torch.tensor([1 / 127, 3 / 127]))
    assert codes[0].tolist() == [64, -127, 32] and codes[1].tolist() == [0, 0, 0]   # round half to even
    assert codes[2].tolist() == [127, 64, -32]

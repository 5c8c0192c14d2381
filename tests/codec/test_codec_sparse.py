"""Sparse layouts against a per-element loop oracle; property round trips of quantized tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from deepshrink.codec.container import pack_file
from deepshrink.codec.quantized import codes_of, encode_quantized
from deepshrink.codec.sparse import (choose_layout, csr_decode, csr_layout, plain_relative_bits, relative_decode,
                                     relative_layout)
from deepshrink.errors import FormatError, ModelError
from deepshrink.io import ModelInfo

from codec_helpers import decode_blob


def relative_oracle(dense_codes: list[int], bits: int) -> tuple[list[int], list[int]]:
    """The paper's scheme, one position at a time: (gaps, codes) with fillers of code 0."""
    top = (1 << bits) - 1
    gaps, codes, run = [], [], 0
    for c in dense_codes:
        if c == 0:
            if run == top:                    # gap full: a filler zero takes this position
                gaps.append(top)
                codes.append(0)
                run = 0
            else:
                run += 1
            continue
        gaps.append(run)
        codes.append(c)
        run = 0
    while codes and codes[-1] == 0:           # zeros after the last nonzero are implicit
        gaps.pop()
        codes.pop()
    return gaps, codes


@pytest.mark.parametrize("bits", [0, 1, 2, 3, 5, 8])
def test_relative_layout_matches_the_loop(bits):
    rng = np.random.default_rng(bits)
    dense = np.where(rng.random(500) < 0.15, rng.integers(1, 9, 500), 0)
    dense[200:330] = 0                                     # a long run of zeros
    pos = np.flatnonzero(dense)
    lay = relative_layout(pos, dense[pos] - 1, 8, bits)
    gaps, codes = relative_oracle(dense.tolist(), bits)
    np.testing.assert_array_equal(lay.streams["codes"][0], codes)
    if bits:
        np.testing.assert_array_equal(lay.streams["index"][0], gaps)
    assert lay.entries == len(codes)
    back_pos, back_codes = relative_decode(np.asarray(gaps), np.asarray(codes), dense.size, "t")
    np.testing.assert_array_equal(back_pos, pos)
    np.testing.assert_array_equal(back_codes, dense[pos] - 1)


def test_paper_figure_example():
    # Han et al. Fig. 2 style: 3-bit gaps, a run of 8+ zeros needs one filler
    dense = [0, 1] + [0] * 3 + [2] + [0] * 9 + [3]
    gaps, codes = relative_oracle(dense, 3)
    assert gaps == [1, 3, 7, 1] and codes == [1, 2, 0, 3]
    # fixed width, 4-bit codes: b=3 -> 4 entries x 7 bits, b=4 -> 3 x 8 (best), b=5 -> 3 x 9
    assert plain_relative_bits(np.flatnonzero(dense), 4) == (4, 24)


def test_plain_bits_is_the_cheapest_fixed_width():
    rng = np.random.default_rng(3)
    pos = np.sort(rng.choice(5000, size=300, replace=False))
    b, bits = plain_relative_bits(pos, 5)
    costs = {w: relative_layout(pos, np.zeros(pos.size, dtype=np.int64), 32, w).entries * (5 + w)
             for w in range(1, 13)}
    assert bits == min(costs.values()) and costs[b] == bits


def test_csr_layout_and_checks():
    dense = np.array([[0, 3, 0, 1], [0, 0, 0, 0], [2, 0, 0, 4]])
    pos = np.flatnonzero(dense)
    lay = csr_layout(pos, dense.reshape(-1)[pos], 5, dense.shape)
    np.testing.assert_array_equal(lay.streams["rows"][0], [2, 0, 2])
    np.testing.assert_array_equal(lay.streams["cols"][0], [1, 3, 0, 3])
    np.testing.assert_array_equal(csr_decode(lay.streams["rows"][0], lay.streams["cols"][0], dense.shape, "t"), pos)
    with pytest.raises(FormatError, match="strictly increasing"):
        csr_decode(np.array([2, 0, 2]), np.array([3, 1, 0, 3]), dense.shape, "t")
    with pytest.raises(FormatError, match="sum"):
        csr_decode(np.array([2, 0, 1]), np.array([1, 3, 0, 3]), dense.shape, "t")


def test_relative_indices_past_the_tensor():
    with pytest.raises(FormatError, match="run past the tensor"):
        relative_decode(np.array([3, 7]), np.array([1, 2]), 10, "w/index")


def test_choice_prefers_csr_for_very_sparse_wide_rows():
    pos = np.array([5, 100_000 + 7, 200_000 + 3])          # three nonzeros in a (3, 100000) tensor
    assert choose_layout(pos, np.zeros(3, dtype=np.int64), 4, (3, 100_000)).name == "csr"
    dense_pos = np.arange(1000)
    lay = choose_layout(dense_pos, dense_pos % 4, 4, (10, 100))
    assert lay.name == "relative" and lay.index_bits == 0


# ------------------------------------------------------------------ property round trips

@st.composite
def quantized_tensors(draw):
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(0 if ndim else 1, 7), min_size=ndim, max_size=ndim)))
    if draw(st.booleans()) and ndim:
        shape = (draw(st.integers(1, 3)), draw(st.integers(50, 400)))    # wide rows: long runs
    density = draw(st.sampled_from([0.0, 0.01, 0.1, 0.5, 0.9, 1.0]))
    k = draw(st.integers(1, 40))
    per_channel = bool(len(shape) >= 1 and shape[0] > 0 and draw(st.booleans()))
    seed = draw(st.integers(0, 2**32 - 1))
    g = torch.Generator().manual_seed(seed)
    rows = shape[0] if per_channel else 1
    cb = torch.randn(rows, k, generator=g)
    cb = torch.where(cb == 0, torch.ones(()), cb)
    if draw(st.booleans()):
        cb = cb.half().float()
    numel = int(np.prod(shape)) if shape else 1
    idx = torch.randint(0, k, (numel,), generator=g)
    row = torch.arange(numel) // max(1, numel // rows) if per_channel else torch.zeros(numel, dtype=torch.long)
    keep = torch.rand(numel, generator=g) < density
    w = torch.where(keep, cb[row.clamp(max=rows - 1), idx], torch.zeros(())).reshape(shape)
    return w, (cb if per_channel else cb[0].clone())


@settings(max_examples=120, deadline=None)
@given(quantized_tensors())
def test_quantized_tensors_round_trip_bit_exact(wc):
    weight, codebook = wc
    fields, sections = encode_quantized("w", weight, codebook, 6)
    blob = pack_file(ModelInfo(arch="x"), [({"name": "w", "dtype": "float32", "shape": list(weight.shape),
                                             "kind": "quantized", **fields}, sections)])
    state = decode_blob(blob)
    assert torch.equal(state["w"].view(torch.int32), weight.view(torch.int32))
    assert torch.equal(state["w_codebook"].view(torch.int32), codebook.view(torch.int32))


@pytest.mark.parametrize("shape", [(0,), (0, 5), (), (1,), (3, 0)])
def test_empty_and_one_element(shape):
    cb = torch.tensor([0.25, -1.5])
    for fill in (0.0, -1.5):
        w = torch.full(shape, fill)
        fields, sections = encode_quantized("w", w, cb, None)
        blob = pack_file(ModelInfo(arch="x"), [({"name": "w", "dtype": "float32", "shape": list(shape),
                                                 "kind": "quantized", **fields}, sections)])
        assert torch.equal(decode_blob(blob)["w"].view(torch.int32), w.view(torch.int32))


def test_values_outside_the_codebook_are_a_model_error():
    cb = torch.tensor([0.5, 1.0])
    with pytest.raises(ModelError, match="fc.weight.*not in its codebook"):
        codes_of("fc.weight", torch.tensor([[0.5, 0.0], [1.0, 0.75]]), cb)
    with pytest.raises(ModelError, match="codebook shape"):
        codes_of("fc.weight", torch.zeros(3, 2), torch.zeros(2, 4))
    with pytest.raises(ModelError, match="float32"):
        codes_of("fc.weight", torch.zeros(3, 2, dtype=torch.float64), cb)
    # per-channel: a value of row 1's table in row 0 is not accepted
    table = torch.tensor([[0.5, 1.0], [2.0, 3.0]])
    with pytest.raises(ModelError):
        codes_of("fc.weight", torch.tensor([[2.0, 0.0], [3.0, 2.0]]), table)
    pos, codes = codes_of("fc.weight", torch.tensor([[1.0, 0.0], [3.0, 2.0]]), table)
    assert pos.tolist() == [0, 2, 3] and codes.tolist() == [1, 1, 0]


def test_negative_zero_decodes_as_positive_zero():
    w = torch.tensor([-0.0, 0.5, 0.0])
    fields, sections = encode_quantized("w", w, torch.tensor([0.5]), 1)
    blob = pack_file(ModelInfo(arch="x"), [({"name": "w", "dtype": "float32", "shape": [3], "kind": "quantized",
                                             **fields}, sections)])
    out = decode_blob(blob)["w"]
    assert torch.equal(out, w) and out[0].view(torch.int32) == 0


@pytest.mark.parametrize("bits", [0, 1, 4, 8, 12])
def test_histogram_estimate_equals_the_built_layout(bits):
    from deepshrink.codec.sparse import relative_estimate
    rng = np.random.default_rng(bits + 10)
    pos = np.sort(rng.choice(20_000, size=900, replace=False))
    codes = rng.integers(0, 7, size=pos.size)
    values, counts = np.unique(np.diff(pos, prepend=-1) - 1, return_counts=True)
    est = relative_estimate(values, counts, np.bincount(codes, minlength=7), bits)
    assert est == pytest.approx(relative_layout(pos, codes, 7, bits).estimate(), rel=1e-12)

"""Codec-side measurements for benchmarks/deep_compression.py: our .dsz size against general
compressors and the Shannon bound, and encode/decode throughput against lzma.

    python benchmarks/_codec_peers.py      # self-check on a pruned, k-means-shared LeNet-300-100

``peer_sizes(model, info)``: the same pruned + quantized weights through
  * ours: the whole .dsz file (header, codebooks, lossless tensors included), and per section
    what raw packing, canonical Huffman and ANS would spend on it;
  * gzip -9, lzma (preset 9 | EXTREME), zstd -22 on two inputs: ``codes`` = what the file holds,
    laid out plainly (per quantized layer the dense uint8/uint16 code array, 0 = pruned, i + 1 =
    codebook entry i, then the codebook as stored, fp16 or fp32; every other tensor's raw bytes),
    and ``fp32`` = every tensor's raw bytes (the quantized weights as fp32);
  * the order-0 Shannon bound of each coded section, ``n * H`` over the stream the file codes
    (symbol streams only: tables, codebooks and lossless tensors are outside it).
  The Huffman/ANS overheads are given for the stream bits alone and with their tables.
``throughput(model, info, repeats)``: our encode (model -> bytes) and decode (bytes -> state
  dict) against lzma compress/decompress of the fp32 bytes, in MB/s of fp32 weights (4 bytes per
  element of every floating tensor), medians of ``repeats`` interleaved runs.
"""

from __future__ import annotations

import gzip
import lzma
import statistics
import time

import numpy as np
import torch
from torch import nn

try:
    import zstandard
except ImportError:  # optional peer (pyproject [bench] extra)
    zstandard = None

from deepshrink.codec import dumps
from deepshrink.codec.container import parse_file
from deepshrink.codec.entropy import encode_symbols, entropy_bits, table_bytes
from deepshrink.codec.model_io import decode_file
from deepshrink.codec.quantized import codes_of
from deepshrink.codec.sparse import choose_layout, plain_relative_bits, relative_layout
from deepshrink.io import ModelInfo

__all__ = ["quantized_streams", "peer_inputs", "section_sizes", "peer_sizes", "throughput"]

CODEBOOK = "_codebook"


def _quantized(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in state if k + CODEBOOK in state and state[k].dtype == torch.float32]


def quantized_streams(model: nn.Module, layout: str = "chosen") -> dict[str, dict[str, tuple[np.ndarray, int]]]:
    """{layer: {section: (symbols, alphabet)}}: the symbol streams the .dsz writer codes
    (``layout="chosen"``), or those of the paper's layout: relative index at the best fixed
    width b >= 1 (``"paper"``; Han et al. Huffman-code these)."""
    state = model.state_dict()
    out = {}
    for key in _quantized(state):
        positions, codes = codes_of(key, state[key], state[key + CODEBOOK])
        k = int(state[key + CODEBOOK].shape[-1])
        if layout == "paper":
            bits = getattr(model.get_submodule(key.rpartition(".")[0]), "weight_bits", None) or max(1, (k - 1).bit_length())
            out[key] = relative_layout(positions, codes, k, plain_relative_bits(positions, bits)[0]).streams
        else:
            out[key] = choose_layout(positions, codes, k, tuple(state[key].shape)).streams
    return out


def peer_inputs(model: nn.Module) -> dict[str, bytes]:
    """The two byte strings the general compressors get (see the module docstring)."""
    state = model.state_dict()
    quantized = set(_quantized(state))
    codes_parts, fp32_parts = [], []
    for key, t in state.items():
        raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        if key.endswith(CODEBOOK) and key[:-len(CODEBOOK)] in quantized:
            half = t.half()
            exact = torch.equal(half.float().view(torch.int32), t.view(torch.int32))
            codes_parts.append(half.numpy().tobytes() if exact else raw)
            continue
        fp32_parts.append(raw)
        if key in quantized:
            positions, codes = codes_of(key, t, state[key + CODEBOOK])
            dense = np.zeros(t.numel(), dtype=np.uint8 if state[key + CODEBOOK].shape[-1] < 256 else np.uint16)
            dense[positions] = codes + 1
            codes_parts.append(dense.tobytes())
        else:
            codes_parts.append(raw)
    return {"codes": b"".join(codes_parts), "fp32": b"".join(fp32_parts)}


def _compressors() -> dict:
    out = {"gzip-9": lambda b: gzip.compress(b, 9, mtime=0),
           "lzma-9e": lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME)}
    if zstandard is not None:
        out["zstd-22"] = lambda b: zstandard.ZstdCompressor(level=22).compress(b)
    return out


def _table_bytes(coder: str, payload: bytes, alphabet: int) -> int:
    return table_bytes(coder, payload, alphabet)


def section_sizes(model: nn.Module, layout: str = "chosen") -> dict:
    """Per coded section: the bound n*H/8 and the bytes of raw, Huffman and ANS (with and
    without their tables, ``*_stream``); totals and overheads over the bound."""
    sections, totals = [], {"bound": 0.0, "raw": 0, "huffman": 0, "ans": 0, "huffman_stream": 0,
                            "ans_stream": 0, "chosen": 0}
    for layer, streams in quantized_streams(model, layout).items():
        for name, (sym, alphabet) in streams.items():
            row = {"layer": layer, "section": name, "count": int(sym.size), "alphabet": alphabet,
                   "bound": entropy_bits(sym, alphabet) / 8}
            coder, payload = encode_symbols(sym, alphabet)
            row["chosen"], row["chosen_bytes"] = coder, len(payload)
            for c in ("raw", "huffman", "ans"):
                try:
                    _, p = encode_symbols(sym, alphabet, only=c)
                except ValueError:               # const stream: the coder does not apply
                    p = payload
                    row[c], row[c + "_stream"] = len(p), len(p)
                    continue
                row[c], row[c + "_stream"] = len(p), len(p) - _table_bytes(c, p, alphabet)
            sections.append(row)
            for key in totals:
                totals[key] += row["chosen_bytes"] if key == "chosen" else row[key]
    bound = totals["bound"]
    overhead = {c: (totals[c] / bound - 1 if bound else None) for c in ("huffman", "ans", "huffman_stream",
                                                                          "ans_stream", "chosen")}
    return {"layout": layout, "sections": sections, "totals": totals, "overhead_vs_bound": overhead}


def peer_sizes(model: nn.Module, info: ModelInfo | None = None) -> dict:
    """Sizes in bytes: ours (file, and per section/coder in the chosen and the paper's layout),
    the general compressors on the same information, the bound."""
    info = info or getattr(model, "deepshrink_info", None) or ModelInfo(arch="unknown")
    blob = dumps(model, info)
    inputs = peer_inputs(model)
    peers = {f"{name} ({what})": len(fn(data)) for what, data in inputs.items() for name, fn in _compressors().items()}
    parsed = parse_file(blob, "<model>", check_crc=False)
    return {"ours_file": len(blob), "ours_header": parsed.data_start,
            "chosen_layout": section_sizes(model, "chosen"), "paper_layout": section_sizes(model, "paper"),
            "peers": peers, "peer_input_bytes": {k: len(v) for k, v in inputs.items()},
            "fp32_bytes": _dense_fp32_bytes(blob), "ratio": _dense_fp32_bytes(blob) / len(blob)}


def _dense_fp32_bytes(blob: bytes) -> int:
    parsed = parse_file(blob, "<model>", check_crc=False)
    return 4 * sum(int(np.prod(e["shape"], dtype=object)) for e in parsed.entries
                   if e["dtype"].startswith(("float", "bfloat")) and e["kind"] != "mask")


def throughput(model: nn.Module, info: ModelInfo | None = None, repeats: int = 5) -> dict:
    """MB/s of fp32 weights: our encode/decode and lzma's, interleaved, medians over repeats."""
    info = info or getattr(model, "deepshrink_info", None) or ModelInfo(arch="unknown")
    blob = dumps(model, info)
    fp32 = peer_inputs(model)["fp32"]
    packed = lzma.compress(fp32, preset=9 | lzma.PRESET_EXTREME)
    mb = _dense_fp32_bytes(blob) / 1e6
    jobs = {"ours_encode": lambda: dumps(model, info),
            "ours_decode": lambda: decode_file(parse_file(blob, "<bench>")),
            "lzma_compress": lambda: lzma.compress(fp32, preset=9 | lzma.PRESET_EXTREME),
            "lzma_decompress": lambda: lzma.decompress(packed)}
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(repeats):                      # interleaved: each round runs every job once
        for name, fn in jobs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"fp32_mb": mb, "repeats": repeats, "seconds_median": med,
            "mb_per_s": {k: mb / v for k, v in med.items()}, "seconds_all": times,
            "torch_threads": torch.get_num_threads()}


def _demo_model() -> tuple[nn.Module, ModelInfo]:
    """The LeNet-300-100 baseline, magnitude-pruned to 92% per layer, k-means shared (5 bits)."""
    from _results import load_baseline
    from deepshrink.quant import KMeansConfig, kmeans_quantize_

    model, info, _ = load_baseline("lenet300")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                w = m.weight
                cut = w.abs().reshape(-1).kthvalue(int(0.92 * w.numel())).values
                w.copy_(torch.where(w.abs() > cut, w, torch.zeros(())))
    kmeans_quantize_(model, KMeansConfig(fc_bits=5))
    return model, info


if __name__ == "__main__":
    import json

    torch.set_num_threads(1)
    model, info = _demo_model()
    sizes = peer_sizes(model, info)
    speed = throughput(model, info, repeats=3)
    for lay in ("chosen_layout", "paper_layout"):
        print(lay, json.dumps({k: v for k, v in sizes.pop(lay).items() if k != "sections"}, default=float))
    print(json.dumps(sizes, indent=1, default=float))
    print(json.dumps({k: v for k, v in speed.items() if k != "seconds_all"}, indent=1, default=float))

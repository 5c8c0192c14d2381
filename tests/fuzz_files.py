"""Property-based mutation of real model files' JSON: only deepshrink errors, bounded memory.

Run as a script (``python tests/fuzz_files.py N``) by tests/test_fuzz_files.py in a fresh process,
so its peak memory is its own. It takes the JSON metadata of a real ``.safetensors`` model file
(a committed baseline) and the JSON header of a real ``.dsz`` file (the same model pruned and
k-means quantized), applies hypothesis-generated mutations (a value replaced by another type or
range, a key deleted or duplicated, a value wrapped or nested deeply, huge and negative numbers,
NaN), re-seals the file (valid CRCs and lengths, so the mutation reaches the parser's own checks)
and opens it. Any exception other than a :class:`deepshrink.errors.DeepShrinkError` fails the run.
Prints one line: examples run, outcomes, and the peak-memory growth in MB.
"""

from __future__ import annotations

import copy
import json
import math
import resource
import struct
import sys
import zlib
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save

from deepshrink.codec import dumps, loads
from deepshrink.codec.container import PREAMBLE, VERSION, inflate_header
from deepshrink.errors import DeepShrinkError
from deepshrink.io import load_model
from deepshrink.prune import prune_
from deepshrink.quant.kmeans import KMeansConfig, kmeans_quantize_

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "checkpoints" / "baselines" / "lenet300.safetensors"

JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 63, 2 ** 63),
                      st.sampled_from([0, -1, 1, 2 ** 31 - 1, 2 ** 40, 10 ** 30, 0.5, -0.0, 1e308, math.nan,
                                       math.inf]),
                      st.floats(allow_nan=True), st.text(max_size=20),
                      st.sampled_from(["os:abort", "lenet300", "float32", "quantized", "mask", "relative",
                                       "csr", "raw", "ans", "huffman", "const", "zlib", "bytes", "fc1.weight",
                                       "fc1.weight_codebook", "linear", "fashion-mnist"]))
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                          max_leaves=12)


def _paths(value, prefix=()):
    """Every path (tuple of keys/indices) into a JSON value, the root included."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def _nest(v, depth):
    for _ in range(depth):
        v = [v]
    return v


MUTATION = st.tuples(st.sampled_from(["replace", "delete", "wrap", "deep", "negate", "huge", "duplicate"]),
                     st.integers(0, 10 ** 6), JSON_VALUE)


def mutate(record: dict, mutation) -> tuple[dict, str | None]:
    """(mutated copy, a duplicate key to inject in the text or None)."""
    kind, pick, value = mutation
    rec = copy.deepcopy(record)
    paths = list(_paths(rec))[1:]
    path = paths[pick % len(paths)]
    parent = rec
    for p in path[:-1]:
        parent = parent[p]
    key, old = path[-1], parent[path[-1]]
    if kind == "replace":
        parent[key] = value
    elif kind == "delete":
        if isinstance(parent, dict):
            del parent[key]
        else:
            parent.pop(key)
    elif kind == "wrap":
        parent[key] = [old]
    elif kind == "deep":
        parent[key] = _nest(old, 600 + pick % 400)
    elif kind == "negate" and isinstance(old, (int, float)) and not isinstance(old, bool):
        parent[key] = -old - 1
    elif kind == "huge" and isinstance(old, (int, float)) and not isinstance(old, bool):
        parent[key] = old * 2 ** 31 + 2 ** 40
    elif kind == "duplicate" and isinstance(parent, dict):
        return rec, json.dumps(key) if isinstance(key, str) else None
    else:
        parent[key] = value
    return rec, None


def _text(record: dict, dup: str | None) -> str:
    text = json.dumps(record)
    if dup is not None and text.startswith("{"):
        text = "{" + dup + ": [[1]], " + text[1:]  # a duplicate key: the later one wins in json
    return text


def _safetensors(state, record, dup) -> bytes:
    return st_save(state, metadata={"deepshrink": _text(record, dup)})


def _dsz(header: dict, data: bytes, dup) -> bytes:
    head = _text(header, dup).encode()
    return PREAMBLE.pack(b"\x89DSZ\r\n\x1a\n", VERSION, 0, len(head), zlib.crc32(head)) + head + data


def _open(kind: str, blob: bytes, tmp: Path) -> str:
    path = tmp / ("m.safetensors" if kind == "st" else "m.dsz")
    path.write_bytes(blob)
    try:
        if kind == "st":
            load_model(path)
        else:
            loads(blob, where=str(path))
    except DeepShrinkError:
        return "refused"
    return "loaded"


def main(examples: int, tmp: Path) -> None:
    state = {k: v.contiguous() for k, v in load_model(BASELINE)[0].state_dict().items()}
    info = load_model(BASELINE)[1]
    record = json.loads(info.to_json())
    model, _ = load_model(BASELINE)
    prune_(model, 0.9)
    kmeans_quantize_(model, KMeansConfig(fc_bits=4, iters=3))
    blob = dumps(model, info)
    version, flags, hlen = struct.unpack_from("<HHI", blob, 8)
    head = blob[PREAMBLE.size:PREAMBLE.size + hlen]
    header = json.loads(inflate_header(head, 1 << 26, "fuzz", version) if flags & 1 else head)
    data = blob[PREAMBLE.size + hlen:]
    assert _open("dsz", _dsz(header, data, None), tmp) == "loaded"   # the unmutated file loads
    outcomes: dict[str, int] = {}
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    cases = settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))

    @cases
    @given(MUTATION)
    def model_file(mutation):
        rec, dup = mutate(record, mutation)
        out = _open("st", _safetensors(state, rec, dup), tmp)
        outcomes[f"st-{out}"] = outcomes.get(f"st-{out}", 0) + 1

    @cases
    @given(MUTATION, st.booleans())
    def dsz_header(mutation, inner):
        if inner:   # the ModelInfo record inside the header, or the header itself
            rec, dup = mutate(header["model"], mutation)
            hdr, dup = {**header, "model": rec}, None
        else:
            hdr, dup = mutate(header, mutation)
        out = _open("dsz", _dsz(hdr, data, dup), tmp)
        outcomes[f"dsz-{out}"] = outcomes.get(f"dsz-{out}", 0) + 1

    model_file()
    dsz_header()
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024   # ru_maxrss is in KiB
    print(json.dumps({"examples": examples, "outcomes": outcomes, "peak_growth_mb": round(grown, 1)}))


if __name__ == "__main__":
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 200, Path(d))

"""The per-layer latency table: layer shapes from a hooked forward, candidate counts, and the
JSON cache (same key hits, another thread count misses, atomic and tolerant of a bad file)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.prune.latency_table import (LayerSpec, cache_folder, candidate_counts, layer_specs, load_table,
                                            measure_layer, save_table, table_key)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 3, padding=1)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False)
        self.conv2 = nn.Conv2d(12, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):                       # (N, 3, 8, 8)
        x = torch.relu(self.conv1(x))           # (N, 12, 8, 8)
        x = torch.relu(self.dw(x))
        x = torch.relu(self.conv2(x))           # (N, 8, 4, 4)
        return self.fc(x.flatten(1))            # (N, 5)


def fake_ms(spec: LayerSpec) -> float:
    return spec.macs * 1e-6


def test_layer_specs_record_shapes_and_macs():
    torch.manual_seed(0)
    specs = layer_specs(TinyNet(), torch.randn(2, 3, 8, 8))
    assert set(specs) == {"conv1", "dw", "conv2", "fc"}
    assert specs["conv1"].input_shape == (2, 3, 8, 8) and specs["conv2"].out_spatial == (4, 4)
    assert specs["conv1"].macs == 2 * 12 * 64 * 3 * 9
    assert specs["dw"].depthwise and specs["dw"].macs == 2 * 12 * 64 * 1 * 9
    assert specs["fc"].input_shape == (2, 128) and specs["fc"].macs == 2 * 128 * 5
    small = specs["conv2"].with_channels(4, 6)
    assert small.input_shape == (2, 4, 8, 8) and (small.in_channels, small.out_channels) == (4, 6)
    assert specs["dw"].with_channels(12, 8).groups == 8 and specs["dw"].with_channels(12, 8).in_channels == 8
    assert specs["fc"].with_channels(64, 5).input_shape == (2, 64)
    layer, x = small.build()                    # what is timed runs, with the shape the spec says
    assert layer(x).shape == (2, 6, 4, 4)


def test_measure_layer_returns_milliseconds():
    spec = layer_specs(TinyNet(), torch.randn(1, 3, 8, 8))["conv1"]
    ms = measure_layer(spec, threads=1, warmup=1, repeats=3)
    assert ms > 0 and torch.get_num_threads() >= 1


def test_candidate_counts():
    assert candidate_counts(30) == [28, 24, 20, 16, 12, 8, 4, 1]
    assert candidate_counts(16, step=4, min_channels=6) == [12, 8, 6]
    assert candidate_counts(1) == []
    capped = candidate_counts(512, step=4, max_counts=32)
    assert len(capped) <= 33 and all(c % 16 == 0 for c in capped[:-1]) and capped[0] == 496
    with pytest.raises(ConfigError):
        candidate_counts(8, step=0)


def test_table_caches_and_reloads(tmp_path):
    torch.manual_seed(0)
    model, x = TinyNet(), torch.randn(1, 3, 8, 8)
    specs = layer_specs(model, x)
    calls = []

    def counting(spec):
        calls.append(spec.signature())
        return fake_ms(spec)

    key = table_key(model, x, "torch", threads=1)
    table = load_table(key, tmp_path)
    assert table.entries == {} and table.path.parent == tmp_path / "latency"
    first = {n: table.latency(s.with_channels(s.in_channels, max(1, s.out_channels // 2)), counting)
             for n, s in specs.items()}
    assert table.latency(specs["conv1"], counting) == fake_ms(specs["conv1"]) and len(calls) == 5
    table.latency(specs["conv1"], counting)     # a hit: not measured again
    assert len(calls) == 5 and table.measured == 5
    path = save_table(table)
    assert [p.name for p in path.parent.iterdir()] == [path.name]      # atomic: no temp file left
    assert json.loads(path.read_text())["key"] == key

    again = load_table(table_key(model, x, "torch", threads=1), tmp_path)      # same key: hits
    assert again.entries == table.entries
    assert {n: again.latency(s.with_channels(s.in_channels, max(1, s.out_channels // 2)), counting)
            for n, s in specs.items()} == first
    assert len(calls) == 5 and again.measured == 0
    assert load_table(table_key(model, x, "torch", threads=2), tmp_path).entries == {}       # threads: a miss
    assert load_table(table_key(model, torch.randn(4, 3, 8, 8), "torch", 1), tmp_path).entries == {}   # batch
    other = TinyNet()
    other.fc = nn.Linear(128, 7)
    assert load_table(table_key(other, x, "torch", 1), tmp_path).entries == {}        # another architecture


def test_cache_folder_env_and_bad_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEEPSHRINK_CACHE", str(tmp_path / "env"))
    assert cache_folder() == tmp_path / "env" / "latency"
    assert cache_folder(tmp_path / "arg") == tmp_path / "arg" / "latency"
    monkeypatch.delenv("DEEPSHRINK_CACHE")
    assert cache_folder().parts[-3:] == (".cache", "deepshrink", "latency")

    model, x = TinyNet(), torch.randn(1, 3, 8, 8)
    key = table_key(model, x, "torch", 1)
    path = load_table(key, tmp_path).path
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert load_table(key, tmp_path).entries == {}        # unreadable: measured again, with a warning
    assert "unreadable latency table" in capsys.readouterr().err
    path.write_text(json.dumps({"format": "deepshrink latency table", "version": 1, "key": {**key, "threads": 9},
                                "entries": {"a": 1.0}}))
    assert load_table(key, tmp_path).entries == {}        # a file for another key: a miss
    with pytest.raises(ConfigError, match="runtime"):
        table_key(model, x, "onnxruntime", 1)

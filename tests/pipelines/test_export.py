"""export_file: the ONNX file describes its input (``metadata_props``, read back with ``onnx.load``),
and a graph with the normalisation baked in takes raw [0, 1] images where the plain graph takes
normalised ones (oracle: the PyTorch model on normalised images)."""

from __future__ import annotations

import importlib.metadata
import json

import numpy as np
import pytest
import torch

from deepshrink import models
from deepshrink.errors import ConfigError
from deepshrink.io import ModelInfo, save_model
from deepshrink.pipelines import ExportConfig, export_file
from deepshrink.pipelines.export import metadata_summary
from deepshrink.quant import OrtSession

onnx = pytest.importorskip("onnx")
pytestmark = pytest.mark.usefixtures("one_thread")

MEAN, STD = [0.2, 0.5, 0.7], [0.3, 0.25, 0.4]          # per channel: the broadcast is checked too
KWARGS = {"in_channels": 3, "conv1": 4, "conv2": 6, "fc1": 16}


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory):
    """A tiny 3-channel LeNet-5 (random weights) in a model file that records its mean and std."""
    torch.manual_seed(0)
    model = models.build("lenet5", **KWARGS).eval()
    path = tmp_path_factory.mktemp("export") / "rgb.safetensors"
    save_model(model, path, ModelInfo(arch="lenet5", kwargs=KWARGS, input_shape=[3, 28, 28], mean=MEAN, std=STD,
                                      accuracy=0.5))
    return model, path


def _props(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _normalise(raw: torch.Tensor) -> torch.Tensor:
    return (raw - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_the_metadata_round_trips(rgb_model, tmp_path):
    _, path = rgb_model
    run = export_file(path, tmp_path / "m.onnx")
    props = _props(tmp_path / "m.onnx")
    assert props == run.metadata
    assert json.loads(props["mean"]) == MEAN and json.loads(props["std"]) == STD
    assert props["input_layout"] == "NCHW float32" and json.loads(props["input_shape"]) == ["batch", 3, 28, 28]
    assert props["input_kind"] == "images" and props["preprocessing_baked"] == "false"
    lo, hi = json.loads(props["input_range"])         # what (x - mean) / std spans for x in [0, 1]
    assert lo == pytest.approx(min(-m / s for m, s in zip(MEAN, STD)), abs=1e-4)
    assert hi == pytest.approx(max((1 - m) / s for m, s in zip(MEAN, STD)), abs=1e-4)
    assert props["source_model"] == "rgb.safetensors" and props["architecture"] == "lenet5"
    assert props["deepshrink_version"] == importlib.metadata.version("deepshrink")
    assert props["source_accuracy"] == "0.5000" and props["exporter"] == "torchscript"
    line = metadata_summary(props)
    assert "\n" not in line and "mean [0.2, 0.5, 0.7] std [0.3, 0.25, 0.4]" in line and "normalised" in line


def test_a_baked_graph_takes_raw_images(rgb_model, tmp_path):
    model, path = rgb_model
    export_file(path, tmp_path / "plain.onnx")
    run = export_file(path, tmp_path / "baked.onnx", ExportConfig(bake_preprocessing=True))
    assert run.metadata["preprocessing_baked"] == "true" and json.loads(run.metadata["input_range"]) == [0.0, 1.0]
    assert json.loads(run.metadata["mean"]) == MEAN and "raw images in [0, 1]" in metadata_summary(run.metadata)
    graph = onnx.load(str(tmp_path / "baked.onnx")).graph
    assert [n.op_type for n in graph.node[:2]] == ["Sub", "Div"] and graph.node[0].input[0] == "input"
    raw = torch.rand(6, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(_normalise(raw)).numpy()
    baked = OrtSession(tmp_path / "baked.onnx").run(raw)
    plain = OrtSession(tmp_path / "plain.onnx").run(_normalise(raw))
    assert np.abs(baked - want).max() <= 1e-4 and np.abs(plain - want).max() <= 1e-4
    assert np.abs(baked - plain).max() <= 1e-5


def test_nothing_to_bake_is_refused(tmp_path):
    model = models.build("lenet300")
    save_model(model, tmp_path / "raw.safetensors", ModelInfo(arch="lenet300", history=[{"op": "train"}]))
    with pytest.raises(ConfigError, match="records no normalisation"):
        export_file(tmp_path / "raw.safetensors", tmp_path / "x.onnx", ExportConfig(bake_preprocessing=True))
    with pytest.raises(ConfigError, match="choose one"):
        export_file(tmp_path / "raw.safetensors", tmp_path / "x.onnx", ExportConfig(int8=True, ort_int8=True))
    assert not (tmp_path / "x.onnx").exists()

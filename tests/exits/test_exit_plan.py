"""The exit plan as data: round trip, every field read from a file checked (a FormatError naming it),
heads built from it with the shapes it says, and a model file that keeps heads and thresholds."""

from __future__ import annotations

import json
import re

import pytest
import torch

from deepshrink.errors import FormatError, ModelError
from deepshrink.exit_heads import EXITS_KEY, ExitPlan, Gate, HeadSpec, attach_heads, build_head
from deepshrink.exits import EarlyExitModel, attach_exits
from deepshrink.io import ModelInfo, load_model, save_model
from deepshrink.modelfile import read_safetensors

pytestmark = pytest.mark.usefixtures("one_thread")


def _plan() -> ExitPlan:
    return ExitPlan([HeadSpec("layer1", [4, 8, 8], 4, 2, 6), HeadSpec("layer2", [8, 4, 4], 4, 1, 8)],
                    policy="learned", thresholds=[0.7, None],
                    gates=[Gate([0.1, 0.2, 0.3, 0.4], -0.5, [0.0] * 4, [1.0] * 4), None],
                    stage_macs=[10, 20, 30], notes={"max_drop": 0.5})


def test_plan_round_trips_through_json():
    plan = _plan()
    again = ExitPlan.from_dict(json.loads(json.dumps(plan.to_dict())), "f")
    assert again == plan
    assert again.enabled() == [True, False] and again.layers == ["layer1", "layer2"]


@pytest.mark.parametrize("change, field", [
    (lambda d: d["heads"].clear(), "heads"),
    (lambda d: d["heads"][0].update(depth=99), "heads[0].depth"),
    (lambda d: d["heads"][1].update(in_shape=[0, 4]), "heads[1].in_shape"),
    (lambda d: d["heads"][0].update(layer=7), "heads[0].layer"),
    (lambda d: d["heads"][1].update(layer="layer1"), "heads"),
    (lambda d: d.update(policy="cosine"), "policy"),
    (lambda d: d.update(thresholds=[0.5]), "thresholds"),
    (lambda d: d.update(thresholds=[float("nan"), None]), "thresholds"),
    (lambda d: d["gates"][0].update(weight=[1.0]), "gates[0].weight"),
    (lambda d: d["gates"][0].update(std=[1.0, 0.0, 1.0, 1.0]), "gates[0].std"),
    (lambda d: d.update(gates=[None, None]), "gates"),
])
def test_every_bad_field_is_a_format_error_naming_it(change, field):
    raw = _plan().to_dict()
    change(raw)
    with pytest.raises(FormatError, match=rf"'extra\.exits\.{re.escape(field)}'"):
        ExitPlan.from_dict(raw, "model.safetensors")


def test_heads_have_the_shapes_the_plan_says():
    conv = build_head(HeadSpec("a", [16, 28, 28], 10, depth=4, width=8))
    assert conv(torch.zeros(2, 16, 28, 28)).shape == (2, 10)
    strides = [m.stride[0] for m in conv if isinstance(m, torch.nn.Conv2d)]
    assert strides == [2, 2, 2, 1]                           # 28 -> 14 -> 7 -> 4, then no further downsampling
    flat = build_head(HeadSpec("b", [300], 10, depth=1, width=20))
    assert flat(torch.zeros(3, 300)).shape == (3, 10)
    assert [m.out_features for m in flat if isinstance(m, torch.nn.Linear)] == [20, 10]


def test_attach_refuses_an_unknown_layer(fresh):
    with pytest.raises(ModelError, match="'layer9'"):
        attach_heads(fresh, ExitPlan([HeadSpec("layer9", [4, 8, 8], 4)]))


def test_a_model_file_keeps_heads_and_thresholds(fresh, tiny_data, tmp_path):
    x = tiny_data.test.x
    plan = attach_exits(fresh, x[:2], ["layer1", "layer2"], 4)
    plan.policy, plan.thresholds = "max_softmax", [0.6, 0.9]
    info = ModelInfo(arch="resnet20", kwargs={"num_classes": 4, "widths": [4, 8, 8], "blocks": 1},
                     input_shape=[1, 8, 8], extra={EXITS_KEY: plan.to_dict()})
    path = tmp_path / "ee.safetensors"
    save_model(fresh, path, info)
    state, _ = read_safetensors(path)
    assert any(k.startswith("exit_heads.0.") for k in state)
    model, info2 = load_model(path)                           # the loader rebuilds the heads from the plan
    a, b = EarlyExitModel(fresh, plan).eval(), EarlyExitModel.from_model(model, info2).eval()
    with torch.no_grad():
        assert torch.equal(a(x), b(x)) and torch.equal(a.last_exits, b.last_exits)
        assert torch.equal(model(x), fresh(x))               # plain loading: the backbone's own output


def test_a_damaged_exit_plan_in_a_file_is_one_format_error(fresh, tiny_data, tmp_path):
    plan = attach_exits(fresh, tiny_data.test.x[:2], ["layer1"], 4)
    raw = plan.to_dict()
    raw["heads"][0]["width"] = -3
    info = ModelInfo(arch="resnet20", kwargs={"num_classes": 4, "widths": [4, 8, 8], "blocks": 1},
                     input_shape=[1, 8, 8], extra={EXITS_KEY: raw})
    path = tmp_path / "bad.safetensors"
    save_model(fresh, path, info)
    with pytest.raises(FormatError, match=r"bad\.safetensors.*'extra\.exits\.heads\[0\]\.width'"):
        load_model(path)

"""Hostile or careless model-file metadata: one deepshrink error naming the field, never code run.

Regression tests for the hardening audit: a file's ``data`` field naming code, metadata of the
wrong type or range, nesting that breaks re-saving, stored shapes that do not fit the
architecture, and the one-line refusal of a pickled training-state file.
"""

from __future__ import annotations

import json
import math
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save as st_save

from deepshrink import data as data_mod
from deepshrink import models
from deepshrink.cli import main
from deepshrink.errors import DataError, DeepShrinkError, FormatError, ModelError
from deepshrink.io import ModelInfo, load_model, save_model
from deepshrink.metadata import MAX_DEPTH, depth
from deepshrink.train import TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def _state(arch="lenet300", **kwargs):
    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in models.build(arch, **kwargs).state_dict().items()}


def _write(path, state, **fields):
    record = {"format": "deepshrink-model", "version": 1, "arch": "lenet300", **fields}
    path.write_bytes(st_save(state, metadata={"deepshrink": json.dumps(record)}))
    return path


# ----------------------------------------------------------------------------- 1. the data field

def test_data_field_naming_code_is_refused_without_trust(tmp_path, monkeypatch, capsys, run_error):
    marker = tmp_path / "RAN"
    (tmp_path / "ds_evil_data_mod.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        Path({str(marker)!r}).write_text("ran")
        def load():
            raise SystemExit(134)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _write(tmp_path / "m.safetensors", _state(), data="ds_evil_data_mod:load")
    try:
        for cmd in (["evaluate", path], ["prune", path, "--out", tmp_path / "o.safetensors", "--sparsity", "0.5"],
                    ["sensitivity", path, "--out-dir", tmp_path / "s"],
                    ["quantize", path, "--out", tmp_path / "q.safetensors"],
                    ["compress", path, "--out", tmp_path / "c.dsz"],
                    ["prune-channels", path, "--out", tmp_path / "pc.safetensors", "--ratio", "0.5"]):
            line = run_error(capsys, cmd)
            assert "metadata field 'data'" in line and "--trust-code" in line, line
        assert not marker.exists() and "ds_evil_data_mod" not in sys.modules
        # the library call a Python user makes is gated the same way
        with pytest.raises(DataError, match="m.safetensors"):
            data_mod.spec_from_file(None, "ds_evil_data_mod:load", str(path))
        assert not marker.exists()
    finally:
        sys.modules.pop("ds_evil_data_mod", None)


def test_data_field_os_abort_does_not_abort(tmp_path, capsys, run_error):
    # the audit's repro: "data": "os:abort" killed the process (exit 134)
    path = _write(tmp_path / "m.safetensors", _state(), data="os:abort")
    assert "os:abort" in run_error(capsys, ["evaluate", path])


def test_data_spec_gate_rules():
    assert data_mod.spec_from_file("npz:x.npz", "os:abort", "f") == "npz:x.npz"   # the user's own spec wins
    assert data_mod.spec_from_file(None, None, "f") == "fashion-mnist"
    assert data_mod.spec_from_file(None, "idx:/some/dir", "f") == "idx:/some/dir"  # data, not code
    assert data_mod.spec_from_file(None, "os:abort", "f", trust_code=True) == "os:abort"
    with pytest.raises(DataError, match="'data'"):
        data_mod.spec_from_file(None, "os:abort", "f")


# ----------------------------------------------------------------------------- 3. types and ranges

BAD_FIELDS = [
    ("kwargs", {"num_classes": -1}, ModelError, "num_classes"),
    ("kwargs", {"dropout": 5}, ModelError, "dropout"),
    ("kwargs", {"hidden": 3}, ModelError, "hidden"),
    ("kwargs", {"in_features": 10 ** 9}, ModelError, "kwargs"),
    ("extra", [1], FormatError, "'extra'"),
    ("extra", {"quant": None}, FormatError, "extra.quant"),
    ("extra", {"quant": [1, 2]}, FormatError, "extra.quant"),
    ("extra", {"quant": {"method": "linear", "config": None}}, FormatError, "extra.quant"),
    ("extra", {"channel_plan": "x"}, FormatError, "channel_plan"),
    ("data", 5, FormatError, "'data'"),
    ("data", "", FormatError, "'data'"),
    ("input_shape", [1, -28, 28], FormatError, "input_shape"),
    ("input_shape", "1,28,28", FormatError, "input_shape"),
    ("input_shape", [100000, 1000, 1000], FormatError, "input_shape"),
    ("mean", ["a"], FormatError, "'mean'"),
    ("std", [0.0], FormatError, "'std'"),
    ("accuracy", 7, FormatError, "accuracy"),
    ("accuracy", "high", FormatError, "accuracy"),
    ("history", {"op": "train"}, FormatError, "history"),
    ("history", [5], FormatError, "history"),
    ("history", [{"op": "train", "config": [1]}], FormatError, "history"),
    ("arch", "x" * 5000, FormatError, "arch"),
]


@pytest.mark.parametrize("field,value,err,word", BAD_FIELDS, ids=[f"{f}-{i}" for i, (f, *_) in enumerate(BAD_FIELDS)])
def test_bad_metadata_field_is_one_error_naming_it(tmp_path, field, value, err, word):
    path = _write(tmp_path / "bad.safetensors", _state(), **{field: value})
    with pytest.raises(err) as exc:
        load_model(path)
    msg = str(exc.value)
    assert "bad.safetensors" in msg and word in msg and "\n" not in msg


def test_nan_accuracy_is_refused(tmp_path):
    # Python's json reads NaN; a finite number is required
    path = tmp_path / "nan.safetensors"
    text = ModelInfo(arch="lenet300").to_json().replace('"accuracy": null', '"accuracy": NaN')
    path.write_bytes(st_save(_state(), metadata={"deepshrink": text}))
    with pytest.raises(FormatError, match="accuracy"):
        load_model(path)


def test_deep_nesting_is_refused_on_read(tmp_path):
    nested: object = 1
    for _ in range(600):
        nested = [nested]
    path = _write(tmp_path / "deep.safetensors", _state(), extra={"x": nested})
    with pytest.raises(FormatError, match="nested"):
        load_model(path)
    assert depth([[1]]) == 2 and depth(5) == 0 and depth({"a": {"b": []}}) == 3
    assert depth(nested) > MAX_DEPTH


def test_reasonable_extras_still_round_trip(tmp_path):
    info = ModelInfo(arch="lenet300", extra={"note": {"a": [1, 2, {"b": None}]}},
                     history=[{"op": "train", "config": {"lr": 0.1}}])
    save_model(models.build("lenet300"), tmp_path / "ok.safetensors", info)
    _, back = load_model(tmp_path / "ok.safetensors")
    assert back.extra == info.extra and back.history == info.history


# ----------------------------------------------------------------------------- 5. stored shapes

@pytest.mark.parametrize("key,shape", [
    ("fc2.bias", (2, 5)),        # ndim changed
    ("fc1.weight", (300,)),      # 1-D weight
    ("fc1.weight", (0, 784)),    # empty layer
    ("fc2.bias", (5,)),          # right ndim, does not fit fc2's 100 outputs
    ("fc3.weight", (10, 7)),     # does not fit fc2's 100 outputs
])
def test_stored_shape_that_does_not_fit_is_model_error(tmp_path, key, shape):
    state = _state()
    state[key] = torch.zeros(shape)
    path = _write(tmp_path / "shape.safetensors", state)
    with pytest.raises(ModelError, match="shape.safetensors") as exc:
        load_model(path)
    assert key.split(".")[0] in str(exc.value) or "fit together" in str(exc.value)


def test_consistently_pruned_shapes_still_load(tmp_path):
    state = _state()
    state["fc1.weight"], state["fc1.bias"] = state["fc1.weight"][:120], state["fc1.bias"][:120]
    state["fc2.weight"] = state["fc2.weight"][:, :120].contiguous()
    model, _ = load_model(_write(tmp_path / "pruned.safetensors", state))
    assert model.fc1.out_features == 120 and model.fc2.in_features == 120
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


# ----------------------------------------------------------------------------- 9. torch.load refusal

class _NotATensor:
    pass


def test_pickled_training_state_is_refused_in_one_line(tmp_path, make_dataset):
    ckpt = tmp_path / "state.pt"
    torch.save({"evil": _NotATensor()}, ckpt)
    ds = make_dataset()
    with pytest.raises(DeepShrinkError) as exc:
        fit(models.build("lenet300", in_features=64, num_classes=4), ds,
            TrainConfig(epochs=1, checkpoint=str(ckpt), progress=False))
    assert "\n" not in str(exc.value) and "state.pt" in str(exc.value)


def test_every_error_through_the_cli_is_one_line(tmp_path, capsys):
    path = _write(tmp_path / "m.safetensors", _state(), kwargs={"num_classes": -1})
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "num_classes" in err[0]


@pytest.mark.parametrize("key,value", [("lr", "fast"), ("epochs", 2.5), ("augment", "yes"), ("lr", [1]),
                                       ("batch_size", None)])
def test_recorded_training_settings_of_the_wrong_type(tmp_path, key, value):
    path = _write(tmp_path / "t.safetensors", _state(), history=[{"op": "train", "config": {key: value}}])
    with pytest.raises(FormatError, match=f"history\\[0\\].config.{key}"):
        load_model(path)


def test_configs_refuse_nan_for_python_callers():
    from deepshrink.compress import CompressConfig
    from deepshrink.errors import ConfigError

    for bad in (CompressConfig(max_drop=math.nan), CompressConfig(max_drop=math.inf), CompressConfig(backoff=math.nan),
                TrainConfig(warmup_epochs=math.nan), TrainConfig(weight_decay=math.nan), TrainConfig(lr=math.inf),
                TrainConfig(momentum=-1.0)):
        with pytest.raises(ConfigError):
            bad.check()


def test_record_appends_provenance():
    from deepshrink.compress import CompressConfig

    info = ModelInfo(arch="lenet300")
    entry = info.record("compress", CompressConfig(max_drop=0.3), accuracy=0.9, seconds=1.5)
    assert info.history[-1] is entry and entry["op"] == "compress" and entry["config"]["max_drop"] == 0.3
    assert entry["seconds"] == 1.5 and info.accuracy == 0.9 and entry["accuracy"] == 0.9
    assert info.record("note")["op"] == "note" and "config" not in info.history[-1]

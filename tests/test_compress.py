"""The Deep Compression pipeline on tiny data, in memory (the command: tests/cli/test_compress.py)."""

import json

import pytest
import torch

from deepshrink.compress import CompressConfig, compress
from deepshrink.data import with_validation
from deepshrink.errors import ConfigError
from deepshrink.models import build
from deepshrink.quant import quantized_layers
from deepshrink.train import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(prune_epochs=2, centroid_epochs=1, val_size=64, progress=False, verbose=False)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return build("lenet300", in_features=64, num_classes=4)


@pytest.mark.parametrize("allocation", ["sensitivity", "global"])
def test_compress_prunes_and_shares(make_dataset, allocation):
    ds = make_dataset()
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = compress(model, ds, CompressConfig(sparsity=0.8, allocation=allocation, attempts=1, bit_widths="fixed",
                                             share_biases=False, **FAST), {"lr": 0.05, "augment": False})
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())   # input untouched
    assert res.attempts[0].sparsity == pytest.approx(0.8, abs=0.01)
    assert (res.scan is not None) == (allocation == "sensitivity")
    assert res.scan_on == ("-" if allocation == "global" else
                           "the validation split (64 images held out of the training split)")
    layers = quantized_layers(res.model)
    assert set(layers) == {"fc1", "fc2", "fc3"} and res.bits == {"fc1": 5, "fc2": 5, "fc3": 5}
    for mod in layers.values():
        nz = mod.weight[mod.weight != 0]
        assert bool(torch.isin(nz, mod.weight_codebook).all()) and mod.weight_codebook.numel() <= 32
    d = res.to_dict()
    json.dumps(d)
    assert d["within_budget"] == ((res.val_accuracy_before - res.val_accuracy_after) * 100 <= 0.5)
    assert d["budget_on"] == "validation" and "validation split (64 images" in d["val_on"]
    assert d["accuracy_on"] == "the test split (64 images)"


def test_backoff_lowers_the_target(make_dataset):
    ds = make_dataset()
    res = compress(_mlp(1), ds, CompressConfig(sparsity=0.97, allocation="global", max_drop=0.0, attempts=2,
                                               backoff=0.1, **FAST), {"lr": 0.05, "augment": False})
    first = res.attempts[0]
    if first.drop_pp(res.accuracy_before) <= 0.0:
        assert len(res.attempts) == 1
    else:
        assert len(res.attempts) == 2 and res.attempts[1].target == pytest.approx(0.87)
        assert res.attempts[1].sparsity == pytest.approx(0.87, abs=0.01)


@pytest.mark.parametrize("augment", [False, True])
def test_teacher_logits_cached_once_without_augmentation(make_dataset, monkeypatch, augment):
    import deepshrink.distill.run as distill_run
    from deepshrink.distill.cache import TeacherTargets

    ds = make_dataset()
    builds, calls = [], {"hits": 0, "misses": 0}
    real_build, real_call = distill_run.build_logit_cache, TeacherTargets.__call__

    def counting_build(teacher, split, *a, **k):
        builds.append(len(split))
        return real_build(teacher, split, *a, **k)

    def counting_call(self, x):
        hits0, misses0 = self.hits, self.misses
        out = real_call(self, x)
        calls["hits"] += self.hits - hits0
        calls["misses"] += self.misses - misses0
        return out

    monkeypatch.setattr(distill_run, "build_logit_cache", counting_build)
    monkeypatch.setattr(TeacherTargets, "__call__", counting_call)
    res = compress(_mlp(2), ds, CompressConfig(sparsity=0.97, allocation="global", max_drop=0.0, attempts=2,
                                               backoff=0.1, kd_temperature=2.0, kd_alpha=0.5,
                                               augment=augment, **FAST),
                   {"lr": 0.05, "augment": False}, teacher=_mlp(3))
    assert len(res.attempts) >= 1
    steps_images = calls["hits"] + calls["misses"]
    assert steps_images > 0  # the teacher's loss was used in the fine-tunings
    if augment:  # augmented batches are never cached: the teacher runs live
        assert builds == [] and calls["hits"] == 0
    else:  # one pass over the training images left after the validation split, for every attempt
        assert builds == [len(ds.train) - 64] and calls["misses"] == 0


@pytest.mark.parametrize("allocation", ["sensitivity", "global"])
def test_every_choice_on_validation_the_test_split_reported_once(make_dataset, monkeypatch, allocation):
    """Spy on every evaluation (train.predict: what evaluate runs) and every training split: the
    test split is evaluated twice (the dense model, the final one), both outside any choice; the
    scan, the fine-tunings' accuracies and the budget see the validation split; fine-tuning never
    trains on a validation image. 256 training images: the default validation split is 25."""
    import deepshrink.train as train_mod
    from deepshrink.data import with_validation

    ds = make_dataset()
    carved = with_validation(ds)
    assert len(carved.val) == 25
    evaluated, trained_on = [], []
    real_predict, real_batches = train_mod.predict, train_mod.iterate_batches

    def predict(model, x, *a, **k):
        evaluated.append("test" if x is ds.test.x else "val" if torch.equal(x, carved.val.x) else "other")
        return real_predict(model, x, *a, **k)

    def batches(split, *a, **k):
        trained_on.append(split)
        return real_batches(split, *a, **k)

    monkeypatch.setattr(train_mod, "predict", predict)
    monkeypatch.setattr(train_mod, "iterate_batches", batches)
    fast = {**FAST, "val_size": None}
    res = compress(_mlp(4), ds, CompressConfig(sparsity=0.97, allocation=allocation, max_drop=0.0, attempts=2,
                                               backoff=0.1, **fast), {"lr": 0.05, "augment": False})
    assert evaluated[0] == "test" and evaluated[-1] == "test" and evaluated.count("test") == 2
    assert set(evaluated[1:-1]) == {"val"}
    assert trained_on and all(torch.equal(s.x, carved.train.x) for s in trained_on)
    assert res.val_accuracy_before == pytest.approx(evaluate(_mlp(4), carved.val))
    assert res.accuracy_before == pytest.approx(evaluate(_mlp(4), ds.test))
    assert res.accuracy_after == pytest.approx(evaluate(res.model, ds.test))
    assert res.val_accuracy_after == res.attempts[-1].val_accuracy_quantized
    assert res.val_accuracy_after == pytest.approx(evaluate(res.model, carved.val))
    assert res.within_budget == (res.attempts[-1].drop_pp(res.val_accuracy_before) <= 0.0)
    stop_early = res.attempts[0].drop_pp(res.val_accuracy_before) <= 0.0   # the retry is judged on validation
    assert len(res.attempts) == (1 if stop_early else 2)
    if allocation == "sensitivity":
        assert res.scan["dense"] == res.val_accuracy_before and "25 images" in res.scan_on


def test_measured_widths_shared_biases_and_dead_units(make_dataset):
    """The labelled defaults: widths measured per layer (biases too) on the validation split, dead
    hidden units removed; each choice recorded in the attempt."""
    ds = make_dataset()
    res = compress(_mlp(5), ds, CompressConfig(sparsity=0.95, allocation="global", attempts=1, **FAST),
                   {"lr": 0.05, "augment": False})
    att = res.attempts[0]
    assert set(res.bits) == {"fc1", "fc2", "fc3", "fc1.bias", "fc2.bias", "fc3.bias"}
    assert all(2 <= b <= 8 for b in res.bits.values()) and att.bits == res.bits
    tol = CompressConfig.bit_tolerance
    assert att.bit_tolerance in (tol, tol / 2, tol / 4)
    for name, b in res.bits.items():
        layer, _, attr = name.partition(".")
        mod = getattr(res.model, layer)
        t = getattr(mod, attr or "weight")
        cb = getattr(mod, (attr or "weight") + "_codebook")
        assert cb.numel() <= 2 ** b and bool(torch.isin(t[t != 0], cb).all())
    fc1 = res.model.fc1
    assert att.dead_removed.get("fc1", 0) == 300 - fc1.out_features
    assert res.model.fc2.in_features == fc1.out_features                 # the layers physically shrank
    assert res.val_accuracy_after == pytest.approx(evaluate(res.model, with_validation(ds, 64).val))


def test_widths_are_retried_only_when_sharing_broke_the_budget(make_dataset, monkeypatch):
    import deepshrink.pipelines.compress_stages as stages
    tolerances = []
    real = stages.choose_bits

    def spy(model, score, cfg, tol, **kw):
        tolerances.append(tol)
        assert kw["z"] == CompressConfig.bit_se and kw["samples"] is not None    # labelled: per-image bound
        return real(model, score, cfg, tol, **kw)

    monkeypatch.setattr(stages, "choose_bits", spy)
    ds = make_dataset()
    res = compress(_mlp(6), ds, CompressConfig(sparsity=0.5, allocation="global", attempts=1, max_drop=100.0, **FAST),
                   {"lr": 0.05, "augment": False})
    assert tolerances == [pytest.approx(CompressConfig.bit_tolerance / 100)] and res.within_budget          # within budget: one choice
    tolerances.clear()
    res = compress(_mlp(6), ds, CompressConfig(sparsity=0.5, allocation="global", attempts=1, max_drop=0.0,
                                               bit_tolerance=100.0, **FAST), {"lr": 0.05, "augment": False})
    pruned_over = res.val_accuracy_before - res.attempts[0].val_accuracy_pruned > 0
    if len(tolerances) == 1:        # stopped after one sharing: within budget, or pruning alone was over it
        assert tolerances == [1.0] and (res.within_budget or pruned_over)
    else:                           # sharing broke the budget: the tolerance halves, twice at most
        assert tolerances == [1.0, 0.5, 0.25][:len(tolerances)] and not pruned_over
        assert len(tolerances) == 3 or res.within_budget
    assert res.attempts[0].bit_tolerance == tolerances[-1] or res.within_budget


def test_sparse_variational_dropout_as_the_method(make_dataset):
    ds = make_dataset()
    res = compress(_mlp(7), ds, CompressConfig(method="variational", attempts=1, bit_widths="fixed", **FAST),
                   {"lr": 0.05, "augment": False})
    att = res.attempts[0]
    assert res.scan is None and att.target == att.sparsity and 0 < att.sparsity < 1
    assert set(res.model.state_dict()) >= {"fc1.weight_mask", "fc2.weight_mask"}
    assert not any(k.endswith("_log_sigma2") for k in res.model.state_dict())


@pytest.mark.parametrize("bad", [dict(bit_widths="mixed"), dict(bit_tolerance=-1.0), dict(bit_se=-1.0), dict(method="l0"),
                                 dict(allocation="random"), dict(sparsity=1.0), dict(attempts=0),
                                 dict(fc_bits=12), dict(max_drop=-1), dict(prune_lr=0.0), dict(kd_alpha=1.5),
                                 dict(kd_temperature=0.0), dict(val_size=0), dict(val_size=-5), dict(val_size=2.0)])
def test_bad_config(bad):
    with pytest.raises(ConfigError):
        CompressConfig(**bad).check()


def test_compress_prunes_the_default_targets_or_the_globs(make_dataset):
    """The output layer (fc3) is neither scanned nor pruned unless included; k-means still shares it."""
    ds = make_dataset()
    fast = dict(FAST, prune_epochs=0, centroid_epochs=0)
    res = compress(_mlp(), ds, CompressConfig(sparsity=0.8, attempts=1, allocation="sensitivity", **fast),
                   {"lr": 0.05, "augment": False})
    assert set(res.scan["layers"]) == set(res.layers) == {"fc1.weight", "fc2.weight"}
    assert {k for k in res.bits if "." not in k} == {"fc1", "fc2", "fc3"}
    res = compress(_mlp(), ds, CompressConfig(sparsity=0.8, attempts=1, include=("fc3",), exclude=("fc1",),
                                              allocation="sensitivity", **fast),
                   {"lr": 0.05, "augment": False})
    assert set(res.scan["layers"]) == set(res.layers) == {"fc2.weight", "fc3.weight"}
    with pytest.raises(ConfigError, match="exclude glob 'fc9'"):
        compress(_mlp(), ds, CompressConfig(exclude=("fc9",), **fast))


# ----------------------------------------------------------------------------- compress_file's output folder

def _model_file(tmp_path, write_npz) -> tuple[str, str]:
    from deepshrink.io import ModelInfo, save_model
    spec = write_npz(tmp_path / "tiny.npz", n_train=32, n_test=16, hw=8, classes=4)
    path = tmp_path / "m.safetensors"
    save_model(_mlp(), path, ModelInfo(arch="lenet300", kwargs={"in_features": 64, "num_classes": 4},
                                       input_shape=[1, 8, 8], data=spec))
    return str(path), spec


def test_a_failed_load_leaves_no_output_folder(tmp_path, write_npz):
    from deepshrink.compress import compress_file
    from deepshrink.errors import DeepShrinkError
    src, _ = _model_file(tmp_path, write_npz)
    out = tmp_path / "new" / "sub" / "m.dsz"
    with pytest.raises(DeepShrinkError, match="missing.safetensors"):
        compress_file(str(tmp_path / "missing.safetensors"), str(out), CompressConfig(**FAST))
    with pytest.raises(DeepShrinkError, match="nothere.npz"):
        compress_file(src, str(out), CompressConfig(**FAST), data_spec=f"npz:{tmp_path / 'nothere.npz'}")
    assert not (tmp_path / "new").exists()


def test_an_output_under_a_file_is_refused_before_anything_loads(tmp_path):
    from deepshrink.compress import compress_file
    (tmp_path / "afile").write_text("")
    with pytest.raises(ConfigError, match="afile is a file, not a folder"):   # not the missing model
        compress_file(str(tmp_path / "missing.safetensors"), str(tmp_path / "afile" / "x" / "m.dsz"))


def test_the_output_folder_exists_before_the_fine_tuning(tmp_path, write_npz, monkeypatch):
    from deepshrink import compress as compress_module
    src, _ = _model_file(tmp_path, write_npz)
    out = tmp_path / "new" / "m.dsz"
    seen = []

    def spy(*args, **kwargs):  # stands in for the long part: was the folder there when it began?
        seen.append(out.parent.is_dir())
        raise KeyboardInterrupt

    monkeypatch.setattr(compress_module, "compress", spy)
    with pytest.raises(KeyboardInterrupt):
        compress_module.compress_file(src, str(out), CompressConfig(**{**FAST, "val_size": 8}))
    assert seen == [True]


class _UserCNN(torch.nn.Module):
    """A model no one in the zoo wrote: conv + BatchNorm + two Linear layers, and a data-dependent
    branch that torch.fx cannot trace."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 6, 3)
        self.bn = torch.nn.BatchNorm2d(6)
        self.fc = torch.nn.Linear(6 * 6 * 6, 16)
        self.out = torch.nn.Linear(16, 4)

    def forward(self, x):                                    # (N, 1, 8, 8) -> (N, 4)
        h = torch.relu(self.bn(self.conv(x))).flatten(1)
        if h.sum() > -1e9:                                   # data-dependent: no fx graph
            h = torch.relu(self.fc(h))
        return self.out(h)


def test_the_labelled_defaults_on_a_user_model(make_dataset, capsys):
    from deepshrink.codec.container import MAX_ELEMENTS, parse_file
    from deepshrink.codec.model_io import decode_file, dumps
    from deepshrink.io import ModelInfo
    torch.manual_seed(0)
    ds = make_dataset()
    res = compress(_UserCNN(), ds, CompressConfig(sparsity=0.8, attempts=1, **dict(FAST, verbose=True)),
                   {"lr": 0.05, "augment": False})
    assert "dead units kept: cannot trace _UserCNN" in capsys.readouterr().out      # said, not raised
    assert res.attempts[0].dead_removed == {}
    assert set(res.bits) == {"conv", "fc", "out", "conv.bias", "fc.bias", "out.bias"}   # BatchNorm stays fp32
    assert not hasattr(res.model.bn, "bias_codebook")
    info = ModelInfo(arch="none", input_shape=[1, 8, 8])
    blob = dumps(res.model, info)                    # the .dsz bytes decode to the same tensors, bit for bit
    state = decode_file(parse_file(blob, "<test>", MAX_ELEMENTS)).state
    for name, t in res.model.state_dict().items():
        assert torch.equal(state[name], t), name
    assert len(blob) < sum(t.numel() * 4 for t in _UserCNN().state_dict().values())

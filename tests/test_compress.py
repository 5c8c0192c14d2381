"""The Deep Compression pipeline on tiny data, in memory (the command: tests/cli/test_compress.py)."""

import json

import pytest
import torch

from deepshrink.compress import CompressConfig, compress
from deepshrink.errors import ConfigError
from deepshrink.models import build
from deepshrink.quant import quantized_layers

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(prune_epochs=2, centroid_epochs=1, scan_size=64, progress=False, verbose=False)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return build("lenet300", in_features=64, num_classes=4)


@pytest.mark.parametrize("allocation", ["sensitivity", "global"])
def test_compress_prunes_and_shares(make_dataset, allocation):
    ds = make_dataset()
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = compress(model, ds, CompressConfig(sparsity=0.8, allocation=allocation, attempts=1, **FAST),
                   {"lr": 0.05, "augment": False})
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())   # input untouched
    assert res.attempts[0].sparsity == pytest.approx(0.8, abs=0.01)
    assert (res.scan is not None) == (allocation == "sensitivity")
    assert res.scan_on == ("-" if allocation == "global" else "the last 64 training images")
    layers = quantized_layers(res.model)
    assert set(layers) == {"fc1", "fc2", "fc3"} and res.bits == {"fc1": 5, "fc2": 5, "fc3": 5}
    for mod in layers.values():
        nz = mod.weight[mod.weight != 0]
        assert bool(torch.isin(nz, mod.weight_codebook).all()) and mod.weight_codebook.numel() <= 32
    d = res.to_dict()
    json.dumps(d)
    assert d["within_budget"] == ((res.accuracy_before - res.accuracy_after) * 100 <= 0.5)


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
    else:  # one pass over the training split for every attempt and both fine-tunings
        assert builds == [len(ds.train)] and calls["misses"] == 0


@pytest.mark.parametrize("bad", [dict(allocation="random"), dict(sparsity=1.0), dict(attempts=0),
                                 dict(fc_bits=12), dict(max_drop=-1), dict(prune_lr=0.0), dict(kd_alpha=1.5),
                                 dict(kd_temperature=0.0)])
def test_bad_config(bad):
    with pytest.raises(ConfigError):
        CompressConfig(**bad).check()

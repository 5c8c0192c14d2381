"""Cached teacher logits: found by content whatever the batch order, rank share or memory
format, exactly equal to fresh teacher logits; augmented images fall back to the teacher."""

import pytest
import torch
from torch import nn

from deepshrink.data import Split, iterate_batches
from deepshrink.distill.cache import (LogitCache, TeacherTargets, build_logit_cache, cached_teacher_logits,
                                      fingerprint, load_logit_cache)
from deepshrink.errors import FormatError

pytestmark = pytest.mark.usefixtures("one_thread")


def conv_teacher(classes=4):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, classes)).eval()


@pytest.fixture(scope="module")
def ds(make_dataset):
    return make_dataset(n_train=300, n_test=32)


def test_fingerprint_depends_only_on_the_image(ds):
    x = ds.train.x
    keys = fingerprint(x)
    assert keys.shape == (len(x),) and keys.dtype == torch.int64
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    assert torch.equal(fingerprint(x[perm]), keys[perm])                     # any batch composition
    assert torch.equal(fingerprint(x.contiguous(memory_format=torch.channels_last)), keys)
    assert torch.equal(fingerprint(x[:7]), keys[:7])
    assert len(set(keys.tolist())) == len(x)                                 # distinct images, distinct keys
    y = x[:1].clone()
    y.view(-1)[5] = torch.nextafter(y.view(-1)[5], torch.tensor(10.0))      # one ulp changes the key
    assert fingerprint(y)[0] != keys[0]


@pytest.mark.parametrize("rank,world", [(0, 1), (1, 2)])
def test_cached_logits_equal_fresh_teacher_logits_in_shuffled_batches(ds, rank, world):
    teacher = conv_teacher()
    targets = TeacherTargets(None, build_logit_cache(teacher, ds.train, batch_size=64))
    seen = 0
    for epoch in range(2):
        for x, _ in iterate_batches(ds.train, 32, shuffle=True, seed=3, epoch=epoch, rank=rank, world=world):
            x = x.contiguous(memory_format=torch.channels_last)  # as fit hands it to a conv net
            with torch.no_grad():
                fresh = teacher(x)
            assert torch.allclose(targets(x), fresh, atol=1e-5)
            seen += len(x)
    assert targets.hits == seen and targets.misses == 0


def test_augmented_images_miss_and_are_computed_live(ds):
    teacher = conv_teacher()
    cache = build_logit_cache(teacher, ds.train)
    x, _ = next(iterate_batches(ds.train, 40, shuffle=True, seed=0, augment=True))
    targets = TeacherTargets(teacher, cache)
    with torch.no_grad():
        fresh = teacher(x)
    assert torch.allclose(targets(x), fresh, atol=1e-5)
    assert targets.misses > 0 and targets.hits + targets.misses == 40  # an unshifted, unflipped image may hit
    with pytest.raises(FormatError, match="not in the logit cache"):
        TeacherTargets(None, cache)(x + 1.0)


def test_a_fingerprint_collision_is_caught_by_the_image_check(ds):
    teacher = conv_teacher()
    split = ds.train.take(10)
    logits = build_logit_cache(teacher, split).logits
    fake_keys = torch.zeros(10, dtype=torch.int64)  # every image "collides"
    cache = LogitCache(split, logits, keys=fake_keys)
    got, hit = cache.lookup(split.x[3:4])
    assert hit.tolist() == [False] or torch.equal(got, logits[3:4])  # never a wrong row


def test_file_round_trip_and_refusal_of_other_data(ds, tmp_path):
    teacher = conv_teacher()
    path = tmp_path / "c" / "teacher.safetensors"
    cache, loaded = cached_teacher_logits(teacher, ds.train, path, meta={"sha256": "x"})
    assert not loaded and path.is_file()
    again, loaded = cached_teacher_logits(teacher, ds.train, path)
    assert loaded and torch.equal(again.logits, cache.logits)
    x, _ = next(iterate_batches(ds.train, 16, shuffle=True, seed=5))
    assert torch.equal(again.lookup(x)[0], cache.lookup(x)[0])
    other = Split(ds.train.x + 0.5, ds.train.y)
    assert load_logit_cache(path, other) is None                  # other images: recompute
    assert load_logit_cache(path, ds.train.take(10)) is None      # other size
    assert load_logit_cache(tmp_path / "none.safetensors", ds.train) is None
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(FormatError):
        load_logit_cache(tmp_path / "bad.safetensors", ds.train)
    with pytest.raises(FormatError):
        LogitCache(ds.train, cache.logits[:5])


class _Bar:
    """Stands in for tqdm: records what a bar was made for and how far it got."""

    made: list = []

    def __init__(self, total=None, desc=None, disable=False, **_):
        self.total, self.desc, self.disable, self.n = total, desc, disable, 0
        _Bar.made.append(self)

    def update(self, n=1):
        self.n += n

    def close(self):
        pass


@pytest.mark.parametrize("progress", [True, False])
def test_building_the_cache_shows_a_bar_over_every_image_unless_told_not_to(ds, monkeypatch, progress):
    import deepshrink.train
    monkeypatch.setattr(deepshrink.train, "tqdm", _Bar)
    _Bar.made.clear()
    cache = build_logit_cache(conv_teacher(), ds.train, batch_size=128, progress=progress)
    assert len(cache.logits) == len(ds.train)
    [bar] = _Bar.made
    assert bar.desc == "teacher logits" and bar.total == bar.n == len(ds.train) and bar.disable is not progress

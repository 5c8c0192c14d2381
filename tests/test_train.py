"""deepshrink.train: LR schedule, config checks, fit/evaluate/fine_tune, exact resume, DDP."""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

from deepshrink import models
from deepshrink.data import Dataset, Split
from deepshrink.errors import ConfigError, FormatError, TrainingError
from deepshrink.train import TrainConfig, evaluate, fine_tune, fit, lr_at, predict



# ----------------------------------------------------------------------------- fixtures

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ds(make_dataset) -> Dataset:
    return make_dataset(n_train=512, n_test=128)


def mlp(seed=0, dropout=0.2) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("lenet300", in_features=64, num_classes=4, dropout=dropout)


class TinyConv(nn.Module):
    """Conv + BN + dropout: channels-last, BN buffers and RNG all matter for resuming."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * 4 * 4, 4))

    def forward(self, x):
        return self.head(self.features(x))


def conv(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return TinyConv()


def quiet(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=64, lr=0.05, augment=False, progress=False, verbose=False)
    return TrainConfig(**{**base, **kw})


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs"


# ----------------------------------------------------------------------------- lr_at

def test_lr_warmup_is_linear():
    assert [lr_at(s, 100, 0.4, warmup=4) for s in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert lr_at(0, 100, 1.0, warmup=1) == 1.0


def test_lr_cosine_endpoints_and_midpoint():
    assert lr_at(0, 100, 0.1) == pytest.approx(0.1)
    assert lr_at(50, 100, 0.1) == pytest.approx(0.05)
    assert lr_at(100, 100, 0.1) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(250, 100, 0.1) == pytest.approx(0.0, abs=1e-12)  # clamped past the end
    lrs = [lr_at(s, 100, 0.1) for s in range(100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert all(0 < v <= 0.1 for v in lrs)
    # with warm-up, the cosine starts at the base rate right after it
    assert lr_at(10, 110, 0.1, warmup=10) == pytest.approx(0.1)
    assert lr_at(60, 110, 0.1, warmup=10) == pytest.approx(0.05)
    assert lr_at(9, 110, 0.1, warmup=10) == pytest.approx(0.1)


def test_lr_constant():
    assert all(lr_at(s, 50, 0.02, schedule="constant") == 0.02 for s in range(60))
    assert lr_at(1, 50, 0.02, warmup=4, schedule="constant") == pytest.approx(0.01)
    assert lr_at(4, 50, 0.02, warmup=4, schedule="constant") == 0.02
    assert lr_at(7, 5, 0.3, warmup=5) == 0.3  # total <= warmup: no decay


# ----------------------------------------------------------------------------- TrainConfig.check

@pytest.mark.parametrize("kw", [
    dict(epochs=-1), dict(batch_size=0), dict(optimizer="rmsprop"), dict(schedule="step"),
    dict(lr=0.0), dict(lr=-0.1), dict(lr=float("nan")), dict(label_smoothing=1.0),
    dict(label_smoothing=-0.1),
])
def test_config_check_errors(kw, ds):
    cfg = TrainConfig(**kw)
    with pytest.raises(ConfigError):
        cfg.check()
    with pytest.raises(ConfigError):
        fit(mlp(), ds, TrainConfig(**{**dict(progress=False, verbose=False), **kw}))


def test_config_defaults_pass():
    TrainConfig().check()
    TrainConfig(optimizer="adam", schedule="constant", epochs=0, label_smoothing=0.1).check()


# ----------------------------------------------------------------------------- fit / evaluate

def test_fit_reaches_high_accuracy_and_is_deterministic(ds):
    # random prototypes are not shift/flip invariant: train without augmentation here
    # (dropout draws from the global RNG, which fit leaves alone: mlp() seeds it, as the CLI does)
    a = mlp(seed=1)
    ra = fit(a, ds, quiet(epochs=3, seed=7))
    b = mlp(seed=1)
    rb = fit(b, ds, quiet(epochs=3, seed=7))
    assert ra.accuracy >= 0.95, ra.history
    assert ra.accuracy == evaluate(a, ds)
    assert [h["epoch"] for h in ra.history] == [1, 2, 3]
    assert ra.history[-1]["loss"] < ra.history[0]["loss"]
    assert ra.resumed_from is None
    assert_same_state(a, b)
    assert rb.history[-1]["loss"] == ra.history[-1]["loss"]
    # with augmentation (and dropout) too
    a = mlp(seed=1)
    fit(a, ds, quiet(epochs=1, augment=True, seed=7))
    b = mlp(seed=1)
    fit(b, ds, quiet(epochs=1, augment=True, seed=7))
    assert_same_state(a, b)
    # another seed gives another run
    c = mlp(seed=1)
    fit(c, ds, quiet(epochs=1, augment=True, seed=8))
    d = mlp(seed=1)
    fit(d, ds, quiet(epochs=1, augment=True, seed=7))
    assert not torch.equal(c.fc1.weight, d.fc1.weight)


def test_fit_conv_model_adam(ds):
    model = conv()
    res = fit(model, ds, quiet(epochs=3, optimizer="adam", lr=0.01, weight_decay=0.0))
    assert res.accuracy >= 0.9, res.history


def test_callbacks_once_per_step(ds):
    seen = []
    cfg = quiet(epochs=2, batch_size=100)  # 512 / 100 -> 6 steps per epoch, the last one short
    fit(mlp(), ds, cfg, callbacks=[lambda m, info: seen.append(info)])
    assert [s.global_step for s in seen] == list(range(1, 13))
    assert [s.step for s in seen] == list(range(6)) * 2
    assert [s.epoch for s in seen] == [0] * 6 + [1] * 6
    assert all(s.total_steps == 12 and math.isfinite(s.loss) for s in seen)


def test_eval_every_and_zero_epochs(ds):
    res = fit(mlp(), ds, quiet(epochs=3, eval_every=2))
    assert [h["accuracy"] is None for h in res.history] == [True, False, False]
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = fit(model, ds, quiet(epochs=0))
    assert res.history == [] and 0.0 <= res.accuracy <= 1.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_params_and_loss_fn(ds):
    model = mlp()
    fc1 = model.fc1.weight.detach().clone()
    fc3 = model.fc3.weight.detach().clone()
    calls = []

    def loss_fn(m, logits, x, y):
        calls.append(len(y))
        return nn.functional.cross_entropy(logits, y)

    fit(model, ds, quiet(epochs=1), loss_fn=loss_fn, params=model.fc3.parameters())
    assert torch.equal(model.fc1.weight, fc1)  # not given to the optimizer
    assert not torch.equal(model.fc3.weight, fc3)
    assert len(calls) == 8 and sum(calls) == 512


def test_diverging_loss_stops_with_a_clear_error_before_touching_the_weights(ds):
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []

    def loss_fn(m, logits, x, y):
        calls.append(1)
        loss = nn.functional.cross_entropy(logits, y)
        return loss if len(calls) < 3 else loss * float("nan")

    with pytest.raises(TrainingError, match=r"diverged: the loss is nan at epoch 1, step 3 \(LR"):
        fit(model, ds, quiet(epochs=1), loss_fn=loss_fn)
    after = model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())  # two good steps, no NaN step
    assert not torch.equal(after["fc1.weight"], before["fc1.weight"])


def test_evaluate_and_predict(ds):
    model = mlp()
    model.train()
    acc = evaluate(model, ds)
    assert 0.0 <= acc <= 1.0
    assert acc == evaluate(model, ds.test)
    assert model.training  # predict restores the mode
    logits = predict(model, ds.test.x, batch_size=50)
    assert logits.shape == (128, 4)
    assert math.isnan(evaluate(model, Split(ds.test.x[:0], ds.test.y[:0])))


def test_fine_tune_with_overrides(ds):
    model = mlp()
    fit(model, ds, quiet(epochs=1))
    res = fine_tune(model, ds, epochs=1, lr=0.005, augment=False, progress=False, verbose=False)
    assert len(res.history) == 1 and 0.0 <= res.accuracy <= 1.0
    res = fine_tune(model, ds, quiet(epochs=2), epochs=1, schedule="constant")
    assert len(res.history) == 1
    with pytest.raises(ConfigError):
        fine_tune(model, ds, lr=-1.0, progress=False, verbose=False)
    with pytest.raises(TypeError):
        fine_tune(model, ds, no_such_option=1)


# ----------------------------------------------------------------------------- resume

class Killed(Exception):
    pass


def _kill_at(step):
    def cb(model, info):
        if info.global_step == step:
            raise Killed(step)
    return cb


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_resume_is_bit_identical(tmp_path, ds, arch):
    build = mlp if arch == "mlp" else conv
    # A: uninterrupted, with a checkpoint at each epoch end
    a = build(seed=3)
    res_a = fit(a, ds, quiet(augment=True, seed=5, checkpoint=str(tmp_path / "a.state")))
    assert (tmp_path / "a.state").is_file()
    # B: checkpoints every 3 steps; killed at step 11 (8 steps per epoch: last checkpoint at 9)
    ckpt = str(tmp_path / "b.state")
    cfg_b = quiet(augment=True, seed=5, checkpoint=ckpt, checkpoint_every=3)
    b = build(seed=3)
    with pytest.raises(Killed):
        fit(b, ds, cfg_b, callbacks=[_kill_at(11)])
    assert os.path.isfile(ckpt)
    # a fresh process would start from other weights and another global RNG state
    torch.manual_seed(999)
    torch.rand(17)
    resumed_steps = []
    c = build(seed=4)
    res_c = fit(c, ds, cfg_b, callbacks=[lambda m, info: resumed_steps.append(info.global_step)])
    assert res_c.resumed_from == 9
    assert resumed_steps == list(range(10, 17))
    assert_same_state(a, c)
    assert [h["epoch"] for h in res_c.history] == [1, 2]
    assert res_c.history[0]["loss"] == pytest.approx(res_a.history[0]["loss"])
    assert res_c.history[1]["loss"] == pytest.approx(res_a.history[1]["loss"])
    assert res_c.accuracy == res_a.accuracy
    # resuming a finished run trains nothing and keeps the result
    d = build(seed=4)
    res_d = fit(d, ds, cfg_b, callbacks=[lambda m, info: pytest.fail("no step expected")])
    assert_same_state(a, d)
    assert res_d.accuracy == res_a.accuracy


def test_resume_at_epoch_boundary(tmp_path, ds):
    a = mlp(seed=3)
    fit(a, ds, quiet(augment=True, seed=5))
    cfg = quiet(augment=True, seed=5, checkpoint=str(tmp_path / "s.state"))
    with pytest.raises(Killed):
        fit(mlp(seed=3), ds, cfg, callbacks=[_kill_at(10)])  # last checkpoint: end of epoch 1
    c = mlp(seed=4)
    res = fit(c, ds, cfg)
    assert res.resumed_from == 8
    assert_same_state(a, c)


@pytest.mark.parametrize("change", [dict(lr=0.01), dict(seed=6), dict(batch_size=32), dict(epochs=3),
                                    dict(augment=False)])
def test_checkpoint_with_other_settings_is_config_error(tmp_path, ds, change):
    ckpt = str(tmp_path / "s.state")
    fit(mlp(), ds, quiet(epochs=1, augment=True, seed=5, checkpoint=ckpt))
    cfg = quiet(**{**dict(epochs=1, augment=True, seed=5, checkpoint=ckpt), **change})
    with pytest.raises(ConfigError, match="s.state"):
        fit(mlp(), ds, cfg)


def test_corrupt_checkpoint_is_format_error(tmp_path, ds):
    ckpt = tmp_path / "s.state"
    ckpt.write_bytes(b"not a training state")
    with pytest.raises(FormatError, match="s.state"):
        fit(mlp(), ds, quiet(epochs=1, checkpoint=str(ckpt)))


def test_checkpoint_for_other_data_is_config_error(tmp_path, ds):
    ckpt = str(tmp_path / "s.state")
    fit(mlp(), ds, quiet(epochs=1, checkpoint=ckpt))
    smaller = Dataset(ds.name, ds.train.take(256), ds.test, ds.mean, ds.std, ds.num_classes)
    with pytest.raises(ConfigError):
        fit(mlp(), smaller, quiet(epochs=1, checkpoint=ckpt))


# ----------------------------------------------------------------------------- DDP

_DDP_SCRIPT = r"""
from deepshrink import models
from deepshrink.train import TrainConfig, fit

out = sys.argv[1]
ds = synthetic_dataset()

rank = int(os.environ["RANK"])
torch.manual_seed(100 + rank)  # other initial weights on each rank: DDP must broadcast rank 0's
model = models.build("lenet300", in_features=64, num_classes=4)
steps = []
cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, augment=True, seed=0, progress=False, verbose=False)
res = fit(model, ds, cfg, callbacks=[lambda m, info: steps.append((info.global_step, info.total_steps))])
torch.save({"state": model.state_dict(), "world": dist.get_world_size(), "rank": dist.get_rank(),
            "steps": steps, "accuracy": res.accuracy}, os.path.join(out, f"rank{rank}.pt"))
finish()
"""


@pytest.mark.timeout(180)
def test_ddp_two_ranks_train_identical_weights(tmp_path, torchrun_two_ranks):
    torchrun_two_ranks(_DDP_SCRIPT, tmp_path)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert (r0["world"], r0["rank"], r1["world"], r1["rank"]) == (2, 0, 2, 1)
    # 256 images / 2 ranks / batch 32 = 4 steps per epoch on each rank, not 8
    assert r0["steps"] == r1["steps"] == [(s, 8) for s in range(1, 9)]
    assert r0["state"].keys() == r1["state"].keys()
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert 0.0 <= r0["accuracy"] <= 1.0


_DDP_NAN_SCRIPT = r"""
from torch import nn
from deepshrink import models
from deepshrink.errors import TrainingError
from deepshrink.train import TrainConfig, fit

out = sys.argv[1]
ds = synthetic_dataset()
rank = int(os.environ["RANK"])
calls = []
def loss_fn(m, logits, x, y):  # only rank 0 turns NaN, at its third step
    calls.append(1)
    loss = nn.functional.cross_entropy(logits, y)
    return loss * float("nan") if rank == 0 and len(calls) == 3 else loss
model = models.build("lenet300", in_features=64, num_classes=4)
try:
    fit(model, ds, TrainConfig(epochs=1, batch_size=32, augment=False, progress=False, verbose=False), loss_fn=loss_fn)
    msg = "no error"
except TrainingError as exc:
    msg = str(exc)
open(os.path.join(out, f"rank{rank}.txt"), "w").write(msg)
finish()
"""


@pytest.mark.timeout(180)
def test_ddp_a_nan_on_one_rank_stops_every_rank(tmp_path, torchrun_two_ranks):
    torchrun_two_ranks(_DDP_NAN_SCRIPT, tmp_path)
    for rank in (0, 1):  # both stop at the same step instead of rank 1 waiting in the all-reduce
        assert "diverged" in (tmp_path / f"rank{rank}.txt").read_text()
        assert "step 3" in (tmp_path / f"rank{rank}.txt").read_text()
    assert "the loss is nan" in (tmp_path / "rank0.txt").read_text()
    assert "another rank's loss" in (tmp_path / "rank1.txt").read_text()


def test_fit_seeds_the_global_rng_so_dropout_does_not_depend_on_the_caller(ds):
    results = []
    for outside_seed in (1, 2):
        model = mlp(seed=0, dropout=0.5)        # same initial weights
        torch.manual_seed(outside_seed)        # whatever the caller's RNG state is
        fit(model, ds, quiet(seed=3))
        results.append(model.state_dict())
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key
    other = mlp(seed=0, dropout=0.5)
    fit(other, ds, quiet(seed=4))               # another seed: other dropout masks and order
    assert not torch.equal(other.fc1.weight, results[0]["fc1.weight"])

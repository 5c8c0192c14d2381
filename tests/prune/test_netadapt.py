"""The NetAdapt loop with injected, deterministic latencies (MAC-proportional fakes): the pure
maths, stopping at the target, the score choosing the proposal, the plan against a hand-cut
oracle, the table cache reused, and bad settings refused."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.prune.latency_table import LayerSpec, layer_specs
from deepshrink.prune.netadapt import NetAdaptConfig, choose_count, layer_channels, netadapt, predict_ms
from deepshrink.prune.plan import apply_plan

MS_PER_MAC = 1e-6


class Chain(nn.Module):
    """conv -> BN -> ReLU -> conv -> ReLU -> pool -> linear: two prunable groups."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 24, 3, padding=1)
        self.fc = nn.Linear(24 * 4 * 4, 5)

    def forward(self, x):                                   # (N, 3, 8, 8)
        x = torch.relu(self.bn1(self.conv1(x)))             # (N, 16, 8, 8)
        x = torch.relu(self.conv2(x))                       # (N, 24, 8, 8)
        x = nn.functional.max_pool2d(x, 2)                  # (N, 24, 4, 4)
        return self.fc(torch.flatten(x, 1))                 # (N, 5)


class Residual(nn.Module):
    """A residual add couples conv1's and conv3's outputs into one group."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 12, 3, padding=1)
        self.conv3 = nn.Conv2d(12, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        a = torch.relu(self.conv1(x))
        b = self.conv3(torch.relu(self.conv2(a)))
        return self.fc((a + b).mean((2, 3)))


def _model(cls, seed=0):
    torch.manual_seed(seed)
    m = cls()
    for p in m.parameters():                    # non-uniform norms, so the criterion has something to rank
        p.data.mul_(torch.rand_like(p) * 2)
    if hasattr(m, "bn1"):
        m.bn1.running_mean.uniform_(-0.2, 0.2)
        m.bn1.running_var.uniform_(0.5, 1.5)
    return m.eval()


def fake_layer_ms(spec: LayerSpec) -> float:
    return spec.macs * MS_PER_MAC


def fake_measure(x):
    """Whole-model 'latency': the MACs of its conv/linear layers, so the table predicts it exactly."""
    return lambda model: sum(s.macs for s in layer_specs(model, x).values()) * MS_PER_MAC


def _run(model, x, tmp_path, score=None, **kw):
    cfg = NetAdaptConfig(kw.pop("latency_target", 0.5), cache_dir=str(tmp_path), **kw)
    score = score or (lambda m: 0.0)
    return netadapt(model, x, cfg, score, measure=fake_measure(x), measure_layer_ms=fake_layer_ms)


def test_choose_count_skips_counts_that_save_too_little():
    # 28 channels saves nothing (off the blocked kernel), 24 a little, 16 enough
    pred = {28: 10.0, 24: 9.9, 20: 9.5, 16: 7.0, 8: 5.0}
    assert choose_count(pred, 10.0, 2.0) == 16
    assert choose_count(pred, 10.0, 0.05) == 24
    assert choose_count(pred, 10.0, 6.0) is None
    assert predict_ms({"a": 1.0, "b": 2.5}, 0.5) == 4.0


def test_layer_channels_follow_the_groups():
    x = torch.randn(1, 3, 8, 8)
    specs = layer_specs(Chain(), x)
    layout = {("conv1", "out"): [("conv1", 1)], ("conv2", "in"): [("conv1", 1)],
              ("conv2", "out"): [("conv2", 1)], ("fc", "in"): [("conv2", 16)]}      # flatten: 4*4 columns each
    shapes = layer_channels(specs, layout, {"conv1": 16, "conv2": 24}, {"conv1": 8, "conv2": 20})
    assert (shapes["conv1"].out_channels, shapes["conv2"].in_channels, shapes["conv2"].out_channels) == (8, 8, 20)
    assert shapes["fc"].in_channels == 20 * 16 and shapes["fc"].input_shape == (1, 320)


def test_stops_at_the_target_and_predicts_exactly(tmp_path):
    model, x = _model(Chain), torch.randn(2, 3, 8, 8)
    res = _run(model, x, tmp_path, latency_target=0.5, step=0.1)
    assert res.reached and res.latency_after_ms <= res.target_ms == pytest.approx(0.5 * res.latency_before_ms)
    assert all(it["measured_ms"] > res.target_ms for it in res.iterations[:-1])   # it stopped once there
    assert res.iterations[-1]["measured_ms"] == res.latency_after_ms
    measured = [res.latency_before_ms] + [it["measured_ms"] for it in res.iterations]
    assert all(a > b for a, b in zip(measured, measured[1:]))
    assert res.predicted_after_ms == pytest.approx(res.latency_after_ms)     # residual 0 for this fake
    assert res.macs_after < res.macs_before and res.params_after < res.params_before
    assert set(res.channels) == {"conv1", "conv2"} and res.table_measured > 0
    assert res.summary()["latency_ratio"] == pytest.approx(res.latency_after_ms / res.latency_before_ms)
    for name, (before, after) in res.channels.items():
        assert after == before or after % 4 == 0 or after == 1
    assert all(p.requires_grad for p in model.parameters()) and model.conv1.out_channels == 16   # original intact


def test_plan_equals_hand_cut_oracle(tmp_path):
    model, x = _model(Chain), torch.randn(2, 3, 8, 8)
    res = _run(model, x, tmp_path, latency_target=0.6, step=0.15)
    keep1 = torch.tensor(res.plan.layers["conv1"]["out"]) if "conv1" in res.plan.layers else torch.arange(16)
    keep2 = torch.tensor(res.plan.layers["conv2"]["out"]) if "out" in res.plan.layers.get("conv2", {}) \
        else torch.arange(24)
    assert len(keep1) == res.channels["conv1"][1] and len(keep2) == res.channels["conv2"][1]
    # the oracle: a smaller Chain built by hand from the kept indices
    small = copy.deepcopy(model)
    small.conv1 = nn.Conv2d(3, len(keep1), 3, padding=1)
    small.conv1.weight.data, small.conv1.bias.data = model.conv1.weight[keep1], model.conv1.bias[keep1]
    small.bn1 = nn.BatchNorm2d(len(keep1)).eval()
    for t in ("weight", "bias", "running_mean", "running_var"):
        getattr(small.bn1, t).data = getattr(model.bn1, t)[keep1].clone()
    small.conv2 = nn.Conv2d(len(keep1), len(keep2), 3, padding=1)
    small.conv2.weight.data = model.conv2.weight[keep2][:, keep1]
    small.conv2.bias.data = model.conv2.bias[keep2]
    cols = (keep2[:, None] * 16 + torch.arange(16)).flatten()        # flatten: channel c -> columns 16c..16c+15
    small.fc = nn.Linear(len(cols), 5)
    small.fc.weight.data, small.fc.bias.data = model.fc.weight[:, cols], model.fc.bias.clone()
    probe = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(res.model(probe), small(probe))
        torch.testing.assert_close(apply_plan(copy.deepcopy(model), res.plan)(probe), small(probe))


def test_residual_group_and_plan_replay(tmp_path):
    model, x = _model(Residual), torch.randn(1, 3, 8, 8)
    res = _run(model, x, tmp_path, latency_target=0.7, step=0.1)
    assert res.reached and set(res.channels) == {"conv1", "conv2"}      # conv1 + conv3 are one group
    replayed = apply_plan(copy.deepcopy(model), res.plan)
    assert replayed.conv1.out_channels == replayed.conv3.out_channels == res.channels["conv1"][1]
    probe = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(replayed(probe), res.model(probe))


def test_score_chooses_the_proposal(tmp_path):
    model, x = _model(Chain), torch.randn(1, 3, 8, 8)
    # the caller's score prefers conv2 whole: conv1's group is cut while it can still save a step
    res = _run(model, x, tmp_path, score=lambda m: float(m.conv2.out_channels), latency_target=0.8, step=0.05)
    assert res.iterations[0]["group"] == "conv1" and res.iterations[0]["proposals"] == 2
    res2 = _run(model, x, tmp_path, score=lambda m: float(m.conv1.out_channels), latency_target=0.8, step=0.05)
    assert res2.iterations[0]["group"] == "conv2"


def test_table_reused_from_cache(tmp_path):
    model, x = _model(Chain), torch.randn(1, 3, 8, 8)
    first = _run(model, x, tmp_path, latency_target=0.5, step=0.1, threads=1)
    second = _run(model, x, tmp_path, latency_target=0.5, step=0.1, threads=1)
    assert first.table_measured > 0 and second.table_measured == 0 and second.table_path == first.table_path
    assert second.channels == first.channels and second.plan == first.plan
    assert _run(model, x, tmp_path, latency_target=0.5, step=0.1, threads=3).table_measured > 0   # another key


def test_unreachable_target_is_reported_not_raised(tmp_path):
    model, x = _model(Chain), torch.randn(1, 3, 8, 8)
    res = _run(model, x, tmp_path, latency_target=0.05, step=0.2, min_channels=12)
    assert not res.reached and res.latency_after_ms > res.target_ms
    assert res.channels["conv1"][1] >= 12 and res.channels["conv2"][1] >= 12


@pytest.mark.parametrize("kw, match", [({"latency_target": 0.0}, "latency target"),
                                       ({"latency_target": 1.0}, "latency target"),
                                       ({"latency_target": -0.5}, "latency target"),
                                       ({"latency_target": 0.5, "runtime": "onnxruntime"}, "runtime"),
                                       ({"latency_target": 0.5, "step": 0.0}, "step"),
                                       ({"latency_target": 0.5, "threads": 0}, "threads")])
def test_bad_settings_refused(tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match) as err:
        _run(_model(Chain), torch.randn(1, 3, 8, 8), tmp_path, **kw)
    assert "\n" not in str(err.value)


def test_no_iteration_cuts_more_than_max_cut_and_groups_keep_min_keep(tmp_path):
    model, x = _model(Chain), torch.randn(2, 3, 8, 8)
    res = _run(model, x, tmp_path, latency_target=0.2, step=0.5, max_cut=0.5, min_keep=0.25)
    sizes = {n: before for n, (before, _) in res.channels.items()}
    now = dict(sizes)
    for it in res.iterations:
        assert it["channels"] >= now[it["group"]] / 2                  # at most half of what it had
        assert it["channels"] >= sizes[it["group"]] * 0.25              # never under a quarter of the original
        now[it["group"]] = it["channels"]


def test_a_table_that_overshoots_the_whole_model_scales_instead_of_going_negative(tmp_path):
    model, x = _model(Chain), torch.randn(2, 3, 8, 8)
    cfg = NetAdaptConfig(latency_target=0.5, cache_dir=str(tmp_path))
    # every layer alone "takes" 3x what the whole model measures: an additive residual would be negative
    res = netadapt(model, x, cfg, lambda m: 0.0, measure=fake_measure(x),
                   measure_layer_ms=lambda s: 3 * fake_layer_ms(s))
    assert all(it["predicted_ms"] > 0 for it in res.iterations)
    assert res.predicted_after_ms == pytest.approx(res.latency_after_ms, rel=1e-6)


def test_short_term_tuning_runs_after_each_iteration_and_its_weights_are_kept(tmp_path):
    """``tune`` sees the chosen model once per iteration, before the next proposals are scored;
    the result holds the tuned weights on the plan's shapes."""
    model, x = _model(Residual), torch.randn(1, 3, 8, 8)
    seen = []

    def tune(m):                                 # a stand-in for training: a visible, cumulative change
        seen.append(m.conv1.out_channels)
        with torch.no_grad():
            m.conv2.weight.add_(1.0)
        m.to(memory_format=torch.channels_last)  # as train.fit leaves a conv net

    cfg = NetAdaptConfig(0.7, cache_dir=str(tmp_path), step=0.1)
    res = netadapt(model, x, cfg, lambda m: 0.0, measure=fake_measure(x), measure_layer_ms=fake_layer_ms, tune=tune)
    assert len(seen) == len(res.iterations) >= 2
    replayed = apply_plan(copy.deepcopy(model), res.plan)
    assert {k: v.shape for k, v in replayed.state_dict().items()} == \
        {k: v.shape for k, v in res.model.state_dict().items()}
    diff = res.model.conv2.weight - replayed.conv2.weight
    assert torch.allclose(diff, torch.full_like(diff, float(len(seen))))   # every tune kept, nothing else
    untuned = _run(model, x, tmp_path, latency_target=0.7, step=0.1)
    assert untuned.channels == res.channels     # the same counts; which channels go follows the tuned weights
    # measured and returned in the original's layout, not the one training left
    assert all(p.is_contiguous() for p in res.model.parameters())


def test_a_flat_table_falls_back_to_measured_proposals(tmp_path):
    """Per-layer times that do not move with the channel count (fixed cost, noise) predict no
    saving; the loop then measures each group's largest cut and goes on while those save."""
    model, x = _model(Residual), torch.randn(1, 3, 8, 8)
    cfg = NetAdaptConfig(0.7, cache_dir=str(tmp_path), step=0.1)
    res = netadapt(model, x, cfg, lambda m: 0.0, measure=fake_measure(x), measure_layer_ms=lambda s: 1.0)
    assert res.reached and res.latency_after_ms <= 0.7 * res.latency_before_ms
    assert res.iterations and all(it["measured"] for it in res.iterations)
    stuck = netadapt(model, x, cfg, lambda m: 0.0, measure=lambda m: 5.0, measure_layer_ms=lambda s: 1.0)
    assert not stuck.reached and stuck.iterations == []      # nothing saves when measured: it stops, reported

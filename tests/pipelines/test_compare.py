"""``compare_files``: the rows of two model files with ratios B / A, the costs of ``profile_file``, the
accuracy of ``evaluate_file``, latency timed interleaved (only its presence checked, never a value),
and the checks made before any work."""

from __future__ import annotations

import pytest
import torch

from deepshrink import models
from deepshrink.errors import ConfigError
from deepshrink.io import ModelInfo, save_model
from deepshrink.pipelines import compare_files, evaluate_file, profile_file
from deepshrink.pipelines.compare import COST_ROWS, CompareRow
from deepshrink.prune import prune_

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory, write_npz):
    """``(data spec, A: a random-weight lenet5, B: a copy with 60% of its weights pruned)``, both
    recording 28x28 npz data (seeded)."""
    root = tmp_path_factory.mktemp("compare")
    spec = write_npz(root / "d.npz", n_train=32, n_test=48)
    torch.manual_seed(0)
    model = models.build("lenet5").eval()
    info = ModelInfo(arch="lenet5", mean=[0.2], std=[0.3], data=spec)
    save_model(model, root / "a.safetensors", info)
    prune_(model, 0.6)
    save_model(model, root / "b.safetensors", info)
    return spec, root / "a.safetensors", root / "b.safetensors"


def test_ratio_is_b_over_a():
    assert CompareRow("x", "x", 4, 3).ratio == 0.75
    assert CompareRow("x", "x", 0, 3).ratio is None and CompareRow("x", "x", None, 3).ratio is None
    assert CompareRow("x", "x", 2.0, None).to_dict()["ratio"] is None


def test_rows_are_the_profile_and_the_accuracy_of_each_file(files):
    spec, a, b = files
    run = compare_files(a, b, batch_size=3, repeats=2, warmup=1, threads=1)
    for row in run.rows:
        assert row.ratio == (None if row.a in (None, 0) or row.b is None else row.b / row.a)
    for side, path in (("a", a), ("b", b)):
        totals = profile_file(path).profile.totals
        for key, _, _ in COST_ROWS:
            assert getattr(run.row(key), side) == totals[key], key
        assert getattr(run.row("file_bytes"), side) == path.stat().st_size
        assert getattr(run.row("accuracy"), side) == evaluate_file(path).accuracy
    assert run.row("params").ratio == 1.0 and run.row("nonzero_params").ratio < 0.5    # pruned, not removed
    assert run.data == {"a": spec, "b": spec} and "48 images" in run.quality
    assert run.latency["batches"] == [1, 3] and run.latency["threads"] == 1 and run.latency["interleaved"]
    for key in ("latency_ms_batch_1", "latency_ms_batch_3"):
        assert run.row(key).a > 0 and run.row(key).b > 0
    d = run.to_dict()
    assert [r["key"] for r in d["rows"]] == [r.key for r in run.rows] and d["compute"] == {"a": "fp32", "b": "fp32"}


def test_without_latency_and_at_batch_1_only(files):
    _, a, b = files
    run = compare_files(a, b, latency=False)
    assert run.latency is None and not [r for r in run.rows if r.key.startswith("latency")]
    run = compare_files(a, b, batch_size=1, repeats=1, warmup=0)
    assert run.latency["batches"] == [1] and [r.key for r in run.rows if r.key.startswith("latency")] == [
        "latency_ms_batch_1"]


def test_other_data_for_both(files, tmp_path, write_npz):
    _, a, b = files
    other = write_npz(tmp_path / "o.npz", n_train=16, n_test=20, seed=3)
    run = compare_files(a, b, data=other, latency=False)
    assert run.data == {"a": other, "b": other}
    assert run.row("accuracy").a == evaluate_file(a, data=other).accuracy


def test_different_inputs_are_refused_naming_both(files, tmp_path):
    _, a, _ = files
    wide = tmp_path / "wide.safetensors"
    save_model(models.build("lenet5"), wide, ModelInfo(arch="lenet5", input_shape=[3, 28, 28], mean=[0.0] * 3,
                                                       std=[1.0] * 3))
    with pytest.raises(ConfigError, match=r"\[1, 28, 28\].*\[3, 28, 28\].*same input"):
        compare_files(a, wide, latency=False)


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"repeats": 0}, {"warmup": -1}, {"threads": 0}])
def test_bad_settings_are_refused_before_any_file_is_read(tmp_path, kwargs):
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(ConfigError):
        compare_files(missing, missing, **kwargs)


def test_a_batch_too_large_is_refused_before_it_is_allocated(files):
    _, a, b = files
    with pytest.raises(ConfigError, match="batch size 1073741824 x input"):
        compare_files(a, b, batch_size=2 ** 30)
    assert compare_files(a, b, batch_size=2 ** 30, latency=False).latency is None   # nothing to allocate

"""The Deep Compression pipeline on tiny data: in memory, through a .dsz file, and the CLI."""

import json

import pytest
import torch

from deepshrink.cli import main
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


def test_cli_compress_decompress_evaluate(tmp_path, train_cli_model, capsys):
    root, spec, model_file = train_cli_model(tmp_path, "mlp.safetensors")
    out = tmp_path / "mlp.dsz"
    code = main(["compress", str(model_file), "--out", str(out), "--data", spec, "--prune-epochs", "1",
                 "--sparsity", "0.9", "--allocation", "global", "--attempts", "1", "--max-drop", "100",
                 "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert out.is_file() and "accuracy" in text and "Rate(P+Q+H)" in text
    report = tmp_path / "mlp.report.md"
    assert report.is_file() and (tmp_path / "mlp.weights.png").is_file()
    assert "Per-layer compression" in report.read_text()
    # the file is a model file for the other commands
    assert main(["evaluate", str(out), "--data", spec]) == 0
    capsys.readouterr()
    assert main(["profile", str(out)]) == 0
    prof = capsys.readouterr().out
    from deepshrink.codec import load_compressed
    nonzero = sum(int(torch.count_nonzero(p)) for p in load_compressed(out).parameters())
    assert "fc1" in prof and f"nonzero {nonzero:,}" in prof   # the profile of the decoded, sparse model
    back = tmp_path / "back.safetensors"
    assert main(["decompress", str(out), "--out", str(back)]) == 0
    from deepshrink.io import load_model
    a = load_compressed(out)
    b, _ = load_model(back)
    x = torch.randn(5, 1, 28, 28)
    assert torch.equal(a(x), b(x))
    assert out.stat().st_size * 10 < model_file.stat().st_size


def test_cli_errors_are_one_line(tmp_path, train_cli_model, run_error, capsys):
    _, spec, model_file = train_cli_model(tmp_path, "m.safetensors")
    assert "no such file" in run_error(capsys, ["compress", tmp_path / "missing.safetensors", "--out", tmp_path / "a.dsz"])
    assert "does not exist" in run_error(capsys, ["compress", model_file, "--out", tmp_path / "no" / "a.dsz"])
    assert "1..8" in run_error(capsys, ["compress", model_file, "--out", tmp_path / "a.dsz", "--fc-bits", "12"])
    assert not (tmp_path / "a.dsz").exists()


def test_cli_compress_with_a_teacher_file(tmp_path, train_cli_model, capsys):
    _, spec, model_file = train_cli_model(tmp_path, "mlp.safetensors")
    out = tmp_path / "kd.dsz"
    code = main(["compress", str(model_file), "--out", str(out), "--data", spec, "--prune-epochs", "1",
                 "--sparsity", "0.9", "--allocation", "global", "--attempts", "1", "--max-drop", "100",
                 "--teacher", str(model_file), "--kd-temperature", "2", "--kd-alpha", "0.5", "--lr", "0.1",
                 "--no-progress"])
    assert code == 0, capsys.readouterr().out
    from deepshrink.codec import read_compressed_info
    entry = read_compressed_info(out).history[-1]
    assert entry["op"] == "compress"
    assert entry["config"]["kd_temperature"] == 2.0 and entry["config"]["prune_lr"] == 0.1
    assert entry["teacher"] == str(model_file)


def test_cli_teacher_errors_are_one_line(tmp_path, train_cli_model, run_error, capsys):
    _, spec, model_file = train_cli_model(tmp_path, "m.safetensors")
    base = ["compress", model_file, "--out", tmp_path / "a.dsz", "--data", spec]
    assert "not both" in run_error(capsys, base + ["--distill", "--teacher", model_file])
    assert "alpha" in run_error(capsys, base + ["--teacher", model_file, "--kd-alpha", "2"])
    assert "prune_lr" in run_error(capsys, base + ["--lr", "-1"])
    assert "missing.safetensors" in run_error(capsys, base + ["--teacher", tmp_path / "missing.safetensors"])
    assert not (tmp_path / "a.dsz").exists()

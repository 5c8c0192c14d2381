"""What the pipelines say, and when: one line before each phase that takes time (then fit's
epoch lines), the PTQ accuracy before QAT, where ``prune --auto`` writes its scan, and a warning
on stderr (with a field in the result and the file) when prune-channels falls past ``max_drop``.
Tiny model (LeNet-300, 1 epoch on 256 images); no timings asserted."""

from __future__ import annotations

import pytest

from deepshrink.distill import DistillConfig
from deepshrink.io import load_model
from deepshrink.pipelines import (Finetune, QuantizeConfig, ScanConfig, StudentTraining, distill_file,
                                  prune_channels_file, prune_file, quantize_file)
from deepshrink.prune import ChannelConfig, PruneConfig
from deepshrink.quant import load_quantized

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dense(tmp_path_factory, train_cli_model):
    """``(root, data spec, model file)``: LeNet-300 trained 1 epoch through the CLI."""
    return train_cli_model(tmp_path_factory.mktemp("messages"), "dense.safetensors")


def _index(lines: list[str], start: str) -> int:
    """The first line beginning with ``start``."""
    return next(i for i, line in enumerate(lines) if line.startswith(start))


def test_prune_channels_past_max_drop_warns_on_stderr_and_records_it(dense, tmp_path, capsys):
    _, spec, src = dense
    cfg = ChannelConfig(ratio=0.95, rounds=3, epochs=1, max_drop=0.0, progress=False, verbose=False)
    run = prune_channels_file(src, tmp_path / "small.safetensors", cfg, data=spec)
    r = run.result
    assert r.accuracy_after < r.accuracy_before                  # the case: a real drop, past a 0 pp budget
    assert r.within_budget is False and r.max_drop == 0.0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deepshrink: warning: ")
    assert "past the allowed drop of 0.0 pp (--max-drop)" in err[0] and "small.safetensors" in err[0]
    _, info = load_model(tmp_path / "small.safetensors")
    assert info.history[-1]["within_budget"] is False and info.history[-1]["max_drop"] == 0.0
    assert all("accuracy_tuned" in rec for rec in info.history[-1]["rounds"])   # 1 epoch, 3 rounds: all tuned


def test_prune_channels_within_max_drop_says_nothing_on_stderr(dense, tmp_path, capsys):
    _, spec, src = dense
    cfg = ChannelConfig(ratio=0.2, epochs=0, max_drop=100.0, progress=False, verbose=False)
    run = prune_channels_file(src, tmp_path / "small.safetensors", cfg, data=spec)
    assert run.result.within_budget is True
    assert capsys.readouterr().err == ""


def test_linear_quantize_reports_the_ptq_accuracy_before_qat_starts(dense, tmp_path, capsys):
    _, spec, src = dense
    ptq_only = quantize_file(src, tmp_path / "ptq.safetensors",
                             QuantizeConfig(bits=4, calib=32, progress=False, verbose=False), data=spec)
    capsys.readouterr()
    run = quantize_file(src, tmp_path / "qat.safetensors",
                        QuantizeConfig(bits=4, calib=32, qat_epochs=0.5, progress=False), data=spec)
    # oracle: the PTQ figure is the accuracy of the same PTQ written without QAT
    assert run.accuracy_ptq == ptq_only.accuracy_after == ptq_only.accuracy_ptq
    _, info = load_quantized(tmp_path / "qat.safetensors")
    assert info.history[-1]["accuracy_ptq"] == run.accuracy_ptq
    out = capsys.readouterr().out.splitlines()
    ptq, qat = _index(out, "PTQ test accuracy"), _index(out, "quantization-aware training")
    epoch = _index(out, "epoch 1/1")
    assert ptq < qat < epoch
    assert f"{run.accuracy_ptq * 100:.2f}%" in out[ptq]
    assert "1 epoch on 128 training images (SGD, lr 0.002" in out[qat]      # 0.5 epochs of 256 images


def test_kmeans_says_what_each_figure_is(dense, tmp_path, capsys):
    _, spec, src = dense
    run = quantize_file(src, tmp_path / "km.safetensors",
                        QuantizeConfig(method="kmeans", bits=4, qat_epochs=1, progress=False), data=spec)
    out = capsys.readouterr().out.splitlines()
    shared, tune, epoch = _index(out, "k-means sharing"), _index(out, "centroid fine-tuning"), _index(out, "epoch 1/1")
    assert shared < tune < epoch
    assert "linear layer's weights clustered into 16 shared values" in out[shared] and "conv" not in out[shared]
    assert out[shared + 1].startswith(f"test accuracy after k-means sharing {run.accuracy_kmeans * 100:.2f}%")
    assert "AdamW, lr 0.0001" in out[tune]


def test_distill_says_it_measures_the_teacher_then_caches_its_logits(dense, tmp_path, capsys):
    _, spec, src = dense
    run = distill_file(src, "lenet300", tmp_path / "student.safetensors", DistillConfig(),
                       training=StudentTraining(epochs=1, progress=False), finetune=Finetune(augment=False),
                       data=spec)
    out = capsys.readouterr().out.splitlines()
    measure, summary = _index(out, "teacher "), _index(out, f"teacher {src}: {run.teacher_accuracy * 100:.2f}%")
    cache, epoch = _index(out, "caching the teacher's logits on 256 training images"), _index(out, "epoch 1/1")
    assert "measuring its accuracy on the 64 test images" in out[measure]
    assert measure < summary < cache < epoch
    assert run.result.cache_hits == 256 and run.result.cache_misses == 0


def test_prune_auto_says_where_the_scan_goes_before_it_runs(dense, tmp_path, capsys):
    _, spec, src = dense
    out_file = tmp_path / "pruned.safetensors"
    run = prune_file(src, out_file, PruneConfig(sparsity=0.8, epochs=1, progress=False),
                     auto=ScanConfig(sparsities=(0.5, 0.9), val_size=32, progress=False), data=spec)
    assert run.scan_dir == tmp_path / "sensitivity"
    assert (run.scan_dir / "sensitivity.json").is_file() and (run.scan_dir / "sensitivity.png").is_file()
    out = capsys.readouterr().out.splitlines()
    where, chosen = _index(out, "auto: a sensitivity scan"), _index(out, "per-layer sparsities:")
    plan, epoch = _index(out, "pruning to the per-layer sparsities"), _index(out, "epoch 1/1")
    assert where < chosen < plan < epoch
    assert str(run.scan_dir / "sensitivity.json") in out[where] and str(run.scan_dir / "sensitivity.png") in out[where]
    assert f"scan and plot in {run.scan_dir}" in out[chosen]
    assert "while fine-tuning 1 epoch (AGP raises the sparsity" in out[plan]


def test_prune_says_what_it_does_before_the_first_epoch(dense, tmp_path, capsys):
    _, spec, src = dense
    prune_file(src, tmp_path / "p.safetensors", PruneConfig(sparsity=0.5, schedule="oneshot", epochs=1,
                                                            progress=False), data=spec)
    out = capsys.readouterr().out.splitlines()
    plan = _index(out, "pruning to 50.0% sparsity (magnitude, global scope) while fine-tuning 1 epoch")
    assert "pruned at once, then the masks stay fixed" in out[plan] and plan < _index(out, "epoch 1/1")
    assert "distilling from the unpruned model" in out[plan]

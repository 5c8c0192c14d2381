"""``make demo`` end to end on a tiny IDX folder standing in for Fashion-MNIST."""

import pytest

from deepshrink import demo
from deepshrink.io import load_model
from deepshrink.prune import sparsity

pytestmark = pytest.mark.usefixtures("one_thread")


def test_demo_trains_prunes_profiles_and_reuses(tmp_path, monkeypatch, capsys, idx_dir_writer):
    idx_dir_writer(tmp_path / "fmnist", n_train=64, n_test=32, h=28, w=28)
    monkeypatch.setenv("DEEPSHRINK_DATA", str(tmp_path / "fmnist"))
    out = tmp_path / "demo"
    assert demo.main(["--out-dir", str(out), "--prune-epochs", "2"]) == 0
    text = capsys.readouterr().out
    assert "[1/3] training LeNet-5" in text and "pruned:" in text and "outputs:" in text
    for name in ("lenet5.safetensors", "lenet5_pruned.safetensors", "report.md", "lenet5_pruned_weights.png"):
        assert (out / name).is_file(), name
    pruned, info = load_model(out / "lenet5_pruned.safetensors")
    assert sparsity(pruned) == pytest.approx(0.92, abs=1e-3)
    assert [h["op"] for h in info.history] == ["train", "prune"]
    dense, _ = load_model(out / "lenet5.safetensors")
    report = (out / "report.md").read_text()
    assert f"| **total** | | | {sum(p.numel() for p in dense.parameters()):,} | 0.0% |" in report
    # a second run reuses the checkpoint instead of training again
    assert demo.main(["--out-dir", str(out), "--prune-epochs", "1"]) == 0
    assert "[1/3] reusing" in capsys.readouterr().out


def test_demo_missing_data_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEEPSHRINK_DATA", str(tmp_path / "nowhere"))
    assert demo.main(["--out-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "apt-get install dataset-fashion-mnist" in err[0]

"""``make demo`` end to end on a tiny IDX folder standing in for Fashion-MNIST."""

import pytest

from deepshrink import demo
from deepshrink.codec import compression_report, load_compressed
from deepshrink.pipelines.compress_report import TABLE_LEGEND
from deepshrink.quant import quantized_layers
from deepshrink.prune import sparsity

pytestmark = pytest.mark.usefixtures("one_thread")


def test_demo_compresses_the_baseline(tmp_path, monkeypatch, capsys, idx_dir_writer):
    idx_dir_writer(tmp_path / "fmnist", n_train=64, n_test=32, h=28, w=28)
    monkeypatch.setenv("DEEPSHRINK_DATA", str(tmp_path / "fmnist"))
    out = tmp_path / "demo"
    code = demo.main(["--out-dir", str(out), "--prune-epochs", "1", "--max-drop", "100"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "[1/3] the trained LeNet-5 baseline" in text and "Rate(P+Q+H)" in text and "x smaller" in text
    for name in ("lenet5.dsz", "lenet5.report.md", "lenet5.weights.png", "lenet5.bits.png"):
        assert (out / name).is_file(), name
    # two ratios, each named by what it compares with: the fp32 file, and the fp32 parameters (the table's)
    report = compression_report(out / "lenet5.dsz")
    [files] = [line for line in text.splitlines() if line.strip().startswith("files")]
    by_file = demo.BASELINE.stat().st_size / (out / "lenet5.dsz").stat().st_size
    assert f"{by_file:.1f}x smaller vs the fp32 file" in files
    assert f"{report.ratio:.1f}x vs the fp32 parameters alone" in files
    assert " ".join(TABLE_LEGEND) in (out / "lenet5.report.md").read_text()    # the columns explained
    model = load_compressed(out / "lenet5.dsz")
    compressed = model.deepshrink_info.history[-1]
    assert compressed["attempts"] >= 1 and 0.9 < sparsity(model) <= 0.951     # what is left after dead units went
    assert model.fc1.out_features == model.fc2.in_features <= 500            # dead units physically gone
    assert set(quantized_layers(model)) == {"conv1", "conv2", "fc1", "fc2"}
    assert [h["op"] for h in model.deepshrink_info.history][-1] == "compress"
    assert (out / "lenet5.dsz").stat().st_size * 20 < demo.BASELINE.stat().st_size


def test_demo_missing_data_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEEPSHRINK_DATA", str(tmp_path / "nowhere"))
    assert demo.main(["--out-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "apt-get install dataset-fashion-mnist" in err[0]

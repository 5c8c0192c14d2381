"""deepshrink compress end to end (then decompress, evaluate and profile on its .dsz), a teacher
file, and its one-line errors."""

import pytest
import torch

from deepshrink.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


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
    page = (tmp_path / "mlp.report.html").read_text()          # the same, one self-contained page
    assert "Per-layer compression" in page and "fc1.weight" in page and "mlp.report.html" in text
    assert page.count('src="data:image/png;base64,') >= 2 and 'src="http' not in page
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
    (tmp_path / "afile").write_text("")
    assert "afile is a file" in run_error(capsys, ["compress", model_file, "--out", tmp_path / "afile" / "a.dsz"])
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
    assert "--lr '-1'" in run_error(capsys, base + ["--lr", "-1"])
    assert "missing.safetensors" in run_error(capsys, base + ["--teacher", tmp_path / "missing.safetensors"])
    assert not (tmp_path / "a.dsz").exists()

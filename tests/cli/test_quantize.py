"""deepshrink quantize end to end on a tiny trained LeNet-300 (QAT with LSQ, k-means), and its
one-line errors."""

from __future__ import annotations

import pytest
import torch

from deepshrink.cli import main
from deepshrink.io import load_model
from deepshrink.quant import load_quantized

pytestmark = pytest.mark.usefixtures("one_thread")


def test_quantize_qat_lsq_and_kmeans(trained, capsys):
    root, spec, model = trained
    assert main(["quantize", str(model), "--bits", "4", "--qat-epochs", "0.5", "--lsq", "--calib", "32",
                 "--no-progress", "--out", str(root / "q4.safetensors")]) == 0
    gm, info = load_quantized(root / "q4.safetensors")
    assert info.history[-1]["qat"]["lsq"] is True
    assert main(["quantize", str(model), "--method", "kmeans", "--bits", "8", "--fc-bits", "5",
                 "--out", str(root / "km.safetensors")]) == 0
    km, info = load_model(root / "km.safetensors")
    assert km.fc1.weight_codebook.numel() <= 32
    assert torch.isin(km.fc1.weight, km.fc1.weight_codebook).all()


@pytest.mark.parametrize("argv,match", [
    (["--bits", "9"], "bits"),
    (["--calib", "0"], "--calib"),
    (["--qat-epochs", "-1"], "--qat-epochs"),
])
def test_bad_arguments_are_one_line_errors(trained, capsys, run_error, argv, match):
    root, spec, model = trained
    line = run_error(capsys, ["quantize", model, "--out", root / "bad.safetensors", *argv])
    assert match in line

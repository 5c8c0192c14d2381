"""What prune-channels and quantize print: the --max-drop warning (stderr, exit 0, the model still
written), every round's fine-tuning announced, and each quantize figure named by its stage."""

from __future__ import annotations

import re

import pytest

from deepshrink.cli import build_parser, main
from deepshrink.prune import ChannelConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_prune_channels_rounds_share_the_epoch_and_a_drop_past_max_drop_warns(trained, tmp_path, capsys):
    _, spec, src = trained
    out = tmp_path / "small.safetensors"
    code = main(["prune-channels", str(src), "--ratio", "0.95", "--rounds", "3", "--finetune-epochs", "1",
                 "--max-drop", "0", "--data", spec, "--no-progress", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0 and out.is_file()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deepshrink: warning: ") and "--max-drop" in err[0]
    announced = [line for line in captured.out.splitlines() if re.match(r"round \d/3: .* fine-tuning one pass", line)]
    assert len(announced) == 3                                  # not one epoch for round 1 and none after


def test_prune_channels_max_drop_default_is_the_configs_and_shows_in_the_help(capsys):
    assert build_parser().parse_args(["prune-channels", "m", "--out", "o", "--ratio", "0.5"]).max_drop \
        == ChannelConfig.max_drop
    with pytest.raises(SystemExit):
        build_parser().parse_args(["prune-channels", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-drop PP" in text and f"(default {ChannelConfig.max_drop})" in text


def test_quantize_names_each_figure(trained, tmp_path, capsys):
    _, spec, src = trained
    assert main(["quantize", str(src), "--bits", "4", "--qat-epochs", "0.5", "--calib", "32", "--data", spec,
                 "--no-progress", "--out", str(tmp_path / "q.safetensors")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.match(r"test accuracy original [\d.]+%, PTQ [\d.]+%, after QAT [\d.]+% ", last), last
    assert main(["quantize", str(src), "--method", "kmeans", "--bits", "4", "--qat-epochs", "1", "--data", spec,
                 "--no-progress", "--out", str(tmp_path / "k.safetensors")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.search(r"test accuracy original [\d.]+%, k-means shared [\d.]+%, after centroid fine-tuning [\d.]+%",
                     last), last

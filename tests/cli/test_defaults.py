"""Every command's defaults are its config dataclass's: they cannot drift apart."""

from __future__ import annotations

import pytest

from deepshrink.cli import build_parser
from deepshrink.compress import CompressConfig
from deepshrink.distill import DistillConfig
from deepshrink.pipelines import ExportConfig, QuantizeConfig, ScanConfig, StudentTraining
from deepshrink.prune import ChannelConfig, PruneConfig

PARSED_AS = {  # command argv -> [(option dest, the dataclass default it must equal)]
    ("prune", "m", "--out", "o", "--sparsity", "0.5"): [
        ("finetune_epochs", PruneConfig.epochs), ("rule", PruneConfig.rule), ("scope", PruneConfig.scope),
        ("schedule", PruneConfig.schedule), ("penalty_lambda", PruneConfig.penalty_lambda),
        ("kd_temperature", PruneConfig.kd_temperature), ("kd_alpha", PruneConfig.kd_alpha),
        ("seed", PruneConfig.seed), ("val_size", ScanConfig.val_size), ("augment", None)],
    ("sensitivity", "m", "--out-dir", "o"): [
        ("rule", ScanConfig.rule), ("max_drop", ScanConfig.max_drop), ("val_size", ScanConfig.val_size),
        ("sparsities", ",".join(map(str, ScanConfig.sparsities)))],
    ("prune-channels", "m", "--out", "o", "--ratio", "0.5"): [
        ("criterion", ChannelConfig.criterion), ("scope", ChannelConfig.scope), ("round_to", ChannelConfig.round_to),
        ("rounds", ChannelConfig.rounds), ("seed", ChannelConfig.seed), ("finetune_epochs", ChannelConfig.epochs)],
    ("compress", "m", "--out", "o"): [
        (name, getattr(CompressConfig, field)) for name, field in [
            ("max_drop", "max_drop"), ("sparsity", "sparsity"), ("allocation", "allocation"),
            ("finetune_epochs", "prune_epochs"), ("fc_bits", "fc_bits"), ("bit_widths", "bit_widths"),
            ("bit_tolerance", "bit_tolerance"), ("bit_se", "bit_se"), ("method", "method"),
            ("centroid_epochs", "centroid_epochs"), ("attempts", "attempts"), ("backoff", "backoff"), ("kd_temperature", "kd_temperature"),
            ("kd_alpha", "kd_alpha"), ("val_size", "val_size"), ("augment", "augment"), ("seed", "seed")]],
    ("distill", "--teacher", "t", "--student", "s", "--out", "o"): [
        ("loss", DistillConfig.loss), ("kd_temperature", DistillConfig.temperature), ("kd_alpha", DistillConfig.alpha),
        ("feature_loss", DistillConfig.feature_loss), ("feature_weight", DistillConfig.feature_weight),
        ("warmup_epochs", StudentTraining.warmup_epochs), ("seed", StudentTraining.seed)],
    ("quantize", "m", "--out", "o"): [
        ("method", QuantizeConfig.method), ("bits", QuantizeConfig.bits), ("fc_bits", QuantizeConfig.fc_bits),
        ("act_bits", QuantizeConfig.act_bits), ("per_channel", QuantizeConfig.per_channel),
        ("observer", QuantizeConfig.act_observer), ("weight_observer", QuantizeConfig.weight_observer),
        ("calib", QuantizeConfig.calib), ("finetune_epochs", QuantizeConfig.qat_epochs), ("lsq", QuantizeConfig.lsq),
        ("seed", QuantizeConfig.seed)],
    ("export", "m", "--onnx", "o"): [
        ("int8", ExportConfig.int8), ("calib", ExportConfig.calib), ("check", ExportConfig.check),
        ("ort_int8", ExportConfig.ort_int8), ("bake_preprocessing", ExportConfig.bake_preprocessing)],
}


@pytest.mark.parametrize("argv", list(PARSED_AS), ids=[a[0] for a in PARSED_AS])
def test_cli_defaults_are_the_dataclass_defaults(argv):
    args = build_parser().parse_args(list(argv))
    for dest, default in PARSED_AS[argv]:
        assert getattr(args, dest) == default, dest


def test_defaults_show_in_the_help(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compress", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    labelled, text_data = CompressConfig().resolved(True), CompressConfig().resolved(False)
    assert f"(default {labelled.max_drop}; text: {text_data.max_drop})" in text
    assert f"(default {CompressConfig.kd_temperature})" in text


def test_compress_bits_choose_the_fixed_widths_only_when_given(monkeypatch, tmp_path):
    """--bits / --fc-bits name fixed widths: given, they switch --bit-widths to fixed; absent, the
    dataclass decides (measured widths on labelled data)."""
    from deepshrink.cli.compress import cmd_compress
    import deepshrink.cli.compress as cli_compress
    seen = {}

    def fake(src, out, cfg, *a, **k):
        seen["cfg"] = cfg
        raise SystemExit(0)

    for argv, widths, conv in ((["--bits", "6"], "fixed", 6), (["--fc-bits", "4"], "fixed", 8), ([], None, 8),
                               (["--bits", "6", "--bit-widths", "auto"], "auto", 6)):
        args = build_parser().parse_args(["compress", "m", "--out", str(tmp_path / "o.dsz"), *argv])
        monkeypatch.setattr(cli_compress, "compress_file", fake)
        with pytest.raises(SystemExit):
            cmd_compress(args)
        assert (seen["cfg"].bit_widths, seen["cfg"].conv_bits) == (widths, conv), argv


def test_compress_passes_the_retry_and_width_rule_flags(monkeypatch, tmp_path):
    """--backoff, --bit-se and --bit-tolerance reach the config the pipeline runs with."""
    from deepshrink.cli.compress import cmd_compress
    import deepshrink.cli.compress as cli_compress
    seen = {}

    def fake(src, out, cfg, *a, **k):
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr(cli_compress, "compress_file", fake)
    args = build_parser().parse_args(["compress", "m", "--out", str(tmp_path / "o.dsz"), "--backoff", "0.005",
                                      "--bit-se", "0", "--bit-tolerance", "0.1", "--attempts", "3"])
    with pytest.raises(SystemExit):
        cmd_compress(args)
    cfg = seen["cfg"]
    assert (cfg.backoff, cfg.bit_se, cfg.bit_tolerance, cfg.attempts) == (0.005, 0.0, 0.1, 3)

"""One flag vocabulary across the commands: every subcommand's parser walked, every option has help
text that shows its default, the old spellings still parse to exactly what the new ones do (and
are hidden from --help), and the defaults that used to disagree between the command line and the
Python API now agree."""

from __future__ import annotations

import argparse

import pytest

from deepshrink.cli import build_parser
from deepshrink.cli.common import LR_DEFAULTS
from deepshrink.cli.parser import help_text, hidden_aliases
from deepshrink.compress import CompressConfig
from deepshrink.pipelines import QuantizeConfig
from deepshrink.prune import ChannelConfig
from deepshrink.quant import KMeansConfig, QuantConfig


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


COMMANDS = _commands()
MAKES_A_MODEL = ("train", "prune", "prune-channels", "quantize", "compress", "distill")
FINETUNES = ("prune", "prune-channels", "quantize", "compress")

# old spelling -> the current one, per command (each must parse to the same values, and stay out of --help)
RENAMED = {
    "export": {"--onnx": "--out"},
    "distill": {"--temperature": "--kd-temperature", "--alpha": "--kd-alpha"},
    "compress": {"--prune-epochs": "--finetune-epochs", "--conv-bits": "--bits", "--scan-size": "--val-size"},
    "quantize": {"--qat-epochs": "--finetune-epochs", "--centroid-epochs": "--finetune-epochs",
                 "--conv-bits": "--bits"},
    "prune": {"--eval-size": "--val-size"},
    "sensitivity": {"--eval-size": "--val-size"},
}
SWITCHES = {  # old switch -> the current spelling it stands for
    "train": {"--no-augment": ("--augment", "off")},
    "quantize": {"--per-tensor": ("--no-per-channel",)},
}


def _required_groups(p: argparse.ArgumentParser) -> list[list[argparse.Action]]:
    return [g._group_actions for g in p._mutually_exclusive_groups if g.required]


def _needs_no_default(p: argparse.ArgumentParser, a: argparse.Action) -> bool:
    """Positionals, required options (one of a required group too), -h and --version."""
    return (not a.option_strings or a.required or a.default is argparse.SUPPRESS
            or any(a in g for g in _required_groups(p)))


def _sample(a: argparse.Action) -> list[str]:
    """A value ``a`` accepts (not its default, where it has choices)."""
    if a.nargs == 0:
        return []
    if a.choices:
        return [str(list(a.choices)[-1])]
    if a.type is int:
        return ["3"]
    if type(a).__name__ == "CheckedFloat":
        return ["0.5"]
    return ["x"]


def _base_argv(p: argparse.ArgumentParser, leave_out: argparse.Action | None = None) -> list[str]:
    """The shortest command line ``p`` accepts: its positionals and required options (the first of a
    required group), without ``leave_out``."""
    argv: list[str] = []
    for a in p._actions:
        if a is leave_out or a.help == argparse.SUPPRESS:
            continue
        if not a.option_strings and a.nargs not in ("?", "*"):
            argv += ["x"]
        elif a.option_strings and a.required:
            argv += [a.option_strings[0], *_sample(a)]
    for group in _required_groups(p):
        if leave_out not in group:
            argv += [group[0].option_strings[0], *_sample(group[0])]
    return argv


def _parse(command: str, argv: list[str]) -> dict:
    ns = vars(build_parser().parse_args([command, *argv]))
    ns.pop("func")
    return ns


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_option_has_help_that_shows_its_default(command):
    p = COMMANDS[command]
    no_help, no_default = [], []
    for a in p._actions:
        if a.help == argparse.SUPPRESS:
            assert hidden_aliases(a) or getattr(a, "alias_for", None) or type(a).__name__ == "_Removed", a
            continue
        name = a.option_strings[0] if a.option_strings else a.dest
        if not (a.help or "").strip():
            no_help.append(name)
        elif not _needs_no_default(p, a) and "default" not in help_text(p, a).lower():
            no_default.append(name)
    assert not no_help, f"{command}: no help text for {no_help}"
    assert not no_default, f"{command}: the help does not show the default of {no_default}"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_old_spellings_parse_to_the_same_values_and_stay_out_of_the_help(command):
    p = COMMANDS[command]
    fmt = p._get_formatter()
    listed = " ".join(fmt._format_action_invocation(a) for a in p._actions if a.help != argparse.SUPPRESS)
    seen = {}
    for a in p._actions:
        for old in hidden_aliases(a):
            new = a.option_strings[0]
            base = _base_argv(p, leave_out=a)
            assert _parse(command, base + [old, *_sample(a)]) == _parse(command, base + [new, *_sample(a)]), old
            assert old not in listed.split(", ") and f"{old} " not in listed, old
            seen[old] = new
        means = getattr(a, "alias_for", None)
        if means:
            base = _base_argv(p)
            assert _parse(command, base + [a.option_strings[0]]) == _parse(command, base + list(means))
            seen[a.option_strings[0]] = means
    for old, new in RENAMED.get(command, {}).items():
        assert seen.get(old) == new, f"{command} {old} is not an alias of {new}"
    for old, means in SWITCHES.get(command, {}).items():
        assert seen.get(old) == means, f"{command} {old} does not stand for {means}"


def test_one_spelling_per_concept():
    for command in MAKES_A_MODEL:
        opts = {s for a in COMMANDS[command]._actions if a.help != argparse.SUPPRESS
                for s in a.option_strings if s not in hidden_aliases(a)}
        assert {"--out", "--json", "--lr", "--seed", "--no-progress", "--augment"} <= opts, command
        assert not opts & {"--onnx", "--prune-epochs", "--qat-epochs", "--temperature", "--alpha", "--conv-bits",
                           "--no-augment", "--eval-size", "--scan-size"}, command
    for command in FINETUNES:
        assert "--finetune-epochs" in COMMANDS[command]._option_string_actions, command
    for command in ("prune", "compress", "distill"):
        assert {"--kd-temperature", "--kd-alpha"} <= set(COMMANDS[command]._option_string_actions), command
    assert "--out" in COMMANDS["export"]._option_string_actions


def test_lr_is_the_rate_used_and_says_where_its_default_comes_from():
    for command, method in [("prune", "prune"), ("prune-channels", "prune_channels"), ("compress", "prune"),
                            ("quantize", "quantize"), ("distill", "distill"), ("train", "train")]:
        p = COMMANDS[command]
        text = help_text(p, p._option_string_actions["--lr"])
        assert "used as given" in text and LR_DEFAULTS[method] in text, command
    assert "from the model's recorded training" in LR_DEFAULTS["prune"]
    assert "from the model's recorded training" in LR_DEFAULTS["prune_channels"]


def test_defaults_that_disagreed_now_agree():
    channels = _parse("prune-channels", ["m", "--out", "o", "--ratio", "0.5"])
    assert channels["finetune_epochs"] == ChannelConfig.epochs > 0
    assert QuantizeConfig.per_channel is True and QuantizeConfig.per_channel == QuantConfig.per_channel
    assert _parse("quantize", ["m", "--out", "o"])["per_channel"] is True
    assert _parse("quantize", ["m", "--out", "o", "--no-per-channel"])["per_channel"] is False
    kmeans = QuantizeConfig(method="kmeans")
    assert (kmeans.bits, kmeans.linear_bits) == (KMeansConfig.conv_bits, KMeansConfig.fc_bits)
    assert (CompressConfig.conv_bits, CompressConfig().resolved(True).fc_bits) == (KMeansConfig.conv_bits,
                                                                                   KMeansConfig.fc_bits)
    assert QuantizeConfig(method="kmeans", bits=3).linear_bits == 3      # never more bits for fc than asked for
    assert QuantizeConfig(method="kmeans", fc_bits=7).linear_bits == 7
    assert QuantizeConfig(bits=4).linear_bits == 4                       # linear: --bits everywhere


def test_help_hides_the_old_spellings_but_lists_the_new(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "--help"])
    text = capsys.readouterr().out
    assert "--out FILE" in text and "--onnx" not in text.split("options:")[1].split("--model")[0]

"""The argument parser of every command: each option's default shown in ``--help``, and old
spellings of renamed options kept working but hidden.

One vocabulary across the commands (``--out`` for the output file, ``--finetune-epochs`` wherever a
command fine-tunes, ``--kd-temperature``/``--kd-alpha``, ``--augment on|off``, ``--val-size``,
``--bits``/``--fc-bits``, ``--lr`` the fine-tuning LR actually used); an earlier spelling is an
alias: :func:`add_option` puts it on the same argparse action as the new one, so it parses to the
same destination with the same type and checks, and :class:`HelpFormatter` leaves it out of the
help. A switch that stands for an option's value (``--no-augment`` for ``--augment off``) is
:func:`add_switch_alias`.
"""

from __future__ import annotations

import argparse
import copy

__all__ = ["HelpFormatter", "Parser", "add_option", "add_switch_alias", "hidden_aliases", "help_text"]


def hidden_aliases(action: argparse.Action) -> tuple[str, ...]:
    """The old spellings :func:`add_option` gave ``action`` (kept out of the help)."""
    return tuple(getattr(action, "hidden_aliases", ()))


class HelpFormatter(argparse.HelpFormatter):
    """Shows every option's default and hides old spellings.

    An option whose help does not speak of its default already gets ``(default: VALUE)``; a switch
    (no value) gets ``(default: off)``, or ``on``. A default of ``None`` is left to the help's own
    words ("default: the model's ..."), since only they can say what it means."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or action.required or action.default is argparse.SUPPRESS
                or "default" in text.lower()):
            return text
        if action.nargs == 0:  # a switch: store_true / store_false / store_const
            if isinstance(action.default, bool):
                return f"{text} (default: {'on' if action.default else 'off'})"
            return text
        if action.default is None:
            return text
        return f"{text} (default: %(default)s)"

    def _format_action_invocation(self, action: argparse.Action) -> str:
        hidden = hidden_aliases(action)
        if hidden:
            action = copy.copy(action)
            action.option_strings = [s for s in action.option_strings if s not in hidden]
        return super()._format_action_invocation(action)


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with :class:`HelpFormatter`; its subparsers are Parsers too."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def add_option(p, name: str, *, aliases: tuple[str, ...] = (), **kwargs) -> argparse.Action:
    """``p.add_argument(name, **kwargs)`` where each of ``aliases`` (old spellings) parses exactly
    like ``name`` (one action: same destination, type and checks) but is not shown in the help.
    ``p``: a parser or an argument group."""
    action = p.add_argument(name, *aliases, **kwargs)
    action.hidden_aliases = tuple(aliases)
    return action


def add_switch_alias(p, switch: str, *, dest: str, const, means: tuple[str, ...]) -> argparse.Action:
    """A hidden old switch storing ``const`` into ``dest``; ``means`` is the new spelling it
    stands for (e.g. ``("--augment", "off")`` for ``--no-augment``), kept for the tests."""
    action = p.add_argument(switch, dest=dest, action="store_const", const=const, help=argparse.SUPPRESS)
    action.alias_for = tuple(means)
    return action


def help_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """``action``'s help as ``parser --help`` prints it (defaults filled in), on one line."""
    formatter = parser._get_formatter()
    return " ".join(formatter._expand_help(action).split()) if action.help else ""

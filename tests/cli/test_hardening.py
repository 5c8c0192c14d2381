"""CLI hardening: bad output paths, non-finite or out-of-range numbers, oversized profile inputs,
interrupted writes and ``--version`` are each one ``deepshrink: error: ...`` line (or a clean
exit), refused before any file is read or any work is done.

Every command below is given an input that does not exist (a model file, a data file): had the
output check come after loading, the error would name that input instead of the output, so the
tests also pin the order, and none of them trains or loads anything.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest
import torch

from deepshrink.cli import common, main
from deepshrink.cli.common import check_output_dir, check_output_path, parse_shape
from deepshrink.pipelines.profile import MAX_INPUT_ELEMENTS
from deepshrink.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
LENET300 = REPO / "checkpoints" / "baselines" / "lenet300.safetensors"

OUT = "OUT"   # placeholder in the argv templates for the output path under test

# commands writing one output file: argv with OUT, and the option naming it
FILE_OUTPUTS = {
    "train": (["train", "--model", "lenet300", "--data", "npz:MISSING.npz", "--epochs", "1",
               "--no-progress", "--out", OUT], "--out"),
    "train-checkpoint": (["train", "--model", "lenet300", "--data", "npz:MISSING.npz", "--epochs", "1",
                          "--no-progress", "--out", "GOOD/m.safetensors", "--checkpoint", OUT], "--checkpoint"),
    "decompress": (["decompress", "MISSING.dsz", "--out", OUT], "--out"),
    "export": (["export", "MISSING.safetensors", "--out", OUT], "--out"),
    "export-old-flag": (["export", "MISSING.safetensors", "--onnx", OUT], "--out"),   # the hidden alias names --out
    "quantize": (["quantize", "MISSING.safetensors", "--out", OUT], "--out"),
    "prune": (["prune", "MISSING.safetensors", "--sparsity", "0.5", "--finetune-epochs", "0",
               "--no-progress", "--out", OUT], "--out"),
    "prune-channels": (["prune-channels", "MISSING.safetensors", "--ratio", "0.5", "--finetune-epochs", "0",
                        "--no-progress", "--out", OUT], "--out"),
    "compress": (["compress", "MISSING.safetensors", "--prune-epochs", "0", "--no-progress", "--out", OUT], "--out"),
    "distill": (["distill", "--teacher", "MISSING.safetensors", "--student", "lenet300", "--epochs", "1",
                 "--no-progress", "--out", OUT], "--out"),
}

# commands writing into a folder
DIR_OUTPUTS = {
    "sensitivity": (["sensitivity", "MISSING.safetensors", "--no-progress", "--out-dir", OUT], "--out-dir"),
    "prune-plots": (["prune", "MISSING.safetensors", "--sparsity", "0.5", "--finetune-epochs", "0", "--no-progress",
                     "--out", "GOOD/p.safetensors", "--plots", OUT], "--plots"),
}


def _argv(template, tmp_path: Path, out: str) -> list[str]:
    def fill(a: str) -> str:
        if a == OUT:
            return out
        return a.replace("MISSING", str(tmp_path / "missing")).replace("GOOD", str(tmp_path))
    return [fill(a) for a in template]


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ----------------------------------------------------------------------------- output paths

def _bad_file_output(kind: str, tmp_path: Path, monkeypatch) -> tuple[str, list[str]]:
    """A bad output path of this kind, and words its error line must contain."""
    if kind == "folder":
        (tmp_path / "adir").mkdir()
        return str(tmp_path / "adir"), [str(tmp_path / "adir"), "folder"]
    if kind == "under-file":
        (tmp_path / "somefile.txt").write_text("x")
        path = str(tmp_path / "somefile.txt" / "x.out")
        return path, [path, "somefile.txt is a file, not a folder"]
    if kind == "empty":
        return "", ["empty"]
    if kind == "trailing-slash":
        return str(tmp_path / "new") + "/", ["ends with '/'"]
    if kind == "device":
        return os.devnull, [os.devnull, "not a regular file"]
    if kind == "unwritable":  # root may write anywhere: the folder refuses the probe file
        locked = tmp_path / "locked"
        locked.mkdir()
        real = common.tempfile.mkstemp

        def refuse(*a, dir=None, **k):
            if Path(dir) == locked:
                raise PermissionError(13, "Permission denied", str(dir))
            return real(*a, dir=dir, **k)
        monkeypatch.setattr(common.tempfile, "mkstemp", refuse)
        path = str(locked / "sub" / "x.out")  # a missing folder is created later: the probe is in its parent
        return path, [path, f"cannot write in {locked}", "Permission denied"]
    raise AssertionError(kind)


FILE_KINDS = ["folder", "under-file", "empty", "trailing-slash", "device", "unwritable"]


@pytest.mark.parametrize("kind", FILE_KINDS)
@pytest.mark.parametrize("command", sorted(FILE_OUTPUTS))
def test_bad_output_file_is_one_line_before_any_work(command, kind, tmp_path, capsys, monkeypatch, run_error):
    template, flag = FILE_OUTPUTS[command]
    out, words = _bad_file_output(kind, tmp_path, monkeypatch)
    before = _files(tmp_path)
    line = run_error(capsys, _argv(template, tmp_path, out))
    for w in words + ([flag] if kind in ("folder", "empty", "trailing-slash") else []):
        assert w in line, line
    assert "missing" not in line  # refused before the input was opened
    assert _files(tmp_path) == before  # nothing written, no probe or temp file left


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("command", ["export", "quantize", "train"])
def test_output_under_proc_is_refused(command, tmp_path, capsys, run_error):
    template, _ = FILE_OUTPUTS[command]
    line = run_error(capsys, _argv(template, tmp_path, "/proc/deepshrink-test.out"))
    assert "/proc/deepshrink-test.out" in line and "cannot write in /proc" in line


def _bad_dir_output(kind: str, tmp_path: Path, monkeypatch) -> tuple[str, list[str]]:
    if kind == "file":
        (tmp_path / "afile").write_text("x")
        return str(tmp_path / "afile"), [str(tmp_path / "afile"), "not a folder"]
    if kind == "under-file":
        (tmp_path / "somefile.txt").write_text("x")
        path = str(tmp_path / "somefile.txt" / "plots")
        return path, [path, "somefile.txt is a file, not a folder"]
    if kind == "empty":
        return "", ["empty"]
    if kind == "inner-folder":  # the folder is fine, but a file it must hold is a folder
        (tmp_path / "outdir" / "sensitivity.json").mkdir(parents=True)
        (tmp_path / "outdir" / "weights_all.png").mkdir()
        return str(tmp_path / "outdir"), [str(tmp_path / "outdir"), "is a folder"]
    return _bad_file_output(kind, tmp_path, monkeypatch)


@pytest.mark.parametrize("kind", ["file", "under-file", "empty", "inner-folder", "unwritable"])
@pytest.mark.parametrize("command", sorted(DIR_OUTPUTS))
def test_bad_output_folder_is_one_line_before_any_work(command, kind, tmp_path, capsys, monkeypatch, run_error):
    template, flag = DIR_OUTPUTS[command]
    out, words = _bad_dir_output(kind, tmp_path, monkeypatch)
    before = _files(tmp_path)
    line = run_error(capsys, _argv(template, tmp_path, out))
    for w in words + ([flag] if kind in ("file", "empty", "inner-folder") else []):
        assert w in line, line
    assert "missing" not in line
    assert _files(tmp_path) == before


def test_compress_refuses_a_report_path_that_is_a_folder(tmp_path, capsys, run_error):
    (tmp_path / "m.report.md").mkdir()  # compress writes m.dsz and m.report.md beside it
    template, _ = FILE_OUTPUTS["compress"]
    line = run_error(capsys, _argv(template, tmp_path, str(tmp_path / "m.dsz")))
    assert "m.report.md" in line and "is a folder" in line


def test_prune_auto_refuses_its_scan_folder_when_a_file(tmp_path, capsys, run_error):
    (tmp_path / "sensitivity").write_text("x")  # --auto without --plots scans into <out folder>/sensitivity
    template, _ = FILE_OUTPUTS["prune"]
    line = run_error(capsys, _argv(template, tmp_path, str(tmp_path / "p.safetensors")) + ["--auto"])
    assert str(tmp_path / "sensitivity") in line and "not a folder" in line


def test_good_outputs_pass_and_leave_nothing_behind(tmp_path):
    (tmp_path / "old.safetensors").write_bytes(b"old")
    check_output_path(tmp_path / "old.safetensors")        # an existing file is replaced later
    check_output_path(tmp_path / "new.safetensors")
    check_output_path(tmp_path / "a" / "b" / "new.safetensors")  # missing folders: the command creates them
    check_output_path(None)                                # an optional output not given
    check_output_dir(tmp_path / "plots", "--plots")
    check_output_dir(tmp_path, "--plots")
    assert _files(tmp_path) == {"old.safetensors"}
    assert (tmp_path / "old.safetensors").read_bytes() == b"old"


def test_train_checks_its_output_before_training(tmp_path, capsys, monkeypatch, run_error, write_npz):
    """The audit's case: train used to fail only after the whole training run."""
    spec = write_npz(tmp_path / "tiny.npz")
    import deepshrink.cli.train as train_cmd

    def no_training(*a, **k):
        raise AssertionError("trained before checking --out")
    monkeypatch.setattr(train_cmd, "train_file", no_training)
    line = run_error(capsys, ["train", "--model", "lenet300", "--data", spec, "--epochs", "1", "--no-progress",
                              "--out", tmp_path])
    assert str(tmp_path) in line and "is a folder" in line


# ----------------------------------------------------------------------------- numbers

BAD_NUMBERS = [
    (FILE_OUTPUTS["quantize"][0], "--qat-epochs", ["nan", "inf", "-1", "abc"]),
    (FILE_OUTPUTS["quantize"][0], "--lr", ["nan", "0", "-0.1"]),
    (FILE_OUTPUTS["compress"][0], "--max-drop", ["nan", "inf", "-0.5"]),
    (FILE_OUTPUTS["compress"][0], "--sparsity", ["nan", "-inf"]),
    (FILE_OUTPUTS["compress"][0], "--kd-temperature", ["nan", "0"]),
    (FILE_OUTPUTS["compress"][0], "--kd-alpha", ["nan", "1.5"]),
    (FILE_OUTPUTS["compress"][0], "--lr", ["nan", "inf"]),
    (FILE_OUTPUTS["train"][0], "--lr", ["nan", "0"]),
    (FILE_OUTPUTS["train"][0], "--weight-decay", ["nan", "-1"]),
    (FILE_OUTPUTS["train"][0], "--label-smoothing", ["nan", "1"]),
    (FILE_OUTPUTS["train"][0], "--warmup-epochs", ["nan", "-1"]),
    (FILE_OUTPUTS["prune"][0], "--sparsity", ["nan", "1"]),
    (FILE_OUTPUTS["prune"][0], "--lr", ["nan"]),
    (FILE_OUTPUTS["prune"][0], "--weight-decay", ["-1"]),
    (FILE_OUTPUTS["prune"][0], "--penalty-lambda", ["nan", "-1"]),
    (FILE_OUTPUTS["prune"][0], "--kd-temperature", ["inf"]),
    (FILE_OUTPUTS["prune"][0], "--kd-alpha", ["nan"]),
    (FILE_OUTPUTS["prune-channels"][0], "--lr", ["nan", "-1"]),
    (FILE_OUTPUTS["prune-channels"][0], "--weight-decay", ["inf"]),
    (FILE_OUTPUTS["distill"][0], "--temperature", ["nan", "inf"]),
    (FILE_OUTPUTS["distill"][0], "--alpha", ["nan"]),
    (FILE_OUTPUTS["distill"][0], "--feature-weight", ["nan", "-1"]),
    (FILE_OUTPUTS["distill"][0], "--lr", ["nan"]),
    (FILE_OUTPUTS["distill"][0], "--warmup-epochs", ["nan"]),
    (DIR_OUTPUTS["sensitivity"][0], "--max-drop", ["nan"]),
]


@pytest.mark.parametrize("template,flag,value",
                         [(t, f, v) for t, f, vs in BAD_NUMBERS for v in vs],
                         ids=[f"{t[0]}{f}={v}" for t, f, vs in BAD_NUMBERS for v in vs])
def test_bad_numbers_are_one_line_errors(template, flag, value, tmp_path, capsys, run_error):
    out = str(tmp_path / ("o" if template[0] == "sensitivity" else "o.out"))
    argv = _argv(template, tmp_path, out)
    line = run_error(capsys, argv + [f"{flag}={value}"])  # "=": "-inf" would read as an option
    assert f"{flag} '{value}'" in line, line
    assert "missing" not in line  # refused while parsing, before the input was opened
    assert not Path(out).exists()


def test_prune_channels_ratio_nan_is_refused_before_loading(tmp_path, capsys, run_error):
    argv = _argv(FILE_OUTPUTS["prune-channels"][0], tmp_path, str(tmp_path / "o.out"))
    argv[argv.index("--ratio") + 1] = "nan"
    assert "--ratio 'nan'" in run_error(capsys, argv)


def test_sensitivity_grid_must_hold_fractions(tmp_path, capsys, run_error):
    argv = _argv(DIR_OUTPUTS["sensitivity"][0], tmp_path, str(tmp_path / "s"))
    for grid in ("0.5,nan", "0.5,1.5", "-0.1", ","):
        assert "--sparsities" in run_error(capsys, argv + ["--sparsities", grid])


def test_good_numbers_still_parse():
    from deepshrink.cli import build_parser
    args = build_parser().parse_args(["compress", "m.safetensors", "--out", "m.dsz", "--max-drop", "0",
                                      "--sparsity", "0.9", "--kd-alpha", "1", "--kd-temperature", "1e-3"])
    assert (args.max_drop, args.sparsity, args.kd_alpha, args.kd_temperature) == (0.0, 0.9, 1.0, 1e-3)
    args = build_parser().parse_args(["quantize", "m.safetensors", "--out", "q.safetensors", "--qat-epochs", "0.5"])
    assert args.finetune_epochs == 0.5 and isinstance(args.finetune_epochs, float)  # --qat-epochs: an old name
    default = build_parser().parse_args(["compress", "m", "--out", "o"]).max_drop     # resolved by the data:
    assert default is None                                                             # 0.5 pp on labelled data
    from deepshrink.compress import CompressConfig
    assert CompressConfig(max_drop=default).resolved(True).max_drop == 0.5


# ----------------------------------------------------------------------------- profile input size

def test_profile_refuses_a_huge_input_before_allocating(capsys, monkeypatch, run_error):
    real_zeros = torch.zeros

    def guarded_zeros(*shape, **k):
        n = 1
        for v in (shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)) else shape):
            n *= int(v)
        assert n <= MAX_INPUT_ELEMENTS, "allocated the oversized input"
        return real_zeros(*shape, **k)
    monkeypatch.setattr(torch, "zeros", guarded_zeros)
    line = run_error(capsys, ["profile", "--model", "lenet5", "--input-shape", "100000,1,280,280"])
    assert "--input-shape '100000,1,280,280'" in line and f"{MAX_INPUT_ELEMENTS:,}" in line


def test_parse_shape_bound_is_inclusive():
    assert parse_shape(f"1,1,{MAX_INPUT_ELEMENTS}") == (1, 1, MAX_INPUT_ELEMENTS)
    with pytest.raises(ConfigError, match="--input-shape"):
        parse_shape(f"1,1,{MAX_INPUT_ELEMENTS + 1}")
    with pytest.raises(ConfigError, match="--input-shape"):
        parse_shape("99999999999999999999,99999999999999999999")


# ----------------------------------------------------------------------------- interrupted writes

def _strays(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupted_onnx_export_leaves_previous_file(exc, tmp_path, capsys, monkeypatch):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous")

    def dying_export(model, args, f, **k):
        f.write(b"partial onnx bytes")
        raise exc("interrupted")
    monkeypatch.setattr(torch.onnx, "export", dying_export)
    if exc is KeyboardInterrupt:
        assert main(["export", str(LENET300), "--onnx", str(out)]) == 130
    else:   # an exporter's failure: the other exporter is tried, then one user error naming both
        assert main(["export", str(LENET300), "--onnx", str(out)]) == 2
        assert "cannot be exported to ONNX" in capsys.readouterr().err
    assert out.read_bytes() == b"previous"
    assert _strays(tmp_path) == []


def test_interrupt_at_fsync_leaves_previous_file(tmp_path, capsys, monkeypatch):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous")

    def dying_fsync(fd):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "fsync", dying_fsync)
    assert main(["export", str(LENET300), "--onnx", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert out.read_bytes() == b"previous"
    assert _strays(tmp_path) == []


# ----------------------------------------------------------------------------- --version

def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"deepshrink {importlib.metadata.version('deepshrink')}"


def test_version_falls_back_to_the_package(monkeypatch):
    import deepshrink
    from deepshrink import cli

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert cli.version() == deepshrink.__version__


def test_one_version_reader_for_the_cli_and_the_onnx_metadata():
    from deepshrink import cli
    from deepshrink.pipelines import export
    assert cli.version is export.version and not hasattr(export, "_version")

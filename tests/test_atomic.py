"""deepshrink.atomic: whatever fails, and wherever (creating the temp file, setting its mode,
writing, fsync, the rename), the temp file is gone and the previous file is untouched."""

from __future__ import annotations

import errno
import os
import signal
import tempfile
from pathlib import Path

import pytest

from deepshrink.atomic import atomic_open, atomic_write_bytes


def _strays(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def previous(tmp_path) -> Path:
    path = tmp_path / "model.bin"
    path.write_bytes(b"previous contents")
    return path


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").is_dir() else 0


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError, OSError])
def test_failure_mid_write_removes_the_temp_file(previous, exc):
    with pytest.raises(exc):
        with atomic_open(previous) as fh:
            fh.write(b"half of the new ")
            fh.flush()
            assert _strays(previous.parent)  # the partial bytes are in the temp file, not the target
            raise exc("interrupted")
    assert previous.read_bytes() == b"previous contents"
    assert _strays(previous.parent) == []


@pytest.mark.parametrize("where", ["fchmod", "fsync", "replace", "fdopen"])
@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError])
def test_failure_in_each_step_removes_the_temp_file(previous, monkeypatch, where, exc):
    fds = _open_fds()

    def boom(*a, **k):
        raise exc(errno.EIO, "injected") if exc is OSError else exc()
    monkeypatch.setattr(os, where, boom)
    with pytest.raises(exc):
        atomic_write_bytes(previous, b"new contents")
    monkeypatch.undo()
    assert previous.read_bytes() == b"previous contents"
    assert _strays(previous.parent) == []
    assert _open_fds() == fds  # the temp file's descriptor is closed too


def test_mkstemp_failure_propagates_and_leaves_nothing(previous, monkeypatch):
    def refuse(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", k.get("dir"))
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError):
        atomic_write_bytes(previous, b"new")
    assert previous.read_bytes() == b"previous contents"
    assert _strays(previous.parent) == []


@pytest.mark.skipif(not hasattr(os, "kill") or os.name != "posix", reason="POSIX signals")
def test_sigint_while_the_temp_file_is_created_does_not_strand_it(previous, monkeypatch):
    """A Ctrl-C landing just after mkstemp created the file, before its name reached us: the
    interrupt is held until the name is known, then raised, and the file removed. The test sets
    Python's default handler and unblocks SIGINT itself: another test's library may have left the
    process ignoring or blocking it."""
    old_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    old_mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        _sigint_case(previous, monkeypatch)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGINT, old_handler if old_handler is not None else signal.default_int_handler)


def _sigint_case(previous, monkeypatch):
    real = tempfile.mkstemp

    def mkstemp_then_sigint(*a, **k):
        fd, name = real(*a, **k)
        os.kill(os.getpid(), signal.SIGINT)  # unheld, the KeyboardInterrupt would be raised here
        return fd, name
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp_then_sigint)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(previous, b"new")
    assert previous.read_bytes() == b"previous contents"
    assert _strays(previous.parent) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is restored


@pytest.mark.parametrize("target", ["adir", "", "."])
def test_a_folder_target_is_refused_before_any_temp_file(tmp_path, monkeypatch, target):
    (tmp_path / "adir").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(IsADirectoryError):
        atomic_write_bytes(target, b"x")
    assert _strays(tmp_path) == [] and _strays(tmp_path / "adir") == []


def test_interrupted_plot_leaves_no_temp_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure
    from torch import nn

    from deepshrink.plots import plot_weight_histograms
    path = tmp_path / "weights.png"
    path.write_bytes(b"old png")

    def dying_savefig(self, fh, **k):
        fh.write(b"\x89PNG partial")
        raise KeyboardInterrupt
    monkeypatch.setattr(Figure, "savefig", dying_savefig)
    with pytest.raises(KeyboardInterrupt):
        plot_weight_histograms(nn.Sequential(nn.Linear(4, 3)), path)
    assert path.read_bytes() == b"old png"
    assert _strays(tmp_path) == []


def test_clean_write_replaces_and_keeps_the_mode(previous):
    previous.chmod(0o640)
    atomic_write_bytes(previous, b"new contents")
    assert previous.read_bytes() == b"new contents"
    assert previous.stat().st_mode & 0o777 == 0o640
    assert _strays(previous.parent) == []

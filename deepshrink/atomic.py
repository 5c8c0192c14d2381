"""Atomic file writes: temp file in the same folder, fsync, rename.

A crash (or a kill) at any point leaves either the previous file or the new one, never a
half-written mixture: ``os.replace`` is atomic on POSIX within one file system.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import tempfile
import threading
from pathlib import Path
from typing import Iterator, BinaryIO

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_text"]


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a binary temp file beside ``path``; on clean exit it replaces ``path``.

    On any exception (KeyboardInterrupt included), wherever it happens — creating the temp
    file, setting its mode, in the caller's writes, fsync or the rename — the temp file is
    removed and ``path`` is left as it was. Only a hard kill (SIGKILL, power cut) can leave a
    stray ``.<name>.*.tmp`` beside it, never a half-written ``path``."""
    path = Path(path)
    if not path.name or path.name in (".", "..") or path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file name", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = -1, None
    try:
        with _sigint_deferred():  # a Ctrl-C meanwhile is raised once ``tmp`` is known: removed below
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        fh = os.fdopen(fd, "wb")
        fd = -1  # the file object owns the descriptor now
        with fh:
            if hasattr(os, "fchmod"):  # mkstemp makes 0600 files; give the usual permissions
                os.fchmod(fh.fileno(), _file_mode(path))
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except BaseException:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    # fsync the directory so the rename itself survives a power cut
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C back while the block runs, then deliver it.

    A KeyboardInterrupt raised between ``mkstemp``'s ``open`` and its return would strand a
    file whose name nobody knows. Python runs signal handlers only in the main thread, so
    swapping the SIGINT handler there for one that just records the signal closes that window;
    the previous handler then gets the signal (the default one raises KeyboardInterrupt)."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield  # another thread never sees KeyboardInterrupt; SIG_IGN/SIG_DFL/C handlers: leave alone
        return
    pending: list = []
    signal.signal(signal.SIGINT, lambda signum, frame: pending.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            previous(signal.SIGINT, pending[0])


def _file_mode(path: Path) -> int:
    """An existing file's permissions, else those of a new file under the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))

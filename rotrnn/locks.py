"""Advisory file locks, the one place the project takes them: ``flock(2)`` on a small sidecar file.

The kernel drops a flock when its holder exits or is killed, so no lock outlives its process and a requeued job never
waits on a dead one. Where the filesystem cannot lock (NFS mounted without lock support, Lustre without ``-o flock``)
``flock`` raises ``ENOLCK``, ``EOPNOTSUPP`` or ``ENOSYS``: that is an expected error, one line naming the lock file
(:class:`LockUnsupported`), never a traceback. Lock files are opened without following symbolic links, so a link
planted in a shared directory cannot make a job truncate another file.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path
from typing import IO, Iterator

from rotrnn.errors import UserError


class LockUnsupported(UserError):
    """The filesystem holding a lock file does not support flock."""


class LockBusy(UserError):
    """Another process held the lock longer than the caller was willing to wait."""

    def __init__(self, path: Path, holder: str, waited: float):
        self.path, self.holder, self.waited = path, holder, waited
        super().__init__(f"{path} is held by another process{f' ({holder})' if holder else ''}; "
                         f"gave up after {waited:g} s")


def sidecar(path: str | Path) -> Path:
    """The lock file that guards ``path``: ``.<name>.lock`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def _open(path: Path) -> IO[str]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"{path}: the lock file is a symbolic link; remove it") from None
        raise
    return os.fdopen(fd, "r+")


def _acquire(f: IO[str], path: Path, timeout: float | None, poll: float) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if timeout is None else fcntl.LOCK_NB))
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                f.seek(0)
                raise LockBusy(path, f.read().strip(), timeout) from None
            time.sleep(poll)
        except OSError as e:  # ENOLCK, EOPNOTSUPP, ENOSYS, ...: the filesystem, not a holder
            name = errno.errorcode.get(e.errno, str(e.errno))
            raise LockUnsupported(
                f"{path}: cannot lock ({name}: {e.strerror}); its filesystem does not support flock (NFS without "
                "lock support, Lustre without -o flock): use a local or lock-capable filesystem for it") from None


@contextlib.contextmanager
def locked(path: str | Path, *, timeout: float | None = None, note: str | None = None,
           poll: float = 0.05) -> Iterator[IO[str]]:
    """Hold an exclusive flock on ``path`` (created if missing) for the ``with`` block.

    ``timeout``: None waits as long as the holder holds it (it is a live process: the kernel frees a dead one's);
    0 fails at once and a positive number polls that many seconds, then raises :class:`LockBusy` naming the file and
    what the holder wrote. ``note`` is written into the file while held (who holds it) and erased on release."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _open(path) as f:
        _acquire(f, path, timeout, poll)
        try:
            if note is not None:
                f.seek(0)
                f.truncate()
                f.write(note)
                f.flush()
            yield f
        finally:
            if note is not None:
                f.seek(0)
                f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)

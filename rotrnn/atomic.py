"""Whole-file writes that a crash or a concurrent reader or writer never sees half done: write a uniquely named temp
file beside the target, fsync it, rename it over the target (atomic on POSIX within one filesystem) and fsync the
directory (so that the rename itself survives a power cut). Two writers of one file each rename a complete file of
their own; the last rename wins. Files and directories made through ``tempfile`` are created private (0600/0700);
they get the mode the user's umask asks for, so group members can read checkpoints and prepared data on a shared
project directory."""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import IO, Any, Callable


def umask() -> int:
    """The process umask, read from /proc/self/status (Linux) without changing it: setting it to read it, as
    os.umask forces, would briefly give other threads' new files the wrong mode."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def make_shared(path: str | Path) -> None:
    """chmod a file to 0666 & ~umask, a directory to 0777 & ~umask (what open()/mkdir() would have made)."""
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask())


def mkdtemp(prefix: str, dir: str | Path) -> Path:
    """tempfile.mkdtemp with the umask's mode instead of 0700."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    make_shared(tmp)
    return tmp


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Make ``path`` hold what ``write(f)`` writes to a binary file, atomically; on any failure the temp file is
    removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text(path: str | Path, text: str) -> None:
    replace(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any | None:
    """The JSON in ``path``; None if it is absent, or unreadable (a file torn by a crash of a writer that did not
    write atomically, or emptied by a full disk): that is a warning, so that the job that rewrites it can run."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        warnings.warn(f"{path}: not valid JSON ({e}); treating it as absent", RuntimeWarning, stacklevel=2)
        return None

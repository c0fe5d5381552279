"""Whole-file writes that a crash or a concurrent reader never sees half done: write a temp file beside the target,
then rename it over the target (atomic on POSIX within one filesystem). Files and directories made through
``tempfile`` are created private (0600/0700); :func:`make_shared` gives them the mode the user's umask asks for, so
group members can read checkpoints and prepared data on a shared project directory."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
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


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")

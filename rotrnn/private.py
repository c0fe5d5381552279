"""Directories only this user can write: made 0700, or accepted only as a real directory of this user that nobody
else can write. On a shared machine another user may create a folder first (a default path under /tmp, a state
directory named on the command line) and own what it holds: the compiled kernels a job loads, the user database of
a tracking server. Below the modules that keep such folders (rotrnn.train.inductor, rotrnn.train.server)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from rotrnn.errors import UserError


def private_dir(path: Path, what: str, remedy: str) -> Path:
    """Create ``path`` (mode 0700, parents as needed) or accept it only as a directory of this user, not a link,
    with no group or other permissions; otherwise one line naming it, ``what`` it is for and the ``remedy``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        found = ("a link or file" if not stat.S_ISDIR(st.st_mode)
                 else f"uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}")
        raise UserError(f"{path}: {what} must be a directory of yours with mode 0700 (found {found}); {remedy}")
    return path

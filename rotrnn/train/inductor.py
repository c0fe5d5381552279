"""A private cache directory for TorchInductor (`train.compile`).

Inductor's default cache is ``/tmp/torchinductor_$USER``: on a shared node another user can create that folder
first and own what it holds, the compiled kernels this process then loads and runs. A training job that compiles
points ``TORCHINDUCTOR_CACHE_DIR`` (torch/_inductor/runtime/cache_dir_utils.py) at a folder of its user's own cache,
mode 0700, unless the user has set it.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from rotrnn.errors import UserError

ENV = "TORCHINDUCTOR_CACHE_DIR"


def default_dir() -> Path:
    """$XDG_CACHE_HOME/rotrnn/torchinductor (~/.cache/...): the user's, shared by their runs, so that a resumed or
    repeated job reuses the kernels it compiled."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rotrnn" / "torchinductor"


def private_dir(path: Path) -> Path:
    """Create `path` (0700) or accept it only as a real directory of this user that nobody else can write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise UserError(f"{path}: the compile cache must be a directory of yours with mode 0700 (found "
                        f"{'a link or file' if not stat.S_ISDIR(st.st_mode) else f'uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}'}); "
                        f"remove it or set {ENV} to a private directory")
    return path


def use_private_cache() -> str:
    """Set TORCHINDUCTOR_CACHE_DIR to :func:`default_dir` (checked private) unless the user set it; returns it.
    PyTorch itself writes its /tmp default into the variable the first time anything asks for the cache
    (torch._inductor.runtime.cache_dir_utils.cache_dir), so that value counts as unset."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    if os.environ.get(ENV) and os.environ[ENV] != default_cache_dir():
        return os.environ[ENV]
    os.environ[ENV] = str(private_dir(default_dir()))
    return os.environ[ENV]

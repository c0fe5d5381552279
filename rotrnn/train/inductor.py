"""A private cache directory for TorchInductor (`train.compile`).

Inductor's default cache is ``/tmp/torchinductor_$USER``: on a shared node another user can create that folder
first and own what it holds, the compiled kernels this process then loads and runs. A training job that compiles
points ``TORCHINDUCTOR_CACHE_DIR`` (torch/_inductor/runtime/cache_dir_utils.py) at a folder of its user's own cache,
mode 0700, unless the user has set it.
"""
from __future__ import annotations

import os
from pathlib import Path

from rotrnn.private import private_dir

ENV = "TORCHINDUCTOR_CACHE_DIR"


def default_dir() -> Path:
    """$XDG_CACHE_HOME/rotrnn/torchinductor (~/.cache/...): the user's, shared by their runs, so that a resumed or
    repeated job reuses the kernels it compiled."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rotrnn" / "torchinductor"


def use_private_cache() -> str:
    """Set TORCHINDUCTOR_CACHE_DIR to :func:`default_dir` (checked private) unless the user set it; returns it.
    PyTorch itself writes its /tmp default into the variable the first time anything asks for the cache
    (torch._inductor.runtime.cache_dir_utils.cache_dir), so that value counts as unset."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    if os.environ.get(ENV) and os.environ[ENV] != default_cache_dir():
        return os.environ[ENV]
    os.environ[ENV] = str(private_dir(default_dir(), "the compile cache",
                                          f"remove it or set {ENV} to a private directory"))
    return os.environ[ENV]

"""The allocator setting a training process starts with: glibc keeps freed memory so CPU training steps stay cheap.

glibc's allocator serves every block above ``M_MMAP_THRESHOLD`` (128 KiB to 32 MiB, adapting) with a fresh mmap
and unmaps it on free, and gives the top of the heap back to the OS beyond ``M_TRIM_THRESHOLD``. A training step
allocates and frees the same large activations every step (PyTorch's CPU allocator does not cache), so each of them
is page-faulted and zeroed by the kernel again every step: system time that grows with the activation size.
:func:`keep_freed_memory` turns that off, so the heap keeps what a step freed for the next step: the process holds
its peak step memory (as a caching GPU allocator does) instead of returning it between steps.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

# mallopt parameters from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # glibc only (musl has no mallopt)
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory(top_pad: int = 64 << 20) -> bool:
    """Make glibc keep freed memory in the heap: no mmap per large block, no trimming, ``top_pad`` bytes of slack.

    Returns whether the settings were applied (False off glibc, where nothing changes). Call it once, early, in
    the process that trains (the CLI's start-up); it affects that process's allocations from then on.
    """
    libc = _libc()
    if libc is None:
        return False
    ok = True
    for param, value in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, top_pad)):
        ok &= libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1
    return bool(ok)

"""Fused CPU scan: forward and backward each one C++ pass over memory (``fused_cpu.cpp``), built on first use.

    forward:   h_t = λ ⊙ h_{t∓1} + v_t
    backward:  a_t = conj(λ) ⊙ a_{t±1} + g_t  (opposite direction),  ∂/∂v = a,  ∂/∂λ = Σ_{b,t} conj(h_prev_t) a_t

the same mathematics as :mod:`.function`, but where the ``recurrent`` backend spends a few hundred PyTorch calls per
scan and several passes over memory (chunk states, the carry, the λ-gradient product), this kernel keeps each
(batch, block of channels) task's states in a small local array and reads and writes every element once, walking
memory in the direction of the scan; the λ-gradient is accumulated during the backward pass. complex64 and complex128; the result does not depend on the thread count.

The extension is compiled with PyTorch's JIT loader (a C++ compiler and ninja; about a minute, once per source
version, cached in PyTorch's extensions directory, ``TORCH_EXTENSIONS_DIR``). Where it cannot be built, ``auto``
falls back to ``recurrent`` with one warning, and asking for ``fused_cpu`` by name raises with the build's error.

The loader guards a build with a ``lock`` file in the build directory that it removes when done; a process killed
mid-build leaves it, and every later loader would wait for it forever, even once the module exists. So builds here
are serialised by a flock of our own (``.rotrnn-build.lock``, freed by the kernel when its holder dies): whoever
holds it and finds the loader's ``lock`` knows it is stale, says so and removes it, then builds (or, when the module
is up to date, just loads it). Waiting for another process's build is bounded by ``ROTRNN_BUILD_LOCK_TIMEOUT``
seconds (default 600; a build takes about a minute); past it, or where the filesystem cannot flock and the loader's
lock stays that long, the build fails naming the lock and ``auto`` uses ``recurrent``.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch

from rotrnn import locks
from rotrnn.errors import UserError

SOURCE = Path(__file__).with_name("fused_cpu.cpp")
# tuned for the CPU it is built on (x86-64: -march=native; the reversed loops need its vector permutes, measured 2x
# slower without); the module name carries a digest of that CPU, so a cache shared by several machines (a cluster's
# home directory) never hands one CPU's build to another
NATIVE = platform.machine().lower() in ("x86_64", "amd64")
# no FMA contraction: a channel then gives the same bits whichever vector lane or loop remainder it falls in, so
# results do not depend on how the thread count splits the channels
CFLAGS = ["-O3", "-ffp-contract=off"] + (["-march=native"] if NATIVE else [])


def cpu_tag() -> str:
    """A digest of the CPU model and its instruction-set flags (/proc/cpuinfo; the architecture name elsewhere)."""
    text = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            seen = set()
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU part") and key not in seen:
                    seen.add(key)
                    text += line
    except OSError:
        pass
    return hashlib.sha256(text.encode()).hexdigest()[:10]


NAME = f"rotrnn_fused_cpu_{cpu_tag()}"


class BuildError(RuntimeError):
    pass


LOCK_TIMEOUT_ENV = "ROTRNN_BUILD_LOCK_TIMEOUT"
LOCK_TIMEOUT_S = 600.0


def lock_timeout() -> float:
    """Seconds to wait for another process's build (``ROTRNN_BUILD_LOCK_TIMEOUT``, default 600)."""
    value = os.environ.get(LOCK_TIMEOUT_ENV, "")
    try:
        return float(value) if value.strip() else LOCK_TIMEOUT_S
    except ValueError:
        raise UserError(f"{LOCK_TIMEOUT_ENV}={value!r}: not a number of seconds") from None


def build_directory() -> Path:
    """Where PyTorch's loader builds and caches the module (``TORCH_EXTENSIONS_DIR/<NAME>`` when that is set)."""
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(NAME, False))


def _wait_gone(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while path.exists():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _load() -> ModuleType:
    from torch.utils.cpp_extension import load

    return load(name=NAME, sources=[str(SOURCE)], extra_cflags=CFLAGS, verbose=False)


@functools.cache
def _build() -> ModuleType | BuildError:
    directory, timeout = build_directory(), lock_timeout()
    baton = directory / "lock"  # the loader's own lock file
    try:
        try:
            with locks.locked(directory / ".rotrnn-build.lock", timeout=timeout, note=f"pid {os.getpid()}\n"):
                if baton.exists():
                    warnings.warn(f"{baton}: build lock left by a process killed while building the fused CPU scan; "
                                  "removing it", RuntimeWarning, stacklevel=2)
                    baton.unlink(missing_ok=True)
                return _load()
        except locks.LockBusy as e:
            return BuildError(f"could not build the fused CPU scan: {e.path} is held by another process's build "
                              f"({e.holder or 'unknown'}) for over {timeout:g} s ({LOCK_TIMEOUT_ENV})")
        except locks.LockUnsupported:  # no flock here: the loader's lock is all there is, wait for it (bounded)
            if not _wait_gone(baton, timeout):
                return BuildError(f"could not build the fused CPU scan: {baton} has been held for over {timeout:g} s "
                                  f"({LOCK_TIMEOUT_ENV}); delete it if no build is running")
            return _load()
    except Exception as e:  # no compiler, no ninja, a failed compile: the message says which
        lines = [line for line in str(e).strip().splitlines() if line.strip()]
        return BuildError(f"could not build the fused CPU scan from {SOURCE}: {lines[-1] if lines else type(e).__name__}")


def extension() -> ModuleType:
    """The compiled module (built on the first call of the process); BuildError if it cannot be built."""
    built = _build()
    if isinstance(built, BuildError):
        raise built
    return built


@torch.compiler.assume_constant_result  # torch.compile asks once while tracing, and does not trace the build
def available() -> bool:
    """Whether the extension builds here; warns once (with the reason) when it does not."""
    built = _build()
    if isinstance(built, BuildError):
        _warn_once(str(built))
        return False
    return True


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(f"{message}; scans on CPU use the 'recurrent' backend", RuntimeWarning, stacklevel=3)


# registered as PyTorch operators (with autograd and shape functions), so that torch.compile traces through the
# scan instead of breaking its graph at an unknown C++ call
@torch.library.custom_op("rotrnn::scan_fused_cpu", mutates_args=())
def _forward(lam: torch.Tensor, v: torch.Tensor, reverse: bool) -> torch.Tensor:
    return extension().forward(lam, v, reverse)


@_forward.register_fake
def _(lam: torch.Tensor, v: torch.Tensor, reverse: bool) -> torch.Tensor:
    return torch.empty_like(v)


@torch.library.custom_op("rotrnn::scan_fused_cpu_backward", mutates_args=())
def _backward(lam: torch.Tensor, h: torch.Tensor, g: torch.Tensor, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    dv, dlam = extension().backward(lam, h, g, reverse)
    return dv, dlam


@_backward.register_fake
def _(lam: torch.Tensor, h: torch.Tensor, g: torch.Tensor, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(g), torch.empty_like(lam)


def _setup_context(ctx, inputs, output) -> None:
    lam, _, reverse = inputs
    ctx.save_for_backward(lam, output)
    ctx.reverse = reverse


def _grad(ctx, g):
    lam, h = ctx.saved_tensors
    dv, dlam = _backward(lam, h, g.contiguous(), ctx.reverse)
    return dlam, dv, None


_forward.register_autograd(_grad, setup_context=_setup_context)


def scan_fused_cpu(lam: torch.Tensor, v: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """lam (C,), v (B, L, C) complex64/complex128 CPU tensors -> h (B, L, C); differentiable in lam and v."""
    return _forward(lam, v.contiguous(), reverse)

"""A build of the fused CPU scan killed midway leaves PyTorch's loader lock (``<build dir>/lock``); later processes
must not wait for it forever: they remove a lock nobody holds and build, and give up on a live build after the
bounded wait (naming the lock), falling back to the ``recurrent`` backend. The build itself is replaced by a stand-in
that behaves like PyTorch's loader (its lock file protocol), so that no compiler runs."""
from __future__ import annotations

import errno
import fcntl
import threading
import time
import types

import pytest
import torch.utils.cpp_extension as cpp_extension
from torch.utils.file_baton import FileBaton

from rotrnn import locks
from rotrnn.ops.scan import fused_cpu

BOUND = 20.0  # seconds a call may take before the test calls it a hang


@pytest.fixture
def build_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv(fused_cpu.LOCK_TIMEOUT_ENV, "0.5")
    built = []

    def fake_load(name, **kw):
        """PyTorch's loader without the compiler: take the lock file or wait while it exists."""
        directory = tmp_path / name
        baton = FileBaton(str(directory / "lock"))
        if baton.try_acquire():
            built.append(name)
            baton.release()
        else:
            baton.wait()
        return types.SimpleNamespace(name=name)

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    fused_cpu._build.cache_clear()
    (tmp_path / fused_cpu.NAME).mkdir()
    yield tmp_path / fused_cpu.NAME, built
    fused_cpu._build.cache_clear()


def _bounded(fn):
    """fn() in a thread; its result, or a failure if it is still waiting after BOUND seconds."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(BOUND)
    assert out, f"still waiting after {BOUND} s"
    return out[0], time.monotonic() - t0


def test_a_stale_loader_lock_is_named_removed_and_the_build_runs(build_dir):
    directory, built = build_dir
    (directory / "lock").touch()  # left by a process killed mid-build
    with pytest.warns(RuntimeWarning, match=f"{directory / 'lock'}: build lock left by a process killed"):
        module, _ = _bounded(fused_cpu._build.__wrapped__)
    assert not isinstance(module, fused_cpu.BuildError) and module.name == fused_cpu.NAME
    assert built == [fused_cpu.NAME] and not (directory / "lock").exists()


def test_a_build_held_past_the_timeout_falls_back_to_recurrent_naming_the_lock(build_dir):
    directory, built = build_dir
    (directory / "lock").touch()
    with locks.locked(directory / ".rotrnn-build.lock", note="pid 4242\n"):  # another process, building
        result, took = _bounded(fused_cpu._build.__wrapped__)
        assert isinstance(result, fused_cpu.BuildError) and took < 5
        assert f"{directory / '.rotrnn-build.lock'} is held by another process's build (pid 4242) for over 0.5 s" \
            in str(result)
        with pytest.warns(RuntimeWarning, match="scans on CPU use the 'recurrent' backend"):
            assert _bounded(fused_cpu.available)[0] is False
    assert built == []


def test_without_flock_the_loader_lock_is_waited_for_a_bounded_time(build_dir, monkeypatch):
    directory, built = build_dir
    (directory / "lock").touch()
    monkeypatch.setattr(fcntl, "flock", lambda fd, op: (_ for _ in ()).throw(OSError(errno.ENOLCK, "No locks")))
    result, took = _bounded(fused_cpu._build.__wrapped__)
    assert isinstance(result, fused_cpu.BuildError) and took < 5
    assert f"{directory / 'lock'} has been held for over 0.5 s" in str(result)
    assert "delete it if no build is running" in str(result) and built == []

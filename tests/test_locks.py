"""File locks: a filesystem without flock (NFS without lock support, Lustre without -o flock) is one line naming
the lock file, a bounded wait gives up naming the holder, and a planted symbolic link is never followed."""
from __future__ import annotations

import errno
import fcntl

import pytest

from rotrnn import locks
from rotrnn.errors import UserError


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS])
def test_a_filesystem_without_flock_is_one_line_naming_the_lock(tmp_path, monkeypatch, code):
    from rotrnn.train.rundir import RunDir

    def no_flock(fd, op):
        raise OSError(code, "lock unsupported here")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    run = RunDir(tmp_path / "run")
    with pytest.raises(UserError) as e:
        with run.lock():
            pass
    message = str(e.value)
    assert isinstance(e.value, locks.LockUnsupported)
    assert str(run.lock_file) in message and errno.errorcode[code] in message and "\n" not in message
    assert "Lustre without -o flock" in message


def test_the_tracking_store_lock_on_such_a_filesystem_is_one_line(tmp_path, monkeypatch):
    from rotrnn.train.tracking import _store_lock

    monkeypatch.setattr(fcntl, "flock", lambda fd, op: (_ for _ in ()).throw(OSError(errno.ENOLCK, "No locks")))
    with pytest.raises(locks.LockUnsupported, match=f"{tmp_path}/mlflow.db.lock: cannot lock .ENOLCK"):
        with _store_lock(f"sqlite:///{tmp_path}/mlflow.db"):
            pass


def test_a_bounded_wait_gives_up_naming_the_file_and_holder(tmp_path):
    path = tmp_path / ".x.lock"
    with locks.locked(path, note="host a pid 1\n"):
        # flock locks belong to the open file: a second open in this process contends like another process
        with pytest.raises(locks.LockBusy, match=r"\.x\.lock is held by another process \(host a pid 1\); gave up "
                                                 r"after 0.2 s"):
            with locks.locked(path, timeout=0.2):
                pass
    with locks.locked(path, timeout=0):  # released: free at once
        pass


def test_a_symlink_planted_as_lock_file_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / ".lock"
    link.symlink_to(victim)
    with pytest.raises(UserError, match="the lock file is a symbolic link"):
        with locks.locked(link, note="pid 1\n"):
            pass
    assert victim.read_text() == "precious\n"

"""Which filesystem a path lives on, from the kernel's mount table (``/proc/mounts``, see proc_pid_mounts(5)).

Used to refuse what network filesystems do not do reliably: SQLite's POSIX locks on NFS, Lustre, GPFS, BeeGFS,
SMB or CephFS (the SQLite FAQ, "Can multiple applications access the same database at once?": locking is broken
on many network filesystems), which is how many jobs sharing one ``mlflow.db`` corrupt it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

MOUNTS = "/proc/mounts"
#: fstype fields (third column of /proc/mounts) of network and cluster filesystems
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "panfs", "afs",
    "ocfs2", "gfs2", "9p", "orangefs", "pvfs2", "wekafs", "davfs",
    # FUSE clients of network stores
    "fuse.sshfs", "fuse.glusterfs", "fuse.ceph", "fuse.cephfs", "fuse.ceph-fuse", "fuse.s3fs", "fuse.gcsfuse",
    "fuse.rclone", "fuse.juicefs", "fuse.beegfs", "fuse.lustre", "fuse.davfs",
})


class Mount(NamedTuple):
    device: str
    mountpoint: str
    fstype: str

    @property
    def is_network(self) -> bool:
        return self.fstype in NETWORK_FILESYSTEMS


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash in paths as octal escapes (\\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def read_mounts(mounts: str | os.PathLike = MOUNTS) -> list[Mount]:
    out = []
    for line in Path(mounts).read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3:
            out.append(Mount(_unescape(fields[0]), _unescape(fields[1]), fields[2]))
    return out


def mount_of(path: str | os.PathLike, mounts: str | os.PathLike = MOUNTS) -> Mount | None:
    """The mount holding `path` (which need not exist yet: its nearest existing parent decides): the entry with the
    longest mount point above the resolved path, the last one listed where several share it (the one on top).
    None where the mount table cannot be read (not Linux)."""
    try:
        table = read_mounts(mounts)
    except OSError:
        return None
    target = Path(os.path.abspath(path))
    while not target.exists() and target != target.parent:
        target = target.parent
    target = target.resolve()
    best: Mount | None = None
    for m in table:
        point = Path(m.mountpoint)
        if (target == point or point in target.parents) and (
                best is None or len(point.parts) >= len(Path(best.mountpoint).parts)):
            best = m
    return best

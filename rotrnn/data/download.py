"""Fetch a task's archive and unpack it safely into the raw root.

- Streaming download with a tqdm progress bar into `<file>.part`; an interrupted transfer resumes with an HTTP
  Range request (a server that ignores Range restarts the file); transient failures are retried with exponential
  back-off.
- The sha256 of every fetched file is recorded beside it (`<file>.sha256`, sha256sum format) and checked against
  the published sha256/md5 where there is one; only a verified file is renamed to its final name.
- `mirror` takes the file from a local staging directory or another base URL instead of the upstream URLs.
- If no server can be reached at all, it fails at once with a message saying which file to place where.
- Extraction (tar of any compression, or zip) writes each archive into one directory of its own under the raw root
  (``Archive.own_dir``; an archive without a top-level folder is unpacked into it) and refuses, in one line:
  absolute paths, ``..``, any member that is not a file or directory (links, devices, fifos), a member outside its
  directory, more members or bytes than the archive's caps, and a tar without its end-of-archive marker. It writes
  the members itself into a temp directory beside the target, each at a resolved path checked to stay inside, never
  over an existing file, and moves the directory into place only when the whole archive was read; an existing
  directory of that name is never replaced. A completion marker records it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rotrnn import atomic, locks
from rotrnn.data.tasks import Archive
from rotrnn.errors import UserError

# small enough that an interrupted transfer loses little (a read cut short by a dropped connection is discarded)
CHUNK = 1 << 16


class DownloadError(UserError, RuntimeError):
    """A file could not be fetched."""


class ChecksumError(DownloadError):
    """A fetched file does not match its published checksum."""


class UnsafeArchiveError(DownloadError):
    """An archive member would be written outside the extraction target."""


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str


def file_digests(path: Path, algos: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    hs = {a: hashlib.new(a) for a in algos}
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            for h in hs.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hs.items()}


def _recorded(final: Path) -> str | None:
    """The sha256 in ``<file>.sha256``, if there is one."""
    record = final.with_name(final.name + ".sha256")
    text = record.read_text().split() if record.is_file() else []
    return text[0].lower() if text else None


def _verify(path: Path, archive: Archive, shown_as: str, final: Path) -> str:
    """Hash `path`; raise ChecksumError (after deleting it: a corrupt file must not be resumed) if a published
    checksum disagrees. With none published, the sha256 recorded when the file was first fetched is the reference
    (trust on first use): a changed file is refused and kept for the user to judge. Returns the sha256."""
    d = file_digests(path, ("sha256", "md5") if archive.md5 else ("sha256",))
    for algo, expected in (("sha256", archive.sha256), ("md5", archive.md5)):
        if expected and d[algo] != expected.lower():
            path.unlink(missing_ok=True)
            raise ChecksumError(f"{shown_as}: {algo} mismatch: expected {expected}, got {d[algo]}; the file was "
                                "deleted, download it again")
    first = None if (archive.sha256 or archive.md5) else _recorded(final)
    if first and d["sha256"] != first:
        record = final.with_name(final.name + ".sha256")
        raise ChecksumError(f"{shown_as}: sha256 {d['sha256']} differs from {first}, recorded in {record} when "
                            f"{archive.filename} was first fetched (no checksum is published for it); if the new "
                            f"file is the one you want, delete {record} and run again")
    return d["sha256"]


def _record(final: Path, sha256: str) -> None:
    atomic.write_text(final.with_name(final.name + ".sha256"), f"{sha256}  {final.name}\n")


def _placement_hint(archive: Archive, dest_dir: Path) -> str:
    sums = ", ".join(f"{a} {v}" for a, v in (("sha256", archive.sha256), ("md5", archive.md5)) if v)
    return (f"place {archive.filename}{f' ({sums})' if sums else ''} at {dest_dir / archive.filename}, or pass "
            f"--mirror DIR with a directory holding it, then run the command again")


def fetch(archive: Archive, dest_dir: str | Path, mirror: str | None = None, *, retries: int = 5,
          backoff: float = 2.0, timeout: float = 30.0, progress: bool = True) -> Fetched:
    """Make `dest_dir/archive.filename` present and verified; returns its path and sha256."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / archive.filename
    if final.exists():
        sha = _verify(final, archive, str(final), final)
        _record(final, sha)
        return Fetched(final, sha)
    part = final.with_name(final.name + ".part")
    if mirror and "://" not in mirror:
        src = Path(mirror) / archive.filename
        if not src.is_file():
            raise DownloadError(f"mirror directory {mirror} has no {archive.filename} (expected {src})")
        _copy_with_progress(src, part, progress)
    else:
        # https before http: the same file from a host that proves who it is
        urls = ([mirror.rstrip("/") + "/" + archive.filename] if mirror else
                sorted(archive.urls, key=lambda u: not u.startswith("https://")))
        _download_any(urls, part, archive, dest_dir, retries=retries, backoff=backoff, timeout=timeout,
                      progress=progress)
    sha = _verify(part, archive, f"{archive.filename} (downloaded to {part})", final)
    os.replace(part, final)
    _record(final, sha)
    return Fetched(final, sha)


def _copy_with_progress(src: Path, part: Path, progress: bool) -> None:
    from tqdm import tqdm

    with open(src, "rb") as fi, open(part, "wb") as fo, tqdm(
            total=src.stat().st_size, unit="B", unit_scale=True, desc=src.name, disable=not progress) as bar:
        for block in iter(lambda: fi.read(CHUNK), b""):
            fo.write(block)
            bar.update(len(block))


class _Retryable(Exception):
    """A failure worth retrying after a back-off (server error, dropped connection)."""


class _Unreachable(DownloadError):
    """No connection could be made at all."""


class _TlsFailure(DownloadError):
    """The TLS handshake or the certificate check failed: not a network outage, not worth a retry."""


def _download_any(urls: list[str], part: Path, archive: Archive, dest_dir: Path, *, retries: int, backoff: float,
                  timeout: float, progress: bool) -> None:
    import requests

    errors: list[str] = []
    with requests.Session() as session:
        session.headers["User-Agent"] = "rotrnn-data/1 (python-requests)"
        unreachable = tls = 0
        for url in urls:
            try:
                _download(session, url, part, archive, retries=retries, backoff=backoff, timeout=timeout,
                          progress=progress)
                return
            except _Unreachable as e:
                unreachable += 1
                errors.append(f"{url}: {e}")
            except _TlsFailure as e:
                tls += 1
                errors.append(f"{url}: {e}")
            except DownloadError as e:
                errors.append(f"{url}: {e}")
    joined = "\n  ".join(errors)
    if tls and tls + unreachable == len(urls):
        raise DownloadError(f"TLS failure for {archive.filename}: the server's certificate could not be verified "
                            "(a proxy that intercepts TLS needs its CA bundle in REQUESTS_CA_BUNDLE):\n  "
                            f"{joined}\nAlternatively, {_placement_hint(archive, dest_dir)}.")
    if unreachable == len(urls):
        raise DownloadError(f"cannot reach any server for {archive.filename} (no network?):\n  {joined}\n"
                            f"To continue offline, {_placement_hint(archive, dest_dir)}.")
    raise DownloadError(f"could not download {archive.filename}:\n  {joined}\n"
                        f"Alternatively, {_placement_hint(archive, dest_dir)}.")


def _download(session, url: str, part: Path, archive: Archive, *, retries: int, backoff: float, timeout: float,
              progress: bool) -> None:
    """Stream `url` into `part`, resuming from its current size. Connection failures before the first byte of the
    first attempt raise _Unreachable at once (no back-off: the network is down); later failures are retried."""
    import requests
    from tqdm import tqdm

    got_response = False
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            with session.get(url, headers=headers, stream=True, timeout=timeout) as r:
                got_response = True
                if r.status_code == 416 and offset:
                    # requested range starts at or past the end: the part is complete if its size is right
                    total = _total_from_content_range(r.headers.get("Content-Range"))
                    if total == offset or (total is None and archive.size == offset):
                        return
                    part.unlink()
                    raise _Retryable(f"HTTP 416 with a {offset}-byte partial file; restarting")
                if r.status_code in (429, 500, 502, 503, 504):
                    raise _Retryable(f"HTTP {r.status_code}")
                if r.status_code not in (200, 206):
                    raise DownloadError(f"HTTP {r.status_code} {r.reason}")
                if r.status_code == 200 or offset == 0:
                    offset = 0  # the server ignored Range (or none was sent): start the file over
                    mode = "wb"
                else:
                    start = _start_from_content_range(r.headers.get("Content-Range"))
                    if start != offset:
                        part.unlink()
                        raise _Retryable(f"server resumed at byte {start}, not {offset}; restarting")
                    mode = "ab"
                remaining = r.headers.get("Content-Length")
                expected = offset + int(remaining) if remaining is not None else archive.size
                # never more than the archive's known size (or, unknown, what it may unpack to)
                limit = archive.size or archive.max_bytes
                if expected is not None and expected > limit:
                    raise DownloadError(f"the server announces {expected} bytes, more than the {limit} expected")
                written = offset
                with open(part, mode) as f, tqdm(total=expected, initial=offset, unit="B", unit_scale=True,
                                                 desc=archive.filename, disable=not progress) as bar:
                    for block in r.iter_content(CHUNK):
                        written += len(block)
                        if written > limit:
                            f.close()
                            part.unlink()
                            raise DownloadError(f"the server sent more than the {limit} bytes expected; stopped "
                                                "and deleted the partial file")
                        f.write(block)
                        bar.update(len(block))
                size = part.stat().st_size
                if expected is not None and size != expected:
                    raise _Retryable(f"connection closed after {size} of {expected} bytes")
                return
        except requests.exceptions.SSLError as e:
            raise _TlsFailure(f"TLS failure: {e}") from e
        except (requests.ConnectionError, requests.Timeout) as e:
            if not got_response and attempt == 0:
                raise _Unreachable(f"{type(e).__name__}: {e}") from e
            err = f"{type(e).__name__}: {e}"
        except (requests.exceptions.ChunkedEncodingError, _Retryable) as e:
            err = str(e)
        if attempt == retries:
            raise DownloadError(f"gave up after {retries + 1} attempts; last error: {err}; partial data kept in "
                                f"{part} and resumed next time")


def _total_from_content_range(value: str | None) -> int | None:
    # "bytes */1234" or "bytes 0-99/1234"
    if value and "/" in value and not value.endswith("/*"):
        return int(value.rsplit("/", 1)[1])
    return None


def _start_from_content_range(value: str | None) -> int | None:
    if value and value.startswith("bytes ") and "-" in value:
        return int(value[6:].split("-", 1)[0])
    return None


# ---------------------------------------------------------------------------------------------------- extraction
# Members are written here, not by tarfile/zipfile's extract (whose safety filters depend on the interpreter's patch
# level: Python 3.11.7's `data` filter falls to a chain of long symlinks, CVE-2025-4517). The datasets hold only
# directories and regular files, so anything else is refused outright.

class _Budget:
    """The caps of one archive (Archive.max_members, Archive.max_bytes): a decompression bomb stops at them."""

    def __init__(self, spec: Archive, shown: str):
        self.spec, self.shown, self.members, self.bytes = spec, shown, 0, 0

    def member(self, name: str) -> None:
        self.members += 1
        if self.members > self.spec.max_members:
            raise UnsafeArchiveError(f"{self.shown}: more than {self.spec.max_members} members (at {name!r}); "
                                     "refusing a possible decompression bomb")

    def add(self, n: int, name: str) -> None:
        self.bytes += n
        if self.bytes > self.spec.max_bytes:
            raise UnsafeArchiveError(f"{self.shown}: more than {self.spec.max_bytes} bytes unpacked (at {name!r}); "
                                     "refusing a possible decompression bomb")


def _member_path(name: str, spec: Archive, shown: str) -> PurePosixPath:
    """Where a member goes, relative to the extraction root: inside the archive's own directory, or refused."""
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{shown}: member {name!r} has an absolute path")
    if ".." in p.parts or "\\" in name or "\0" in name:
        raise UnsafeArchiveError(f"{shown}: member {name!r} contains '..' or a backslash")
    if not p.parts:
        raise UnsafeArchiveError(f"{shown}: member {name!r} has an empty name")
    if spec.flat:
        return PurePosixPath(spec.own_dir, *p.parts)
    if p.parts[0] != spec.own_dir:
        raise UnsafeArchiveError(f"{shown}: member {name!r} lies outside {spec.own_dir}/, the one directory this "
                                 "archive may write")
    return p


def _make_dirs(root: Path, rel: PurePosixPath, shown: str) -> Path:
    """Create root/rel as real directories (never through a link) and return it."""
    d = root
    for part in rel.parts:
        d = d / part
        try:
            os.mkdir(d, 0o777)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(d).st_mode):
                raise UnsafeArchiveError(f"{shown}: {rel.as_posix()!r} is a file and a directory") from None
    return d


def _write_member(root: Path, rel: PurePosixPath, src, size: int, budget: _Budget) -> None:
    """Write one regular file at root/rel: its final path resolved and checked first, never over an existing file,
    never through a link, counted against the archive's caps."""
    name = rel.as_posix()
    if budget.bytes + size > budget.spec.max_bytes:
        budget.add(size, name)  # refuses before writing a member its header says is too large
    parent = _make_dirs(root, rel.parent, budget.shown)
    dest = parent / rel.name
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(dest)]) != real_root:
        raise UnsafeArchiveError(f"{budget.shown}: member {name!r} would be written outside the target")
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except FileExistsError:
        raise UnsafeArchiveError(f"{budget.shown}: member {name!r} appears twice") from None
    with os.fdopen(fd, "wb") as out:
        for block in iter(lambda: src.read(CHUNK), b""):
            budget.add(len(block), name)
            out.write(block)


def _end_marked_tarinfo() -> tuple[type[tarfile.TarInfo], dict[str, bytes]]:
    """A TarInfo class that remembers the last header block read: a tar that ends without its end-of-archive
    marker (a zero block; e.g. cut at a member boundary) reads as complete through tarfile's own API."""
    seen = {"last": b""}

    class Member(tarfile.TarInfo):
        @classmethod
        def frombuf(cls, buf, encoding, errors):
            seen["last"] = bytes(buf)
            return super().frombuf(buf, encoding, errors)

    return Member, seen


def _extract_tar(archive_path: Path, tmp: Path, spec: Archive, budget: _Budget) -> None:
    shown = archive_path.name
    member_class, seen = _end_marked_tarinfo()
    # stream mode: one pass over a multi-GB gzip; each member is checked before anything of it is written
    with tarfile.open(archive_path, "r|*", tarinfo=member_class) as tf:
        for m in tf:
            budget.member(m.name)
            rel = _member_path(m.name, spec, shown)
            if m.isdir():
                _make_dirs(tmp, rel, shown)
            elif m.isreg():
                _write_member(tmp, rel, tf.extractfile(m), m.size, budget)
            else:
                kind = ("symlink" if m.issym() else "hard link" if m.islnk() else
                        "device" if m.ischr() or m.isblk() else "fifo" if m.isfifo() else f"type {m.type!r}")
                raise UnsafeArchiveError(f"{shown}: member {m.name!r} is a {kind}; the datasets hold only files "
                                         "and directories")
    if seen["last"] != tarfile.NUL * tarfile.BLOCKSIZE:
        raise DownloadError(f"{archive_path}: truncated: the tar ends without its end-of-archive marker; "
                            "delete it and download it again")


def _extract_zip(archive_path: Path, tmp: Path, spec: Archive, budget: _Budget) -> None:
    shown = archive_path.name
    with zipfile.ZipFile(archive_path) as z:
        for info in z.infolist():
            budget.member(info.filename)
            rel = _member_path(info.filename, spec, shown)
            kind = stat.S_IFMT(info.external_attr >> 16)
            if info.is_dir():
                _make_dirs(tmp, rel, shown)
            elif kind in (0, stat.S_IFREG):
                with z.open(info) as src:
                    _write_member(tmp, rel, src, info.file_size, budget)
            else:
                raise UnsafeArchiveError(f"{shown}: zip member {info.filename!r} is a link or special file")


def _marker(target: Path, archive_path: Path) -> Path:
    return target / f".{archive_path.name}.extracted"


def is_extracted(archive_path: Path, target: Path) -> bool:
    return _marker(Path(target), Path(archive_path)).exists()


def extract(archive_path: str | Path, target: str | Path, sha256: str | None = None, *,
            spec: Archive | None = None) -> list[str]:
    """Unpack a tar (any compression) or zip into its own directory ``target/<spec.own_dir>``, safely; returns
    the top-level name it placed. Everything is written into a temp directory first and moved into place only when
    the whole archive was read; what already sits in ``target`` is never replaced."""
    archive_path, target = Path(archive_path), Path(target)
    spec = spec or Archive(filename=archive_path.name, urls=())
    own = target / spec.own_dir
    if own.exists() or own.is_symlink():
        raise UnsafeArchiveError(f"{archive_path.name}: {own} already exists and was not unpacked from it; move it "
                                 "away or delete it, then run the command again (nothing is replaced)")
    target.mkdir(parents=True, exist_ok=True)
    tmp = atomic.mkdtemp(f".extract-{archive_path.name}-", target)
    budget = _Budget(spec, archive_path.name)
    try:
        try:
            if zipfile.is_zipfile(archive_path):
                _extract_zip(archive_path, tmp, spec, budget)
            else:
                _extract_tar(archive_path, tmp, spec, budget)
        except (tarfile.ReadError, zipfile.BadZipFile, EOFError, zlib.error) as e:
            raise DownloadError(f"{archive_path}: not a readable tar or zip archive ({e})") from e
        if not (tmp / spec.own_dir).is_dir():
            raise UnsafeArchiveError(f"{archive_path.name}: holds nothing under {spec.own_dir}/")
        atomic.make_shared(tmp / spec.own_dir)
        try:
            os.rename(tmp / spec.own_dir, own)  # fails rather than replace a directory that appeared meanwhile
        except OSError as e:
            raise UnsafeArchiveError(f"{archive_path.name}: cannot move it into place at {own} ({e.strerror}); "
                                     "nothing is replaced") from None
        atomic.write_json(_marker(target, archive_path),
                          {"archive": archive_path.name, "sha256": sha256, "entries": [spec.own_dir]})
        return [spec.own_dir]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_task(name: str, raw_root: str | Path, mirror: str | None = None, *, progress: bool = True,
                  **fetch_kw) -> list[Path]:
    """Fetch every archive of task `name` into `raw_root` and unpack it there (once: a marker records it, so tasks
    that share lra_release.gz unpack it only once). Returns the archive paths."""
    from rotrnn.data.tasks import get_task

    raw_root = Path(raw_root)
    paths = []
    for archive in get_task(name).archives:
        path = raw_root / archive.filename
        if archive.extract and is_extracted(path, raw_root):
            paths.append(path)
            continue
        # one download and unpacking of an archive per raw root at a time (tasks share lra_release.gz)
        with locks.locked(raw_root / f".{archive.filename}.lock"):
            if not (archive.extract and is_extracted(path, raw_root)):
                fetched = fetch(archive, raw_root, mirror, progress=progress, **fetch_kw)
                if archive.extract:
                    extract(fetched.path, raw_root, fetched.sha256, spec=archive)
        paths.append(path)
    return paths

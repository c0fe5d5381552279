"""Downloads against a local HTTP server (Range, injected failures), checksums, mirrors, the offline message, and
safe extraction of crafted archives."""
from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rotrnn.data.download import ChecksumError, DownloadError, UnsafeArchiveError, download_task, extract, fetch
from rotrnn.data.tasks import Archive

PAYLOAD = bytes(range(256)) * 1024  # 256 KiB: several download chunks
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Server:
    """Serves PAYLOAD at /<any name>. `cut_first`: the first that many GETs send the full headers but close after
    `cut_at` bytes (an interrupted transfer). `ranges`: whether Range requests are honoured. `status`: force a
    status code for every request."""

    def __init__(self, cut_first=0, cut_at=5000, ranges=True, status=None, payload=PAYLOAD, length=True):
        self.cut_first, self.cut_at, self.ranges, self.status = cut_first, cut_at, ranges, status
        self.payload, self.length = payload, length  # length: send Content-Length (else the body ends at close)
        self.requests: list[str | None] = []  # the Range header of each request
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append(rng)
                if server.status:
                    self.send_error(server.status)
                    return
                start = int(rng[6:].split("-")[0]) if (rng and server.ranges) else 0
                PAYLOAD = server.payload
                body = PAYLOAD[start:]
                if start >= len(PAYLOAD) and rng and server.ranges:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                if server.length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if len(server.requests) <= server.cut_first:
                    self.wfile.write(body[:server.cut_at])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.handle_error = lambda request, address: None  # a client hanging up mid-body is a test case
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.httpd.shutdown()
        self.httpd.server_close()


def archive(server=None, **kw):
    kw.setdefault("sha256", SHA)
    return Archive(filename="blob.bin", urls=(f"{server.url}/blob.bin",) if server else ("http://x/blob.bin",), **kw)


FAST = dict(retries=3, backoff=0.01, timeout=5, progress=False)


def test_plain_download_records_sha256(tmp_path):
    with Server() as s:
        got = fetch(archive(s), tmp_path, **FAST)
    assert got.path.read_bytes() == PAYLOAD and got.sha256 == SHA
    assert (tmp_path / "blob.bin.sha256").read_text() == f"{SHA}  blob.bin\n"
    assert not (tmp_path / "blob.bin.part").exists()


def test_interrupted_download_resumes_with_range(tmp_path):
    with Server(cut_first=2, cut_at=100_000) as s:
        got = fetch(archive(s), tmp_path, **FAST)
    assert got.path.read_bytes() == PAYLOAD
    # the first attempt starts at 0, each retry asks for the rest of the file from further on
    assert len(s.requests) == 3 and s.requests[0] is None
    starts = [int(r.removeprefix("bytes=").removesuffix("-")) for r in s.requests[1:]]
    assert 0 < starts[0] < starts[1] < len(PAYLOAD)


def test_server_ignoring_range_restarts_file(tmp_path):
    (tmp_path / "blob.bin.part").write_bytes(b"garbage that is not a prefix")
    with Server(ranges=False) as s:
        got = fetch(archive(s), tmp_path, **FAST)
    assert got.path.read_bytes() == PAYLOAD and s.requests == ["bytes=28-"]


def test_complete_part_file_is_finished_by_416(tmp_path):
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD)
    with Server() as s:
        fetch(archive(s), tmp_path, **FAST)
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD


def test_gives_up_and_keeps_partial_data(tmp_path):
    with Server(cut_first=10, cut_at=70_000) as s:
        with pytest.raises(DownloadError, match="gave up after 3 attempts"):
            fetch(archive(s), tmp_path, **{**FAST, "retries": 2})
    assert not (tmp_path / "blob.bin").exists()
    kept = (tmp_path / "blob.bin.part").read_bytes()
    assert 0 < len(kept) < len(PAYLOAD) and kept == PAYLOAD[:len(kept)]  # a true prefix, kept for the next resume


def test_checksum_mismatch_rejected(tmp_path):
    with Server() as s:
        with pytest.raises(ChecksumError, match=r"blob.bin .*sha256 mismatch: expected 0000"):
            fetch(archive(s, sha256="0" * 64), tmp_path, **FAST)
        assert list(tmp_path.iterdir()) == []
        with pytest.raises(ChecksumError, match="md5 mismatch"):
            fetch(archive(s, sha256=None, md5="f" * 32), tmp_path, **FAST)
        got = fetch(archive(s, sha256=None, md5=hashlib.md5(PAYLOAD).hexdigest()), tmp_path, **FAST)
        assert got.sha256 == SHA  # recorded even when only an md5 is published
    assert (tmp_path / "blob.bin.sha256").exists()


def test_http_error_names_url(tmp_path):
    with Server(status=404) as s:
        with pytest.raises(DownloadError, match=r"(?s)/blob.bin: HTTP 404 Not Found.*place blob.bin"):
            fetch(archive(s), tmp_path, **FAST)


def test_no_network_fails_fast_with_placement_message(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connection refused
    a = Archive(filename="blob.bin", urls=(f"http://127.0.0.1:{port}/blob.bin",), sha256=SHA)
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as e:
        fetch(a, tmp_path, retries=5, backoff=10.0, timeout=5, progress=False)
    assert time.monotonic() - t0 < 5  # no back-off when nothing can be reached
    msg = str(e.value)
    assert "cannot reach any server for blob.bin" in msg
    assert f"place blob.bin (sha256 {SHA}) at {tmp_path / 'blob.bin'}" in msg and "--mirror" in msg


def test_mirror_directory_and_url(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "blob.bin").write_bytes(PAYLOAD)
    got = fetch(archive(), tmp_path / "a", mirror=str(mirror), **FAST)
    assert got.path.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match=f"has no blob.bin \\(expected {tmp_path / 'empty' / 'blob.bin'}\\)"):
        fetch(archive(), tmp_path / "b", mirror=str(tmp_path / "empty"), **FAST)
    with Server() as s:
        got = fetch(archive(), tmp_path / "c", mirror=s.url + "/", **FAST)
    assert got.path.read_bytes() == PAYLOAD and s.requests == [None]


def test_existing_file_verified_not_refetched(tmp_path):
    (tmp_path / "blob.bin").write_bytes(PAYLOAD)
    assert fetch(archive(), tmp_path, **FAST).sha256 == SHA  # the bogus URL is never contacted
    (tmp_path / "blob.bin").write_bytes(b"corrupt")
    with pytest.raises(ChecksumError):
        fetch(archive(), tmp_path, **FAST)


def test_without_a_published_checksum_the_first_fetch_is_the_reference(tmp_path):
    """Trust on first use: the sha256 recorded at the first fetch is compared on every later run; a changed file
    (a replaced mirror copy) is refused, naming both digests, and the record is left as it was."""
    with Server() as s:
        got = fetch(archive(s, sha256=None), tmp_path, **FAST)
    assert (tmp_path / "blob.bin.sha256").read_text() == f"{SHA}  blob.bin\n"
    assert fetch(archive(sha256=None), tmp_path, **FAST).sha256 == got.sha256 == SHA
    (tmp_path / "blob.bin").write_bytes(b"another file")
    other = hashlib.sha256(b"another file").hexdigest()
    with pytest.raises(ChecksumError, match=f"sha256 {other} differs from {SHA}, recorded in .*blob.bin.sha256"):
        fetch(archive(sha256=None), tmp_path, **FAST)
    (tmp_path / "blob.bin").unlink()  # fetched again from a server that now serves something else
    with Server(payload=b"tampered" * 1000) as s:
        with pytest.raises(ChecksumError, match=f"differs from {SHA}"):
            fetch(archive(s, sha256=None), tmp_path, **FAST)
    assert (tmp_path / "blob.bin.sha256").read_text() == f"{SHA}  blob.bin\n" and not (tmp_path / "blob.bin").exists()


@pytest.mark.parametrize("length", [True, False], ids=["announced", "unannounced"])
def test_a_body_larger_than_the_archive_is_cut_off(tmp_path, length):
    with Server(payload=PAYLOAD + bytes(10 * len(PAYLOAD)), length=length) as s:
        with pytest.raises(DownloadError, match=f"more than the {len(PAYLOAD)} (bytes )?expected"):
            fetch(archive(s, size=len(PAYLOAD)), tmp_path, **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing kept, nothing beyond the size ever written


def test_https_is_tried_before_http_and_a_tls_failure_says_so(tmp_path, monkeypatch):
    """The plain-HTTP test server cannot speak TLS: an https URL to it fails the handshake, which must read as a
    TLS failure (not 'no network?'), and the http URL listed first is still tried after the https one."""
    import requests

    tried = []
    real = requests.Session.get
    monkeypatch.setattr(requests.Session, "get", lambda self, url, **kw: tried.append(url) or real(self, url, **kw))
    with Server() as s:
        https = s.url.replace("http://", "https://") + "/blob.bin"
        a = Archive("blob.bin", (f"{s.url}/blob.bin", https), sha256=SHA)
        assert fetch(a, tmp_path / "a", **FAST).sha256 == SHA
        assert tried[0] == https and tried[-1] == f"{s.url}/blob.bin"
        with pytest.raises(DownloadError) as e:
            fetch(Archive("blob.bin", (https,), sha256=SHA), tmp_path / "b", **FAST)
    message = str(e.value)
    assert message.startswith("TLS failure for blob.bin") and "no network" not in message
    assert "REQUESTS_CA_BUNDLE" in message


# ------------------------------------------------------------------------------------------------ extraction

def make_tar(path, members, mode="w:gz"):
    """members: (name, kind, data_or_linkname); kind file, dir, sym, hard, chr, fifo."""
    types = {"sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}
    with tarfile.open(path, mode) as tf:
        for name, kind, arg in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(arg)
                tf.addfile(info, io.BytesIO(arg))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.type = types[kind]
                info.linkname = arg or ""
                tf.addfile(info)


def spec(name, **kw):
    return Archive(filename=name, urls=(), **kw)


def test_a_safe_tar_lands_in_its_own_directory_with_a_marker(tmp_path):
    path = tmp_path / "ok.tar.gz"
    make_tar(path, [("ok", "dir", None), ("ok/a.txt", "file", b"hello"), ("./ok/sub/b.txt", "file", b"x")])
    target = tmp_path / "raw"
    assert extract(path, target, "abc") == ["ok"]
    assert (target / "ok/a.txt").read_text() == "hello" and (target / "ok/sub/b.txt").read_text() == "x"
    assert json.loads((target / ".ok.tar.gz.extracted").read_text())["sha256"] == "abc"
    assert sorted(p.name for p in target.iterdir()) == [".ok.tar.gz.extracted", "ok"]  # no temp dir left


def _symlink_chain(depth=16):
    """CVE-2025-4517's shape: a chain of symlinks whose long names make os.path.realpath give up before reaching
    the end, so a path-text check of the final link passes; then a file written through it."""
    long = "d" * 240
    members, here = [], ""
    for i in range(depth):
        members.append((f"top/{here}{long}", "dir", None))
        members.append((f"top/{here}l{i}", "sym", long))
        here += f"l{i}/"
    members.append((f"top/{here}escape", "sym", "../" * (depth + 1) + "outside"))
    members.append((f"top/{here}escape/evil", "file", b"pwned"))
    return members


@pytest.mark.parametrize("bad, message", [
    ([("/etc/evil", "file", b"x")], "member '/etc/evil' has an absolute path"),
    ([("top/../../evil", "file", b"x")], "contains '..'"),
    ([("top/link", "sym", "a.txt")], "member 'top/link' is a symlink"),  # even one pointing inside
    ([("top/abs", "sym", "/etc/passwd")], "is a symlink"),
    ([("top/hard", "hard", "top/a.txt")], "member 'top/hard' is a hard link"),
    ([("top/null", "chr", None)], "member 'top/null' is a device"),
    ([("top/pipe", "fifo", None)], "member 'top/pipe' is a fifo"),
    ([("other/x.txt", "file", b"x")], "'other/x.txt' lies outside top/"),
    ([("top/a.txt", "file", b"again")], "member 'top/a.txt' appears twice"),
    (_symlink_chain(), "is a symlink"),
], ids=["absolute", "dotdot", "symlink", "symlink-abs", "hardlink", "device", "fifo", "outside", "twice", "chain"])
def test_hostile_tar_refused_and_nothing_written(tmp_path, bad, message):
    path = tmp_path / "evil.tar.gz"
    make_tar(path, [("top/a.txt", "file", b"fine"), *bad, ("top/z.txt", "file", b"after")])
    target = tmp_path / "raw"
    with pytest.raises(UnsafeArchiveError, match=f"evil.tar.gz: .*{message}"):
        extract(path, target, spec=spec("evil.tar.gz", root="top"))
    assert list(target.iterdir()) == []  # even the safe member before the bad one is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar.gz", "raw"]


@pytest.mark.parametrize("caps, message", [
    ({"max_members": 50}, "more than 50 members"),
    ({"max_bytes": 100_000}, "more than 100000 bytes unpacked"),
])
def test_decompression_bombs_stop_at_the_archives_caps(tmp_path, caps, message):
    path = tmp_path / "bomb.tar.gz"
    make_tar(path, [("bomb/big", "file", bytes(1_000_000))] if "max_bytes" in caps else
             [(f"bomb/{i}", "file", b"") for i in range(1000)])
    assert path.stat().st_size < 10_000  # 100x smaller than what it unpacks to, and more
    with pytest.raises(UnsafeArchiveError, match=f"bomb.tar.gz: {message}.*decompression bomb"):
        extract(path, tmp_path / "raw", spec=spec("bomb.tar.gz", **caps))
    assert list((tmp_path / "raw").iterdir()) == []


def test_every_dataset_archive_has_caps_above_its_known_size():
    from rotrnn.data.tasks import TASKS

    for task in TASKS.values():
        for a in task.archives:
            assert a.max_bytes > 2 * (a.size or 8_230_000_000) and a.max_members >= 100, a.filename


def test_a_tar_cut_at_a_member_boundary_is_refused_and_gets_no_marker(tmp_path):
    whole = tmp_path / "whole.tar"
    make_tar(whole, [("cut/a.txt", "file", b"a" * 1000), ("cut/b.txt", "file", b"b" * 1000)], mode="w")
    data = whole.read_bytes()
    path = tmp_path / "cut.tar"
    path.write_bytes(data[:512 + 1024])  # the first member's header and data: a clean member boundary
    with pytest.raises(DownloadError, match="cut.tar: truncated: the tar ends without its end-of-archive marker"):
        extract(path, tmp_path / "raw")
    assert list((tmp_path / "raw").iterdir()) == []


def test_an_archive_without_a_top_folder_cannot_overwrite_the_raw_roots_files(tmp_path):
    """Speech Commands' tar holds README.md and LICENSE at its top: with --raw-root at the project root they must
    not replace the project's own; it unpacks into its own directory, and never over an existing one."""
    path = tmp_path / "sc.tar.gz"
    make_tar(path, [("README.md", "file", b"dataset readme"), ("LICENSE", "file", b"CC BY 4.0"),
                    ("yes/1.wav", "file", b"RIFF")])
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("# my project\n")
    sc = spec("sc.tar.gz", root="speech", flat=True)
    assert extract(path, project, spec=sc) == ["speech"]
    assert (project / "README.md").read_text() == "# my project\n" and not (project / "LICENSE").exists()
    assert (project / "speech/README.md").read_bytes() == b"dataset readme"
    (project / ".sc.tar.gz.extracted").unlink()
    with pytest.raises(UnsafeArchiveError, match=f"{project / 'speech'} already exists and was not unpacked"):
        extract(path, project, spec=sc)
    assert (project / "speech/yes/1.wav").read_bytes() == b"RIFF"


def test_zip_slip_links_and_bombs_refused(tmp_path):
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/a.txt", "fine")
        z.writestr("../evil.txt", "bad")
    with pytest.raises(UnsafeArchiveError, match="'../evil.txt' contains '..'"):
        extract(path, tmp_path / "raw")
    assert not (tmp_path / "evil.txt").exists() and list((tmp_path / "raw").iterdir()) == []
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as z:
        info = zipfile.ZipInfo("link/l")
        info.external_attr = (0o120777) << 16  # a symlink
        z.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="'link/l' is a link or special file"):
        extract(link, tmp_path / "raw2")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("bomb/zeros", bytes(1_000_000))
    with pytest.raises(UnsafeArchiveError, match="more than 1000 bytes"):
        extract(bomb, tmp_path / "raw3", spec=spec("bomb.zip", max_bytes=1000))


def test_corrupt_archive_named(tmp_path):
    path = tmp_path / "broken.tar.gz"
    path.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DownloadError, match="broken.tar.gz: not a readable tar or zip"):
        extract(path, tmp_path / "raw")


def test_download_task_unpacks_once(tmp_path, monkeypatch):
    """download_task = fetch (from a mirror here) + extract + marker; a second call touches nothing."""
    import rotrnn.data.tasks as tasks

    tar = tmp_path / "mirror" / "toy.tar.gz"
    tar.parent.mkdir()
    make_tar(tar, [("toy/data.tsv", "file", b"a\tb\n")])
    arch = Archive("toy.tar.gz", ("http://unreachable.invalid/toy.tar.gz",),
                   sha256=hashlib.sha256(tar.read_bytes()).hexdigest())
    monkeypatch.setitem(tasks.TASKS, "toy", tasks.TaskSpec("toy", "nonexistent.module", (arch,)))
    raw = tmp_path / "raw"
    download_task("toy", raw, mirror=str(tar.parent), progress=False)
    assert (raw / "toy/data.tsv").read_bytes() == b"a\tb\n"
    (raw / "toy.tar.gz").unlink()
    download_task("toy", raw, progress=False)  # marker present: no fetch (the URL is unreachable), no re-extract
    assert (raw / "toy/data.tsv").exists()

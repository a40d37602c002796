"""The fetch stage: sources in order, checksum verification, nothing half-written, clear errors.

No test reaches the internet: the public mirrors are replaced by local ones, and the
HTTP cases are served from a server on 127.0.0.1 that the test starts.
"""

import contextlib
import functools
import hashlib
import http.server
import os
import re
import signal
import subprocess
import sys
import threading
import time

from digitlab.shared.errors import UserError

import pytest
import yaml

from stages import fetch
from tests.conftest import BASE_PARAMS, PROJECT_ROOT, default_sigint, make_params

FILES = {"a.gz": b"first file", "b.gz": b"second file"}


@pytest.fixture
def pinned(monkeypatch):
    """Pin the checksums of two small stand-in files and take away the public mirrors."""
    monkeypatch.setattr(fetch, "SHA256", {name: hashlib.sha256(data).hexdigest() for name, data in FILES.items()})
    monkeypatch.setattr(fetch, "PUBLIC_MIRRORS", ())
    params = make_params({"fetch.timeout_s": 2})
    monkeypatch.setattr(fetch, "load_params", lambda: params)


@pytest.fixture
def mirror_dir(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, data in FILES.items():
        (mirror / name).write_bytes(data)
    return mirror


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; /status/500/... answers 500 and /hang/... never answers in time."""

    def do_GET(self):
        if self.path.startswith("/status/500/"):
            self.send_error(500)
        elif self.path.startswith("/hang/"):
            time.sleep(3)
            self.send_error(504)
        else:
            super().do_GET()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(folder):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def served_from(stdout: str) -> dict[str, str]:
    """{file: source} from the stage's `fetched NAME from SOURCE` lines."""
    return dict(re.findall(r"^fetched (\S+) from (\S+) \(sha256 verified\)$", stdout, re.MULTILINE))


def test_copies_and_verifies_every_file_from_a_directory_mirror(pinned, mirror_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MNIST_MIRROR", str(mirror_dir))
    fetch.main([str(tmp_path / "out")])
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == FILES
    assert served_from(capsys.readouterr().out) == {"a.gz": str(mirror_dir), "b.gz": str(mirror_dir)}
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in (tmp_path / "out").iterdir())  # not private to root


def test_downloads_from_an_http_mirror(pinned, mirror_dir, tmp_path, monkeypatch, capsys):
    with serve(mirror_dir) as url:
        monkeypatch.setenv("MNIST_MIRROR", url)
        fetch.main([str(tmp_path / "out")])
    assert (tmp_path / "out" / "b.gz").read_bytes() == FILES["b.gz"]
    assert served_from(capsys.readouterr().out) == {"a.gz": url + "/", "b.gz": url + "/"}


def test_file_already_there_and_verified_is_kept_without_downloading(pinned, mirror_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.gz").write_bytes(FILES["a.gz"])
    (mirror_dir / "a.gz").unlink()  # a download would fail
    monkeypatch.setenv("MNIST_MIRROR", str(mirror_dir))
    fetch.main([str(out)])
    assert f"kept {out / 'a.gz'} (sha256 verified)" in capsys.readouterr().out


@pytest.mark.parametrize("path", ["/missing", "/status/500", "/hang"], ids=["404", "500", "timeout"])
def test_failing_http_mirror_falls_back_to_the_next_source(pinned, mirror_dir, tmp_path, monkeypatch, capsys, path):
    backup = tmp_path / "backup"
    mirror_dir.rename(backup)
    with serve(backup) as url:
        monkeypatch.setenv("MNIST_MIRROR", url + path)
        monkeypatch.setattr(fetch, "PUBLIC_MIRRORS", (url + "/",))
        fetch.main([str(tmp_path / "out")])
    assert (tmp_path / "out" / "a.gz").read_bytes() == FILES["a.gz"]
    output = capsys.readouterr()
    assert served_from(output.out) == {"a.gz": url + "/", "b.gz": url + "/"}  # the fallback, not the mirror
    assert f"a.gz: {url}{path}/: " in output.err and "trying the next source" in output.err


def test_unreachable_http_mirror_falls_back_to_the_next_source(pinned, mirror_dir, tmp_path, monkeypatch, capsys):
    with serve(mirror_dir) as url:
        pass  # the server is gone: its port now refuses connections
    monkeypatch.setenv("MNIST_MIRROR", url)
    monkeypatch.setattr(fetch, "PUBLIC_MIRRORS", (str(mirror_dir),))
    fetch.main([str(tmp_path / "out")])
    output = capsys.readouterr()
    assert served_from(output.out) == {"a.gz": str(mirror_dir), "b.gz": str(mirror_dir)}
    assert f"a.gz: {url}/: " in output.err


def test_file_missing_from_the_mirror_is_taken_from_the_next_source(pinned, mirror_dir, tmp_path, monkeypatch, capsys):
    (mirror_dir / "b.gz").unlink()
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "b.gz").write_bytes(FILES["b.gz"])
    with serve(backup) as url:
        monkeypatch.setenv("MNIST_MIRROR", str(mirror_dir))
        monkeypatch.setattr(fetch, "PUBLIC_MIRRORS", (url + "/",))
        fetch.main([str(tmp_path / "out")])
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == FILES
    output = capsys.readouterr()
    assert served_from(output.out) == {"a.gz": str(mirror_dir), "b.gz": url + "/"}
    assert f"b.gz: {mirror_dir}: " in output.err


def test_error_lists_every_source_tried(pinned, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    with serve(empty) as url:
        monkeypatch.setenv("MNIST_MIRROR", str(empty))
        monkeypatch.setattr(fetch, "PUBLIC_MIRRORS", (url + "/",))
        with pytest.raises(UserError) as error:
            fetch.main([str(tmp_path / "out")])
    message = str(error.value)
    assert "could not fetch a.gz" in message and str(empty) in message and url in message
    assert "\n" not in message


def test_checksum_mismatch_names_file_and_both_sums_and_leaves_nothing(pinned, mirror_dir, tmp_path, monkeypatch):
    (mirror_dir / "b.gz").write_bytes(b"tampered")
    monkeypatch.setenv("MNIST_MIRROR", str(mirror_dir))
    with pytest.raises(UserError) as error:
        fetch.main([str(tmp_path / "out")])
    message = str(error.value)
    assert "b.gz" in message and "does not match the known hash" in message and fetch.SHA256["b.gz"] in message
    assert hashlib.sha256(b"tampered").hexdigest() in message
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.gz"]  # no partial b.gz


def test_truncated_file_fails_its_checksum(pinned, mirror_dir, tmp_path, monkeypatch):
    (mirror_dir / "a.gz").write_bytes(FILES["a.gz"][:4])
    monkeypatch.setenv("MNIST_MIRROR", str(mirror_dir))
    with pytest.raises(UserError, match=r"a.gz.*does not match the known hash"):
        fetch.main([str(tmp_path / "out")])


def test_failed_fetch_keeps_the_file_already_there(pinned, mirror_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.gz").write_bytes(b"what the user had")
    (mirror_dir / "a.gz").write_bytes(b"corrupt")
    monkeypatch.setenv("MNIST_MIRROR", str(mirror_dir))
    with pytest.raises(UserError):
        fetch.main([str(out)])
    assert (out / "a.gz").read_bytes() == b"what the user had"
    assert [p.name for p in out.iterdir()] == ["a.gz"]


@pytest.mark.parametrize("value", ["/no/such/folder", "ftp://example.org/mnist"])
def test_mirror_that_is_neither_directory_nor_url_is_rejected(pinned, tmp_path, monkeypatch, value):
    monkeypatch.setenv("MNIST_MIRROR", value)
    with pytest.raises(UserError, match="neither a directory nor an http"):
        fetch.main([str(tmp_path / "out")])


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    """Sends a large file slowly, so that the download can be interrupted halfway."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 20))
        self.end_headers()
        for _ in range(1 << 4):
            self.wfile.write(bytes(1 << 16))
            self.wfile.flush()
            time.sleep(0.5)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("signal_name, exit_code", [("SIGINT", 130), ("SIGTERM", 128 + signal.SIGTERM)])
def test_interrupted_download_leaves_no_partial_file(tmp_path, signal_name, exit_code):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = tmp_path / "out"
    out.mkdir()
    (out / "train-images-idx3-ubyte.gz").write_bytes(b"what the user had")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(BASE_PARAMS))
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "stages.fetch", str(out)],
            cwd=tmp_path,
            env={
                **os.environ,
                "PYTHONPATH": str(PROJECT_ROOT),
                "MNIST_MIRROR": f"http://127.0.0.1:{server.server_address[1]}",
            },
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=default_sigint,  # as from a terminal, even if these tests run as a background job
        )
        for line in process.stderr:  # pooch announces the download ("Updating": a file is there), then starts it
            if line.startswith("Updating data from"):
                break
        deadline = time.monotonic() + 10
        while not (partial := [p.name for p in out.iterdir() if p.name.startswith("tmp") and p.stat().st_size]):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        process.send_signal(getattr(signal, signal_name))
        _, errors = process.communicate(timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert partial, "the download was not under way when the signal came"
    assert process.returncode == exit_code, errors  # the orderly exit of run_command, not a crash
    assert [p.name for p in out.iterdir()] == ["train-images-idx3-ubyte.gz"]
    assert (out / "train-images-idx3-ubyte.gz").read_bytes() == b"what the user had"

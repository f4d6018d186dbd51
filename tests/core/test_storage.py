"""core.from_storage.storage on local folders and on gs:// (the real gcp-storage-emulator started by the fixture)."""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.from_storage import storage
from core.from_storage.storage import ObjectNotFound, ObjectTooLarge, StorageUnavailable

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "file-uri", "gcs"])
def root(request, tmp_path) -> str:
    """The same tests on a plain directory, a file:// URI and a bucket on the emulator."""
    if request.param == "local":
        return str(tmp_path / "store")
    if request.param == "file-uri":
        return (tmp_path / "store").as_uri()
    return f"gs://{request.getfixturevalue('bucket')}/store"


def test_write_read_exists_stat(root):
    uri = storage.join(root, "a/b/cat.json")
    assert not storage.exists(uri)
    assert storage.write_bytes(uri, b'{"cat": 1}', "application/json")
    assert storage.exists(uri)
    assert storage.read_bytes(uri) == b'{"cat": 1}'
    info = storage.stat(uri)
    assert (info.size, info.uri) == (10, uri) and info.generation.isdigit()


def test_overwrite_replaces_and_changes_generation(root):
    uri = storage.join(root, "x.txt")
    storage.write_bytes(uri, b"one")
    first = storage.stat(uri).generation
    if not storage.is_gcs(uri):
        os.utime(storage.local_path(uri), ns=(1, 1))  # coarse-mtime filesystems: make the change visible
        first = storage.stat(uri).generation
    storage.write_bytes(uri, b"second")
    assert storage.read_bytes(uri) == b"second"
    assert storage.stat(uri).generation != first


def test_if_absent_keeps_the_first_write(root):
    uri = storage.join(root, "once.txt")
    assert storage.write_bytes(uri, b"first", if_absent=True) is True
    if storage.is_gcs(uri):
        return  # the emulator ignores ifGenerationMatch: see test_gcs_if_absent_sends_the_precondition
    assert storage.write_bytes(uri, b"second", if_absent=True) is False
    assert storage.read_bytes(uri) == b"first"


def test_gcs_if_absent_sends_the_precondition(monkeypatch):
    """gcp-storage-emulator ignores ifGenerationMatch, so a loopback stub plays real GCS's 412 here."""
    requests_seen: list[str] = []

    class PreconditionFailed(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            requests_seen.append(self.path)
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b'{"error": {"code": 412, "message": "conditionNotMet"}}'
            self.send_response(412)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), PreconditionFailed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{server.server_port}")
        assert storage.write_bytes("gs://b/once.txt", b"second", if_absent=True) is False
    finally:
        server.shutdown()
    assert len(requests_seen) == 1 and "ifGenerationMatch=0" in requests_seen[0]


def test_missing_object(root):
    uri = storage.join(root, "nope/missing.bin")
    with pytest.raises(ObjectNotFound):
        storage.read_bytes(uri)
    with pytest.raises(ObjectNotFound):
        storage.stat(uri)
    assert storage.exists(uri) is False


def test_size_cap_refuses_before_reading(root):
    uri = storage.join(root, "big.bin")
    storage.write_bytes(uri, b"x" * 1000)
    assert storage.read_bytes(uri, max_bytes=1000) == b"x" * 1000
    with pytest.raises(ObjectTooLarge) as raised:
        storage.read_bytes(uri, max_bytes=999)
    assert raised.value.status == 413 and "1000 bytes" in raised.value.message


def test_list_prefix_is_a_folder_listing(root):
    for name in ("d/2.txt", "d/1.txt", "d/sub/3.txt", "d-other/4.txt", "top.txt"):
        storage.write_bytes(storage.join(root, name), name.encode())
    folder = storage.join(root, "d")
    assert storage.list_prefix(folder) == [storage.join(folder, n) for n in ("1.txt", "2.txt", "sub/3.txt")]
    assert storage.list_prefix(folder + "/") == storage.list_prefix(folder)
    assert storage.list_prefix(storage.join(root, "empty")) == []
    # What list_prefix returns reads back as is.
    assert storage.read_bytes(storage.list_prefix(folder)[2]) == b"d/sub/3.txt"


def test_local_writes_are_atomic_and_leave_no_temp_files(tmp_path):
    target = tmp_path / "out" / "result.json"
    seen: list[bytes] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            if target.exists():
                seen.append(target.read_bytes())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(60):
            storage.write_bytes(str(target), (b"%03d" % n) * 2000)
    finally:
        stop.set()
        thread.join()
    # A reader only ever sees complete versions, never a truncated or mixed file.
    assert seen and all(len(data) == 6000 and data == data[:3] * 2000 for data in seen)
    assert os.listdir(target.parent) == ["result.json"]


def test_is_below_uses_folder_semantics(tmp_path):
    assert storage.is_below("gs://b/out/x.json", "gs://b/out")
    assert storage.is_below("gs://b/out/x.json", "gs://b/out/")
    assert storage.is_below("gs://b/anything", "gs://b")
    assert not storage.is_below("gs://b/output/x.json", "gs://b/out")
    assert not storage.is_below("gs://other/out/x.json", "gs://b/out")
    assert not storage.is_below("gs://b/out/x.json", str(tmp_path))
    assert storage.is_below(str(tmp_path / "o" / "x"), str(tmp_path / "o"))
    assert storage.is_below((tmp_path / "o" / "x").as_uri(), str(tmp_path / "o"))
    assert not storage.is_below(str(tmp_path / "o" / ".." / "x"), str(tmp_path / "o"))
    assert not storage.is_below(str(tmp_path / "other"), str(tmp_path / "o"))


def test_unreachable_storage_is_transient(monkeypatch):
    from tests.conftest import free_port

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")  # nothing listens
    monkeypatch.setattr(storage, "RETRY_TIMEOUT_S", 0.5)
    with pytest.raises(StorageUnavailable) as raised:
        storage.read_bytes("gs://b/x.jpg")
    assert raised.value.status == 503


def test_emulator_client_is_anonymous(storage_emulator):
    from google.auth.credentials import AnonymousCredentials

    client = storage.gcs_client()
    assert isinstance(client._credentials, AnonymousCredentials)
    assert client.project == (os.environ.get("GOOGLE_CLOUD_PROJECT") or "local-emulator")

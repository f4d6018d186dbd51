"""One small interface for local files and Cloud Storage objects (``gs://bucket/name``).

Every function takes a location string: a local path (``/data/in/a.jpg``, ``relative/dir``,
``file:///data/in/a.jpg``) or a ``gs://`` URI, and answers the same way for both. Errors are
``ServiceError``s so callers can tell a permanent failure (``ObjectNotFound``, ``ObjectTooLarge``)
from a transient one (``StorageUnavailable``: retry later). ``STORAGE_EMULATOR_HOST`` points the
Cloud Storage client at an emulator (anonymous credentials), as the tests do.
"""

from __future__ import annotations

import os
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from core.errors import PayloadTooLarge, ServiceError

GCS_SCHEME = "gs://"
FILE_SCHEME = "file://"
# Storage calls retry 5xx/429/connection errors inside the client for at most this long; past it
# the caller answers non-2xx and Pub/Sub (or the job's --max-retries) tries again later, which is
# cheaper than holding a request open through a long outage.
RETRY_TIMEOUT_S = 20.0
CALL_TIMEOUT_S = 60.0


class ObjectNotFound(ServiceError):
    status, code = 404, "object_not_found"


class ObjectTooLarge(PayloadTooLarge):
    code = "object_too_large"


class StorageUnavailable(ServiceError):
    """Storage answered 5xx/429, refused access or could not be reached: try again later."""

    status, code = 503, "storage_unavailable"


@dataclass(frozen=True)
class ObjectInfo:
    """What ``stat`` knows about one object: size and generation (local files: mtime in ns)."""

    uri: str
    size: int
    generation: str


def is_gcs(uri: str) -> bool:
    """True for ``gs://`` URIs."""
    return uri.startswith(GCS_SCHEME)


def split_gcs(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ("bucket", "a/b")."""
    bucket, _, name = uri[len(GCS_SCHEME):].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, name


def local_path(uri: str) -> Path:
    """The filesystem path of a local location (plain path or ``file://`` URI)."""
    if uri.startswith(FILE_SCHEME):
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"file URI with a host is not local: {uri!r}")
        return Path(unquote(parsed.path))
    return Path(uri)


def join(prefix: str, *parts: str) -> str:
    """Append path parts to a prefix with single slashes, keeping the prefix's form."""
    tail = "/".join(part.strip("/") for part in parts if part.strip("/"))
    if not tail:
        return prefix
    return prefix.rstrip("/") + "/" + tail if prefix.rstrip("/") else tail


def is_below(uri: str, prefix: str) -> bool:
    """True when ``uri`` is ``prefix`` itself or lies inside it (folder semantics, not string prefix)."""
    if is_gcs(uri) != is_gcs(prefix):
        return False
    if is_gcs(uri):
        bucket, name = split_gcs(uri)
        base_bucket, base_name = split_gcs(prefix)
        folder = base_name.strip("/")
        return bucket == base_bucket and (not folder or name == folder or name.startswith(folder + "/"))
    try:
        path = os.path.abspath(local_path(uri))
        base = os.path.abspath(local_path(prefix))
    except ValueError:  # file://host/...: not a local path, so not below a local prefix
        return False
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


# ---- Cloud Storage client -------------------------------------------------------------------

_clients: dict = {}
_clients_lock = threading.Lock()


def gcs_client():
    """The process's Cloud Storage client (made after fork; emulator-aware)."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    key = (os.getpid(), emulator)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            from google.cloud import storage

            if emulator:
                from google.auth.credentials import AnonymousCredentials

                project = os.environ.get("GOOGLE_CLOUD_PROJECT") or "local-emulator"
                client = storage.Client(project=project, credentials=AnonymousCredentials())
            else:
                client = storage.Client()
            _clients.clear()  # a forked child drops the parent's (its sockets are shared)
            _clients[key] = client
        return client


def _retry():
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(RETRY_TIMEOUT_S)


@contextmanager
def _gcs_errors(uri: str):
    """Translate client exceptions into ObjectNotFound / StorageUnavailable."""
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    try:
        yield
    except api.NotFound:
        raise ObjectNotFound(f"{uri} does not exist") from None
    except ServiceError:
        raise
    except (api.GoogleAPIError, auth.GoogleAuthError, OSError) as err:
        # 403 lands here too: a missing IAM grant is fixed by an operator, after which a retried
        # message succeeds; acknowledging it as permanent would lose the work.
        raise StorageUnavailable(f"storage error on {uri}: {type(err).__name__}: {err}") from None
    except Exception as err:  # requests' and google-resumable-media's own errors
        if type(err).__module__.split(".")[0] in ("requests", "urllib3", "google"):
            raise StorageUnavailable(f"storage error on {uri}: {type(err).__name__}: {err}") from None
        raise


def _blob(uri: str, generation: str | int | None = None):
    bucket, name = split_gcs(uri)
    if not name:
        raise ValueError(f"no object name in {uri!r}")
    with _gcs_errors(uri):  # no credentials is an operator's fix away: transient, like a 403
        client = gcs_client()
    return client.bucket(bucket).blob(name, generation=int(generation) if generation else None)


# ---- the interface --------------------------------------------------------------------------

def stat(uri: str, generation: str | int | None = None) -> ObjectInfo:
    """Size and generation of one object; raises ObjectNotFound (or StorageUnavailable)."""
    if is_gcs(uri):
        blob = _blob(uri, generation)
        with _gcs_errors(uri):
            blob.reload(timeout=CALL_TIMEOUT_S, retry=_retry())
        return ObjectInfo(uri, int(blob.size or 0), str(blob.generation))
    path = local_path(uri)
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise ObjectNotFound(f"{uri} does not exist") from None
    if not path.is_file():
        raise ObjectNotFound(f"{uri} is not a file")
    return ObjectInfo(uri, info.st_size, str(info.st_mtime_ns))


def exists(uri: str) -> bool:
    """True when the object exists."""
    try:
        stat(uri)
    except ObjectNotFound:
        return False
    return True


def read_bytes(uri: str, max_bytes: int | None = None, generation: str | int | None = None) -> bytes:
    """The object's bytes; ObjectTooLarge above ``max_bytes`` (checked before downloading)."""
    if is_gcs(uri):
        blob = _blob(uri, generation)
        with _gcs_errors(uri):
            blob.reload(timeout=CALL_TIMEOUT_S, retry=_retry())
            _check_size(uri, int(blob.size or 0), max_bytes)
            # Pin the generation we measured: an overwrite between the two calls must not hand
            # us a different (possibly larger) object.
            return blob.download_as_bytes(if_generation_match=blob.generation, timeout=CALL_TIMEOUT_S,
                                          retry=_retry())
    path = local_path(uri)
    try:
        with open(path, "rb") as handle:
            _check_size(uri, os.fstat(handle.fileno()).st_size, max_bytes)
            # Read one byte past the cap: a file that grew after fstat is still refused.
            data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise ObjectNotFound(f"{uri} does not exist") from None
    _check_size(uri, len(data), max_bytes)
    return data


def _check_size(uri: str, size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise ObjectTooLarge(f"{uri} is {size} bytes; the limit is {max_bytes}")


def write_bytes(uri: str, data: bytes, content_type: str = "application/octet-stream",
                if_absent: bool = False) -> bool:
    """Write the whole object at once (readers never see half of it); False if ``if_absent`` and it exists."""
    if is_gcs(uri):
        from google.api_core import exceptions as api

        blob = _blob(uri)
        with _gcs_errors(uri):
            try:
                # One request (multipart upload below the client's chunk threshold): the object
                # appears complete or not at all. if_generation_match=0: only if absent.
                blob.upload_from_string(data, content_type=content_type, timeout=CALL_TIMEOUT_S,
                                        if_generation_match=0 if if_absent else None, retry=_retry())
            except api.PreconditionFailed:
                return False
        return True
    path = local_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if if_absent:
            try:
                os.link(temp, path)  # atomic create-if-absent, unlike exists() + rename
            except FileExistsError:
                return False
        else:
            os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return True


def delete(uri: str) -> None:
    """Remove one object; one that is already gone is fine."""
    if is_gcs(uri):
        blob = _blob(uri)
        try:
            with _gcs_errors(uri):
                blob.delete(timeout=CALL_TIMEOUT_S, retry=_retry())
        except ObjectNotFound:
            pass
        return
    local_path(uri).unlink(missing_ok=True)


def list_prefix(prefix: str) -> list[str]:
    """Every object below a folder (``gs://b/dir``, ``/data/dir``), sorted, in the prefix's form."""
    if is_gcs(prefix):
        bucket, name = split_gcs(prefix)
        folder = name.rstrip("/") + "/" if name.strip("/") else ""
        base = f"{GCS_SCHEME}{bucket}/"
        with _gcs_errors(prefix):
            blobs = gcs_client().list_blobs(bucket, prefix=folder, timeout=CALL_TIMEOUT_S, retry=_retry())
            names = [blob.name for blob in blobs if not blob.name.endswith("/")]  # skip folder placeholders
        return sorted(base + n for n in names)
    root = local_path(prefix)
    if not root.is_dir():
        return []
    found = []
    for directory, _dirs, files in os.walk(root):
        for file_name in files:
            if file_name.startswith(".") and ".tmp-" in file_name:  # another writer's temp file
                continue
            relative = os.path.relpath(os.path.join(directory, file_name), root).replace(os.sep, "/")
            found.append(join(prefix, relative))
    return sorted(found)

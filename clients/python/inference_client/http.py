"""One HTTP transport for both clients: API key, timeouts, typed errors, retries that honour Retry-After."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import IO

import requests

from inference_client.errors import (
    ConfigurationError,
    ConnectionFailed,
    RequestTimedOut,
    ServiceError,
    error_from_response,
)

# Something with bytes: a path, the bytes themselves, or an open binary file.
Media = str | os.PathLike | bytes | bytearray | IO[bytes]
USER_AGENT = "gpu-inference-client/0.1"


def read_media(media: Media, default_name: str) -> tuple[str, bytes]:
    """(file name, bytes) of a path, bytes or binary file; read once so retries can resend it."""
    if isinstance(media, (bytes, bytearray)):
        return default_name, bytes(media)
    if isinstance(media, (str, os.PathLike)):
        path = Path(media)
        return path.name, path.read_bytes()
    data = media.read()
    name = getattr(media, "name", None)
    return (Path(name).name if isinstance(name, str) else default_name), data


def retry_delay(error: Exception, attempt: int, backoff_s: float, max_backoff_s: float) -> float:
    """How long to wait before attempt ``attempt + 1``: Retry-After when given, else jittered backoff."""
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        return retry_after
    # Full jitter: clients that failed together do not come back together.
    return random.uniform(0, min(max_backoff_s, backoff_s * 2 ** attempt))


def is_retryable(error: Exception) -> bool:
    """Load shedding (429), instances loading or going away (502/503/504) and broken connections."""
    if isinstance(error, ServiceError):
        return error.status in (429, 502, 503, 504)
    return isinstance(error, ConnectionFailed)


class HttpClient:
    """Requests to one service URL.

    ``timeout`` is the read timeout (how long to wait for the answer), ``connect_timeout`` the
    time to open the connection. Errors become typed exceptions (``inference_client.errors``).
    ``max_retries`` resends on 429/502/503/504 and connection errors, waiting Retry-After when
    the service sends it (never longer than ``max_retry_wait_s``: a longer wait raises instead).
    """

    @classmethod
    def from_env(cls, url: str | None, api_key: str | None, url_env: str, key_env: str, missing_hint: str,
                 **options) -> HttpClient:
        """A client for ``url`` or ``$url_env`` (with ``api_key`` or ``$key_env``); a clear error when unset."""
        url = url or os.environ.get(url_env)
        if not url:
            raise ConfigurationError(f"{url_env} is not set: pass url= or set it to {missing_hint}")
        return cls(url, api_key if api_key is not None else os.environ.get(key_env), **options)

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 60.0,
                 connect_timeout: float = 5.0, max_retries: int = 2, max_retry_wait_s: float = 30.0,
                 backoff_s: float = 0.5):
        if not url:
            raise ConfigurationError("no service URL given")
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"service URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.api_key = api_key or None
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_retries = max_retries
        self.max_retry_wait_s = max_retry_wait_s
        self.backoff_s = backoff_s
        self._local = threading.local()  # requests.Session is not thread-safe: one per thread

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            if self.api_key:
                session.headers["X-API-Key"] = self.api_key
        return session

    def send(self, method: str, path: str, *, timeout: float | None = None, **kwargs) -> requests.Response:
        """One attempt: the response when 2xx, else a typed error (no retries)."""
        url = self.url + path
        read_timeout = self.timeout if timeout is None else timeout
        try:
            response = self._session().request(method, url, timeout=(self.connect_timeout, read_timeout), **kwargs)
        except requests.Timeout as err:
            raise RequestTimedOut(f"no answer from {url} within {read_timeout:g} s", url=self.url) from err
        except requests.RequestException as err:  # refused, reset, DNS, broken chunked body ...
            raise ConnectionFailed(f"{method} {url} failed: {err}", url=self.url) from err
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.content, response.headers, url=self.url)
        return response

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        """``send`` with up to ``max_retries`` retries of retryable failures."""
        attempt = 0
        while True:
            try:
                return self.send(method, path, **kwargs)
            except (ServiceError, ConnectionFailed) as err:
                # A read timeout may mean the work is still running there: resending would double it.
                if attempt >= self.max_retries or not is_retryable(err) or isinstance(err, RequestTimedOut):
                    raise
                delay = retry_delay(err, attempt, self.backoff_s, self.max_retry_wait_s)
                if delay > self.max_retry_wait_s:
                    raise
                time.sleep(delay)
                attempt += 1

    def health(self, timeout: float = 5.0) -> dict:
        """GET /health (200 only when the model is loaded and serving); raises Unavailable otherwise."""
        return self.send("GET", "/health", timeout=timeout).json()

"""Signing and delivery against a real receiver on loopback: retries, Retry-After, no redirects."""

from __future__ import annotations

import random
import shutil
import ssl
import subprocess
import threading
import time

import pytest

from core.deferred.address_guard import AddressGuard
from core.deferred.callbacks import CallbackSender, Deliverer, RetryPolicy, parse_retry_after, sign, verify
from tests.callback_receiver import SECRET, Receiver

pytestmark = pytest.mark.unit


def deliverer_for(*receivers: Receiver, **policy) -> Deliverer:
    guard = AddressGuard([r.host for r in receivers])
    return Deliverer(SECRET, guard, RetryPolicy(**{"backoff_s": 0.01, "timeout_s": 5, **policy}))


def test_signature_round_trip_and_what_it_rejects():
    body = b'{"job_id":"j1","status":"succeeded"}'
    header = sign(SECRET, body, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify(SECRET, header, body, now=1_700_000_100)
    assert not verify(SECRET, header, body, now=1_700_000_000 + 301)  # too old: a replay
    assert not verify(SECRET, header, body + b" ", now=1_700_000_100)  # body changed
    assert not verify("other", header, body, now=1_700_000_100)
    assert not verify(SECRET, "garbage", body)


def test_a_receiver_on_loopback_verifies_the_signature(receiver):
    record = deliverer_for(receiver).deliver(receiver.url("/hooks/clip?tenant=7"), b'{"a":1}', "job-1")
    assert record == {"state": "delivered", "attempts": 1, "last_status": 200, "error": None}
    (got,) = receiver.received
    assert got.signature_ok and got.body == b'{"a":1}' and got.path == "/hooks/clip?tenant=7"
    assert got.headers["X-Job-Id"] == "job-1" and got.headers["Content-Type"] == "application/json"
    assert got.headers["Host"] == receiver.host


def test_fails_twice_then_succeeds_gives_exactly_one_accepted_delivery(receiver):
    receiver.script = [(500, {}), (503, {"Retry-After": "0"})]
    sleeps = []
    record = deliverer_for(receiver).deliver(receiver.url(), b"{}", "job-2", sleep=sleeps.append)
    assert record["state"] == "delivered" and record["attempts"] == 3
    assert [r.answered for r in receiver.received] == [500, 503, 200]
    assert len(receiver.accepted()) == 1
    assert all(r.signature_ok for r in receiver.received)
    assert [r.headers["X-Delivery-Attempt"] for r in receiver.received] == ["1", "2", "3"]
    # Each attempt is signed afresh: a receiver that rejects old timestamps accepts a late retry.
    assert len(sleeps) == 2


@pytest.mark.parametrize("status", [408, 429, 502])
def test_retryable_statuses_are_retried(receiver, status):
    receiver.script = [(status, {})]
    record = deliverer_for(receiver).deliver(receiver.url(), b"{}", "job", sleep=lambda s: None)
    assert record["state"] == "delivered" and record["attempts"] == 2


@pytest.mark.parametrize("status", [400, 401, 404, 410])
def test_other_client_errors_are_final(receiver, status):
    receiver.script = [(status, {})]
    record = deliverer_for(receiver).deliver(receiver.url(), b"{}", "job", sleep=pytest.fail)
    assert record["state"] == "failed" and record["attempts"] == 1 and record["last_status"] == status


def test_redirects_are_not_followed(receiver):
    elsewhere = Receiver(SECRET)
    try:
        receiver.script = [(302, {"Location": elsewhere.url("/stolen")}), (307, {"Location": elsewhere.url()})]
        record = deliverer_for(receiver, elsewhere).deliver(receiver.url(), b"{}", "job", sleep=pytest.fail)
        assert record["state"] == "failed" and record["last_status"] == 302 and "redirect" in record["error"]
        assert elsewhere.received == [] and len(receiver.received) == 1
    finally:
        elsewhere.close()


def test_retry_after_is_honoured_and_backoff_grows_with_jitter():
    policy = RetryPolicy(backoff_s=1.0, max_backoff_s=8.0)
    rng = random.Random(1)
    delays = [policy.delay(n, None, rng) for n in range(1, 7)]
    assert all(0.5 * min(8, 2 ** (n - 1)) <= d <= min(8, 2 ** (n - 1)) for n, d in enumerate(delays, 1))
    assert policy.delay(1, 30.0, rng) == 30.0
    assert parse_retry_after("7") == 7.0
    assert 55 <= parse_retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))) <= 60
    assert parse_retry_after("soon") is None


def test_retry_after_beyond_the_max_age_ends_the_delivery(receiver):
    receiver.script = [(429, {"Retry-After": "120"})]
    record = deliverer_for(receiver, max_age_s=60).deliver(receiver.url(), b"{}", "job", sleep=pytest.fail)
    assert record["state"] == "failed" and record["last_status"] == 429


def test_connection_refused_is_retried_up_to_max_attempts():
    closed = Receiver(SECRET)
    url, host = closed.url(), closed.host
    closed.close()  # nothing listens on that loopback port any more
    deliverer = Deliverer(SECRET, AddressGuard([host]), RetryPolicy(max_attempts=3, backoff_s=0.01))
    record = deliverer.deliver(url, b"{}", "job", sleep=lambda s: None)
    assert record["state"] == "failed" and record["attempts"] == 3 and "ConnectionRefused" in record["error"]


def test_sender_retries_in_the_background_and_flush_makes_the_last_attempt_now(receiver):
    receiver.script = [(500, {})]
    done = []
    sender = CallbackSender(deliverer_for(receiver, backoff_s=0.05), threads=2)
    sender.send("job-a", receiver.url(), b'{"n":1}', done.append)
    receiver.wait_for(2)
    deadline = time.monotonic() + 5
    while not done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert done[0]["state"] == "delivered" and done[0]["attempts"] == 2
    # A retry far in the future is attempted at once when the instance shuts down.
    receiver.script = [(503, {"Retry-After": "3600"}), (503, {})]
    scheduled = threading.Event()
    sender2 = CallbackSender(deliverer_for(receiver, max_age_s=7200), threads=1,
                             on_attempt=lambda job_id, record: scheduled.set())
    sender2.send("job-b", receiver.url(), b"{}", done.append)
    assert scheduled.wait(5)  # the first attempt failed and its retry waits an hour
    started = time.monotonic()
    assert sender2.flush(5) and time.monotonic() - started < 3
    assert done[1]["state"] == "failed" and done[1]["attempts"] == 2 and done[1]["last_status"] == 503


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for hooks.test (openssl), trusted by the test's client context."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=hooks.test",
                    "-addext", "subjectAltName=DNS:hooks.test", "-keyout", str(folder / "key.pem"),
                    "-out", str(folder / "cert.pem")], check=True, capture_output=True)
    return folder / "cert.pem", folder / "key.pem"


def test_https_goes_to_the_checked_address_with_sni_and_certificate_of_the_host_name(certificate):
    cert, key = certificate
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    receiver = Receiver(SECRET, tls=server_context)
    try:
        client_context = ssl.create_default_context(cafile=str(cert))
        resolve = lambda host, port: ["127.0.0.1"]  # noqa: E731 - hooks.test is the receiver on loopback
        guard = AddressGuard([f"hooks.test:{receiver.port}", f"other.test:{receiver.port}"], resolver=resolve)
        deliverer = Deliverer(SECRET, guard, RetryPolicy(max_attempts=1), ssl_context=client_context)
        record = deliverer.deliver(f"https://hooks.test:{receiver.port}/tls", b'{"ok":true}', "job-tls")
        assert record["state"] == "delivered"
        (got,) = receiver.received
        assert got.signature_ok and got.headers["Host"] == f"hooks.test:{receiver.port}"
        # The same address under a name the certificate does not cover: the TLS check fails, nothing is sent.
        refused = deliverer.attempt(f"https://other.test:{receiver.port}/tls", b"{}", "job-tls")
        assert not refused.delivered and "Hostname mismatch" in refused.error and len(receiver.received) == 1
    finally:
        receiver.close()

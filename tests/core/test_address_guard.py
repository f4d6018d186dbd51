"""The SSRF guard: every forbidden range refused before any connection, DNS rebinding defeated.

No test here sends traffic anywhere: the resolver is a stub and the socket factory fails the
test if it is called (or records the address and refuses, where a connection is the point).
"""

from __future__ import annotations

import pytest

from core.deferred.address_guard import AddressGuard, CallbackRefused, refusal_reason
from core.deferred.callbacks import Deliverer, RetryPolicy

pytestmark = pytest.mark.unit

FORBIDDEN = [
    "0.0.0.0", "10.1.2.3", "100.64.0.1", "100.127.255.254", "127.0.0.1", "127.8.9.10", "169.254.169.254",
    "169.254.1.1", "172.16.0.1", "172.31.255.255", "192.0.0.8", "192.0.2.10", "192.88.99.1", "192.168.1.1",
    "198.18.0.1", "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.255", "::", "::1", "::ffff:8.8.8.8", "::ffff:127.0.0.1", "::127.0.0.1", "64:ff9b::a00:1",
    "100::1", "2001::1", "2001:db8::1", "2002:a00:1::1", "3fff::1", "fc00::1", "fd00:ec2::254", "fe80::1",
    "fec0::1", "ff02::1",
]


def no_socket(address, timeout):
    pytest.fail(f"a connection to {address} was opened")


def resolver_for(address: str):
    calls = []

    def resolve(host, port):
        calls.append((host, port))
        return [address]

    resolve.calls = calls
    return resolve


@pytest.mark.parametrize("address", FORBIDDEN)
def test_each_forbidden_range_is_refused_without_a_connection(address):
    assert refusal_reason(address) is not None
    guard = AddressGuard(resolver=resolver_for(address))
    with pytest.raises(CallbackRefused, match="public addresses only"):
        guard.check("https://hooks.example.com/hook")
    deliverer = Deliverer("secret", guard, RetryPolicy(max_attempts=3), socket_factory=no_socket)
    record = deliverer.deliver("https://hooks.example.com/hook", b"{}", "job", sleep=no_socket)
    assert record["state"] == "failed" and record["attempts"] == 1 and "public addresses only" in record["error"]


def test_one_bad_address_among_good_ones_is_enough_to_refuse():
    guard = AddressGuard(resolver=lambda host, port: ["8.8.8.8", "10.0.0.5"])
    with pytest.raises(CallbackRefused, match="10.0.0.5"):
        guard.check("https://hooks.example.com/")


@pytest.mark.parametrize("url", ["https://metadata.google.internal/computeMetadata/v1/",
                                 "https://metadata.google.internal./x", "http://metadata/x"])
def test_the_metadata_server_is_refused_by_name_before_any_lookup(url):
    guard = AddressGuard(resolver=no_socket)
    with pytest.raises(CallbackRefused):
        guard.check(url)


@pytest.mark.parametrize("url, fragment", [
    ("http://hooks.example.com/", "https"), ("ftp://hooks.example.com/", "https"), ("https:///nohost", "https"),
    ("https://user:pw@hooks.example.com/", "credentials"), ("https://hooks.example.com:99999/", "valid URL"),
    ("", "non-empty"), ("https://x.example/" + "a" * 3000, "longer"),
])
def test_malformed_or_plain_http_urls_are_refused(url, fragment):
    guard = AddressGuard(resolver=resolver_for("8.8.8.8"))
    with pytest.raises(CallbackRefused, match=fragment):
        guard.check(url)


def test_allowed_hosts_open_http_and_private_addresses_for_exactly_that_host_and_port():
    guard = AddressGuard(["127.0.0.1:8123", "receiver.internal", "[::1]:9000"], resolver=resolver_for("10.0.0.7"))
    assert guard.check("http://127.0.0.1:8123/hook").addresses == ("10.0.0.7",)
    assert guard.check("http://receiver.internal:4444/x?a=1").path == "/x?a=1"
    assert guard.check("http://[::1]:9000/").host == "::1"
    with pytest.raises(CallbackRefused):
        guard.check("http://127.0.0.1:8124/hook")  # another port of an allowed host is not allowed


def test_public_https_target_resolves_once_and_keeps_the_checked_addresses():
    resolve = resolver_for("8.8.4.4")
    target = AddressGuard(resolver=resolve).check("https://Hooks.Example.com/cb?token=1")
    assert (target.host, target.port, target.path, target.addresses) == (
        "hooks.example.com", 443, "/cb?token=1", ("8.8.4.4",))
    assert resolve.calls == [("hooks.example.com", 443)]


def test_dns_rebinding_the_connection_goes_to_the_address_that_was_checked():
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])  # public first, loopback on any second lookup
    calls = []

    def rebinding_resolver(host, port):
        calls.append(host)
        return next(answers)

    connected = []

    def recording_socket(address, timeout):
        connected.append(address)
        raise ConnectionRefusedError("test: no traffic leaves loopback")

    deliverer = Deliverer("secret", AddressGuard(resolver=rebinding_resolver), RetryPolicy(max_attempts=1),
                          socket_factory=recording_socket)
    result = deliverer.attempt("https://rebind.example.com/hook", b"{}", "job")
    assert connected == [("93.184.216.34", 443)]
    assert calls == ["rebind.example.com"]  # one lookup: the one that was checked
    assert not result.delivered and result.retryable
    # The next attempt resolves again and is checked again: the loopback answer is refused.
    again = deliverer.attempt("https://rebind.example.com/hook", b"{}", "job")
    assert not again.retryable and "loopback" in again.error and connected == [("93.184.216.34", 443)]

"""The SSRF guard for callback URLs: which URLs this service may POST to, and the checked addresses.

A caller-supplied URL makes this service open a connection from inside the VPC/project, so:
``https`` only; every address the host resolves to must be public (no loopback, private,
link-local incl. the metadata server, CGNAT, multicast, reserved, documentation, ULA, mapped or
translated IPv4); the connection then goes to an address that was checked, never to a second DNS
answer (DNS rebinding). ``CALLBACK_ALLOWED_HOSTS`` entries (``host`` or ``host:port``) may use plain
``http`` and any address: that is how tests and private receivers are reached on purpose.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from core.errors import InvalidInput

MAX_URL_CHARS = 2048
# Names of the metadata server: refused before any DNS query (it resolves to 169.254.169.254).
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "metadata.goog"})

# Every range a callback may not reach, with the reason shown to the caller. ``is_global`` below
# catches anything Python knows about that this list misses.
_FORBIDDEN = [(ipaddress.ip_network(net), why) for net, why in [
    ("0.0.0.0/8", "a 'this network' address"),
    ("10.0.0.0/8", "a private address"),
    ("100.64.0.0/10", "a carrier-grade NAT address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address (incl. the metadata server)"),
    ("172.16.0.0/12", "a private address"),
    ("192.0.0.0/24", "an IETF protocol address"),
    ("192.0.2.0/24", "a documentation address"),
    ("192.88.99.0/24", "a 6to4 relay address"),
    ("192.168.0.0/16", "a private address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),
    ("::/128", "the unspecified address"),
    ("::1/128", "a loopback address"),
    ("::/96", "an IPv4-compatible IPv6 address"),
    ("::ffff:0:0/96", "an IPv4-mapped IPv6 address"),
    ("64:ff9b::/96", "a NAT64 address (it embeds an IPv4 address)"),
    ("64:ff9b:1::/48", "a NAT64 address (it embeds an IPv4 address)"),
    ("100::/64", "a discard-only address"),
    ("2001::/23", "an IETF protocol address (incl. Teredo)"),
    ("2001:db8::/32", "a documentation address"),
    ("2002::/16", "a 6to4 address (it embeds an IPv4 address)"),
    ("3fff::/20", "a documentation address"),
    ("fc00::/7", "a unique local (private) IPv6 address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
]]

Resolver = Callable[[str, int], list[str]]


class CallbackRefused(InvalidInput):
    """The callback URL fails the guard (400 at submit; a permanent failure at delivery)."""

    code = "invalid_callback_url"


@dataclass(frozen=True)
class CheckedTarget:
    """A callback URL that passed the guard, with the addresses to connect to (in order)."""

    url: str
    scheme: str
    host: str
    port: int
    path: str  # path + query, what goes on the request line
    addresses: tuple[str, ...]


def system_resolver(host: str, port: int) -> list[str]:
    """All addresses ``host`` resolves to (IPv4 and IPv6), in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 zone id
        if address not in seen:
            seen.append(address)
    return seen


def refusal_reason(address: str) -> str | None:
    """Why ``address`` may not be a callback target, or None when it is public."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    for network, why in _FORBIDDEN:
        if ip.version == network.version and ip in network:
            return why
    if not ip.is_global:
        return "not a public address"
    return None


def parse_allowed_hosts(entries: Iterable[str]) -> frozenset[tuple[str, int | None]]:
    """``CALLBACK_ALLOWED_HOSTS`` entries (``host``, ``host:port``, ``[v6]:port``) -> (host, port)."""
    allowed = set()
    for entry in entries:
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        elif entry.count(":") == 1:
            host, port = entry.split(":")
        else:
            host, port = entry, ""
        allowed.add((host.rstrip("."), int(port) if port else None))
    return frozenset(allowed)


class AddressGuard:
    """Checks callback URLs against the rules above; ``check`` resolves once and returns the target."""

    def __init__(self, allowed_hosts: Iterable[str] = (), resolver: Resolver | None = None):
        self.allowed = parse_allowed_hosts(allowed_hosts)
        self.resolver = resolver or system_resolver

    def is_allowed(self, host: str, port: int) -> bool:
        """True when ``host[:port]`` is on CALLBACK_ALLOWED_HOSTS."""
        return (host, None) in self.allowed or (host, port) in self.allowed

    def check(self, url: str) -> CheckedTarget:
        """Validate ``url`` and resolve its host once; raises CallbackRefused with the reason."""
        if not isinstance(url, str) or not url.strip():
            raise CallbackRefused("callback_url must be a non-empty URL")
        url = url.strip()
        if len(url) > MAX_URL_CHARS:
            raise CallbackRefused(f"callback_url is longer than {MAX_URL_CHARS} characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as err:
            raise CallbackRefused(f"callback_url is not a valid URL: {err}") from None
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").rstrip(".")
        if scheme not in ("http", "https") or not host:
            raise CallbackRefused("callback_url must be an https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            # user@host invites parser confusion (https://allowed@evil); the signature authenticates.
            raise CallbackRefused("callback_url must not contain credentials (user:password@)")
        port = port or (443 if scheme == "https" else 80)
        allowed = self.is_allowed(host, port)
        if scheme != "https" and not allowed:
            raise CallbackRefused("callback_url must use https (plain http only for CALLBACK_ALLOWED_HOSTS)")
        if host in METADATA_HOSTS and not allowed:
            raise CallbackRefused(f"callback_url host {host} is the metadata server")
        try:
            addresses = tuple(self.resolver(host, port))
        except (OSError, UnicodeError) as err:
            raise CallbackRefused(f"callback_url host {host} does not resolve: {err}") from None
        if not addresses:
            raise CallbackRefused(f"callback_url host {host} does not resolve")
        if not allowed:
            for address in addresses:
                why = refusal_reason(address)
                if why:
                    raise CallbackRefused(f"callback_url host {host} resolves to {address}, {why}; "
                                          "callbacks go to public addresses only")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return CheckedTarget(url, scheme, host, port, path, addresses)

"""URL policy for the crawler: which URLs may be fetched at all.

A crawler that follows URLs from the web must not become a proxy into the machine's own network
(SSRF): a page can point at http://localhost:8080/admin or at the cloud metadata service. So every
URL, and every redirect hop, is checked here, and the addresses that passed the check are the ones
the fetcher connects to (no second DNS lookup that a rebinding resolver could answer differently).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import quote, urlsplit

from lvdtool.errors import InputError

# Reasons a URL is refused (they double as fetch statuses).
BAD_URL = "bad_url"
BLOCKED = "blocked"
PRIVATE_ADDRESS = "private_address"
DNS_ERROR = "dns_error"

ALLOWED_SCHEMES = ("http", "https")
# Always refused, even with allow_private_network: no crawl needs the instance credentials.
CLOUD_METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters left as they are when a request target is percent-encoded: the RFC 3986 reserved and
# unreserved sets plus '%' so that existing escapes survive.
_SAFE_TARGET_CHARS = "/?#[]@!$&'()*+,;=:-._~%"

Resolver = Callable[..., list[tuple]]
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Target:
    """A URL that passed the policy: where to connect and what to ask for."""

    scheme: str
    host: str  # ASCII (IDNA) host name or IP literal, for the Host header and TLS SNI
    port: int
    request_target: str  # path and query, percent-encoded ASCII
    addresses: tuple[tuple, ...]  # getaddrinfo entries (family, type, proto, canonname, sockaddr)


@dataclass(frozen=True)
class GuardDecision:
    reason: str | None  # None: allowed
    error: str = ""
    target: Target | None = None
    transient: bool = False  # a retry may succeed (temporary DNS failure)


def normalize_domain(domain: str) -> str:
    return domain.strip().lower().rstrip(".")


def load_blocklist(path: str | os.PathLike[str]) -> frozenset[str]:
    """Domains from a text file, one per line; blank lines and '#' comments skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read domain blocklist ({exc.strerror or exc})") from exc
    return frozenset(normalize_domain(line) for line in lines if line.strip() and not line.lstrip().startswith("#"))


def is_forbidden_address(address: IpAddress, allow_private_network: bool = False) -> bool:
    """True for addresses a public crawler must not connect to."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    if address in CLOUD_METADATA_ADDRESSES:
        return True
    if allow_private_network:
        return False
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global  # shared address space 100.64/10, documentation ranges, ...
    )


class UrlGuard:
    """Checks URLs against scheme, domain blocklist and address policy. Thread-safe (immutable)."""

    def __init__(
        self,
        blocked_domains: Iterable[str] = (),
        allow_private_network: bool = False,
        resolver: Resolver = socket.getaddrinfo,
    ) -> None:
        self.blocked_domains = frozenset(normalize_domain(d) for d in blocked_domains if d.strip())
        self.allow_private_network = allow_private_network
        self._resolver = resolver

    def is_blocked_host(self, host: str) -> bool:
        """Exact domain or any subdomain of a blocked domain; O(number of labels)."""
        labels = normalize_domain(host).split(".")
        return any(".".join(labels[i:]) in self.blocked_domains for i in range(len(labels)))

    def check(self, url: str) -> str | None:
        """The refusal reason (bad_url, blocked, private_address, dns_error), or None if allowed."""
        return self.inspect(url).reason

    def inspect(self, url: str) -> GuardDecision:
        try:
            parts = urlsplit(url)
            port = parts.port
            host = parts.hostname
        except ValueError as exc:
            return GuardDecision(BAD_URL, f"unparsable URL ({exc})")
        scheme = parts.scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            return GuardDecision(BAD_URL, f"scheme '{scheme}' not allowed")
        if not host:
            return GuardDecision(BAD_URL, "no host in URL")
        if any(ch.isspace() or ord(ch) < 32 for ch in url):
            return GuardDecision(BAD_URL, "whitespace or control character in URL")
        try:
            ascii_host = host if host.isascii() else host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            return GuardDecision(BAD_URL, f"invalid international host name ({exc})")
        # The blocklist is checked before DNS, so blocked domains cost no lookup.
        if self.is_blocked_host(ascii_host):
            return GuardDecision(BLOCKED, f"domain '{ascii_host}' is blocklisted")
        port = port if port is not None else _DEFAULT_PORTS[scheme]
        try:
            addresses = tuple(self._resolver(ascii_host, port, type=socket.SOCK_STREAM))
        except (socket.gaierror, UnicodeError, OSError) as exc:
            transient = isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_AGAIN
            return GuardDecision(DNS_ERROR, f"cannot resolve '{ascii_host}' ({exc})", transient=transient)
        if not addresses:
            return GuardDecision(DNS_ERROR, f"no address for '{ascii_host}'")
        for entry in addresses:
            # sockaddr[0] may carry an IPv6 zone ('fe80::1%eth0'); the zone is not part of the address.
            address = ipaddress.ip_address(str(entry[4][0]).split("%", 1)[0])
            # Every address must pass: a host that resolves to one public and one private address
            # could otherwise be steered to the private one.
            if is_forbidden_address(address, self.allow_private_network):
                return GuardDecision(PRIVATE_ADDRESS, f"'{ascii_host}' resolves to non-public address {address}")
        path = parts.path or "/"
        request_target = quote(path + (f"?{parts.query}" if parts.query else ""), safe=_SAFE_TARGET_CHARS)
        return GuardDecision(None, target=Target(scheme, ascii_host, port, request_target, addresses))

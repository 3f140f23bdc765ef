"""Download one URL (or read one local file) into bytes, with every limit a web crawl needs.

Standard library only (http.client). The caller runs many `Fetcher.fetch` calls in a thread
pool; a Fetcher holds only immutable settings plus a thread-safe watchdog, so one instance serves
every thread.

Time limits: `connect_timeout` per connect, `read_timeout` per socket read, and `deadline` for a
whole attempt (all redirect hops), enforced by a watchdog so that a slow-drip server cannot hold a
worker. Worst case per URL: (retries + 1) * deadline + the backoff sleeps + DNS time (DNS cannot
be interrupted; use a local caching resolver for big crawls).
"""

from __future__ import annotations

import http.client
import os
import random
import socket
import ssl
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from stat import S_ISREG
from typing import Callable
from urllib.parse import urljoin

from lvdtool.errors import ConfigError
from lvdtool.ingest.deadline import SocketWatchdog
from lvdtool.ingest.netguard import Target, UrlGuard
from lvdtool.ingest.optout import DEFAULT_OPT_OUT_DIRECTIVES, opted_out

# Statuses (besides the netguard reasons bad_url, blocked, private_address, dns_error and http_<code>).
OK = "ok"
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
TOO_LARGE = "too_large"
TOO_MANY_REDIRECTS = "too_many_redirects"
OPT_OUT = "opt_out"
MISSING = "missing"
READ_ERROR = "read_error"

_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 1 << 16


@dataclass(frozen=True)
class FetchConfig:
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    deadline: float = 30.0  # seconds per attempt, redirect hops included
    retries: int = 2  # extra attempts after timeouts, connection errors and 5xx (never after 4xx)
    backoff_base: float = 0.5  # sleep before retry n (0-based): base * 2**n, jittered to [50%, 100%]
    backoff_max: float = 8.0
    max_bytes: int = 32 * 1024 * 1024
    max_redirects: int = 5
    user_agent: str = "lvdtool/0.1 (image dataset crawler)"
    robots_agent: str | None = None  # agent name for "name: noai" headers; default: user agent's first token
    opt_out_directives: tuple[str, ...] = DEFAULT_OPT_OUT_DIRECTIVES
    blocked_domains: tuple[str, ...] = ()
    allow_private_network: bool = False
    verify_tls: bool = True
    ca_file: str | None = None  # extra trusted CA bundle (PEM), e.g. for an intranet mirror

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "deadline"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"fetch.{name} must be > 0, got {getattr(self, name)}")
        for name in ("retries", "max_redirects", "backoff_base", "backoff_max"):
            if getattr(self, name) < 0:
                raise ConfigError(f"fetch.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_bytes < 1:
            raise ConfigError(f"fetch.max_bytes must be >= 1, got {self.max_bytes}")
        if not self.user_agent.strip():
            raise ConfigError("fetch.user_agent must not be empty")


@dataclass
class FetchResult:
    status: str
    data: bytes | None = None
    error: str = ""
    http_status: int | None = None
    final_url: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names, final response
    attempts: int = 1
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True)
class _Redirect:
    location: str


class _TooLarge(Exception):
    pass


class Fetcher:
    """Thread-safe HTTP(S) downloader; see the module docstring for the limits it enforces."""

    def __init__(self, config: FetchConfig | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config or FetchConfig()
        self.guard = UrlGuard(self.config.blocked_domains, self.config.allow_private_network)
        self._agent = (self.config.robots_agent or self.config.user_agent.split("/", 1)[0].split()[0]).lower()
        self._watchdog = SocketWatchdog()
        self._sleep = sleep
        try:
            self._tls = ssl.create_default_context(cafile=self.config.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"fetch.ca_file {self.config.ca_file}: not a readable PEM CA bundle ({exc})") from exc
        if not self.config.verify_tls:
            self._tls.check_hostname = False
            self._tls.verify_mode = ssl.CERT_NONE

    def close(self) -> None:
        self._watchdog.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def backoff(self, retry_index: int) -> float:
        cap = min(self.config.backoff_max, self.config.backoff_base * 2**retry_index)
        # Jitter spreads the retries of many workers that failed together (a host going down).
        return cap * random.uniform(0.5, 1.0)

    def fetch(self, url: str) -> FetchResult:
        start = time.monotonic()
        attempt = 0
        while True:
            result, retryable = self._attempt(url, time.monotonic() + self.config.deadline)
            result.attempts = attempt + 1
            if not retryable or attempt >= self.config.retries:
                result.elapsed = time.monotonic() - start
                return result
            self._sleep(self.backoff(attempt))
            attempt += 1

    def _attempt(self, url: str, deadline: float) -> tuple[FetchResult, bool]:
        """One attempt, following redirects; returns the result and whether a retry may help."""
        current = url
        for _ in range(self.config.max_redirects + 1):
            decision = self.guard.inspect(current)
            if decision.reason is not None:
                return FetchResult(decision.reason, error=decision.error, final_url=current), decision.transient
            assert decision.target is not None
            outcome = self._request(decision.target, current, deadline)
            if isinstance(outcome, _Redirect):
                current = urljoin(current, outcome.location)
                continue
            return outcome
        return (
            FetchResult(TOO_MANY_REDIRECTS, error=f"more than {self.config.max_redirects} redirects", final_url=current),
            False,
        )

    def _request(self, target: Target, url: str, deadline: float) -> tuple[FetchResult, bool] | _Redirect:
        if target.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                target.host, target.port, timeout=self.config.connect_timeout, context=self._tls
            )
        else:
            conn = http.client.HTTPConnection(target.host, target.port, timeout=self.config.connect_timeout)
        tokens: list[int] = []
        # Connect to the addresses netguard approved rather than letting http.client resolve the
        # name again (DNS rebinding); Host header and TLS SNI still use the name.
        conn._create_connection = partial(self._connect_pinned, target.addresses, deadline, tokens)  # type: ignore[attr-defined]
        try:
            conn.putrequest("GET", target.request_target)
            conn.putheader("User-Agent", self.config.user_agent)
            conn.putheader("Accept", "image/*,*/*;q=0.8")
            conn.putheader("Connection", "close")
            conn.endheaders()
            assert conn.sock is not None
            conn.sock.settimeout(self.config.read_timeout)
            response = conn.getresponse()
            return self._read_response(response, url, deadline)
        except _TooLarge:
            return FetchResult(TOO_LARGE, error=f"body over {self.config.max_bytes} bytes", final_url=url), False
        except ssl.SSLCertVerificationError as exc:
            return FetchResult(CONNECTION_ERROR, error=f"TLS: {exc.verify_message or exc}", final_url=url), False
        except (OSError, http.client.HTTPException) as exc:
            # After the watchdog fires, the blocked call surfaces as a disconnect of some kind.
            if isinstance(exc, TimeoutError) or time.monotonic() >= deadline:
                return FetchResult(TIMEOUT, error=_describe(exc) or "deadline passed", final_url=url), True
            return FetchResult(CONNECTION_ERROR, error=_describe(exc), final_url=url), True
        finally:
            for token in tokens:
                self._watchdog.disarm(token)
            conn.close()

    def _connect_pinned(
        self, addresses: tuple[tuple, ...], deadline: float, tokens: list[int], *_ignored: object
    ) -> socket.socket:
        last_error: OSError = OSError("no address to connect to")
        for family, sock_type, proto, _, sockaddr in addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("deadline passed while connecting")
            sock = socket.socket(family, sock_type, proto)
            token = None
            try:
                token = self._watchdog.arm(sock, deadline)
                sock.settimeout(min(self.config.connect_timeout, remaining))
                sock.connect(sockaddr)
            except BaseException as exc:
                if token is not None:
                    self._watchdog.disarm(token)
                sock.close()
                if not isinstance(exc, OSError):
                    raise
                last_error = exc
                continue
            tokens.append(token)
            return sock
        raise last_error

    def _read_response(
        self, response: http.client.HTTPResponse, url: str, deadline: float
    ) -> tuple[FetchResult, bool] | _Redirect:
        status = response.status
        headers = {name.lower(): value for name, value in response.getheaders()}
        if status in _REDIRECT_CODES and response.getheader("Location"):
            return _Redirect(response.getheader("Location", ""))
        if not 200 <= status < 300:
            result = FetchResult(f"http_{status}", error=response.reason, http_status=status, final_url=url, headers=headers)
            return result, status >= 500
        directive = opted_out(response.msg.get_all("X-Robots-Tag") or [], self._agent, self.config.opt_out_directives)
        if directive is not None:
            return FetchResult(OPT_OUT, error=f"X-Robots-Tag: {directive}", http_status=status, final_url=url, headers=headers), False
        declared = _content_length(headers)
        if declared is not None and declared > self.config.max_bytes:
            raise _TooLarge
        body = self._read_body(response, deadline)
        if declared is not None and len(body) < declared:
            if time.monotonic() >= deadline:
                return FetchResult(TIMEOUT, error="deadline passed reading body", http_status=status, final_url=url), True
            error = f"body ended after {len(body)} of {declared} bytes"
            return FetchResult(CONNECTION_ERROR, error=error, http_status=status, final_url=url), True
        return FetchResult(OK, data=body, http_status=status, final_url=url, headers=headers), False

    def _read_body(self, response: http.client.HTTPResponse, deadline: float) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            if time.monotonic() >= deadline:
                raise TimeoutError("deadline passed reading body")
            # read1 returns after one socket read, so the deadline is checked between drips.
            chunk = response.read1(_CHUNK)
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > self.config.max_bytes:
                raise _TooLarge
            chunks.append(chunk)


def _content_length(headers: dict[str, str]) -> int | None:
    try:
        value = int(headers.get("content-length", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_file(path: str | os.PathLike[str], max_bytes: int) -> FetchResult:
    """Read a local image file with the same result type as a download."""
    path = Path(path)
    start = time.monotonic()
    try:
        stat = path.stat()
        if not S_ISREG(stat.st_mode):
            return FetchResult(READ_ERROR, error="not a regular file", final_url=str(path))
        size = stat.st_size
        if size > max_bytes:
            return FetchResult(TOO_LARGE, error=f"{size} bytes over {max_bytes}", final_url=str(path))
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # +1: the file may have grown since stat
    except FileNotFoundError:
        error = f"dangling symlink to {os.readlink(path)}" if path.is_symlink() else "no such file"
        return FetchResult(MISSING, error=error, final_url=str(path))
    except OSError as exc:
        return FetchResult(READ_ERROR, error=exc.strerror or _describe(exc), final_url=str(path))
    if len(data) > max_bytes:
        return FetchResult(TOO_LARGE, error=f"over {max_bytes} bytes", final_url=str(path))
    return FetchResult(OK, data=data, final_url=str(path), elapsed=time.monotonic() - start)

"""URL policy (scheme, blocklist, address classes) and X-Robots-Tag parsing."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from lvdtool.errors import InputError
from lvdtool.ingest import UrlGuard, load_blocklist
from lvdtool.ingest.netguard import is_forbidden_address
from lvdtool.ingest.optout import DEFAULT_OPT_OUT_DIRECTIVES, opted_out, robots_directives


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/a.jpg",
        "http://localhost/a.jpg",
        "http://10.1.2.3/a.jpg",
        "http://172.16.0.9/a.jpg",
        "http://192.168.1.1/a.jpg",
        "http://100.64.0.1/a.jpg",  # carrier-grade NAT
        "http://169.254.1.1/a.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://224.0.0.251/a.jpg",
        "http://0.0.0.0/a.jpg",
        "http://240.0.0.1/a.jpg",
        "http://2130706433/a.jpg",  # 127.0.0.1 written as one number
        "http://[::1]/a.jpg",
        "http://[::ffff:127.0.0.1]/a.jpg",
        "http://[fe80::1]/a.jpg",
        "http://[fd00:ec2::254]/a.jpg",
    ],
)
def test_non_public_addresses_are_refused(url):
    guard = UrlGuard()
    assert guard.check(url) == "private_address"


def test_public_addresses_pass_and_keep_the_resolved_address():
    decision = UrlGuard().inspect("https://93.184.215.14:8443/p%20ath/ü.jpg?q=1#frag")
    assert decision.reason is None
    target = decision.target
    assert target is not None
    assert (target.scheme, target.host, target.port) == ("https", "93.184.215.14", 8443)
    assert target.request_target == "/p%20ath/%C3%BC.jpg?q=1"  # existing escape kept, fragment dropped
    assert target.addresses[0][4][0] == "93.184.215.14"


def test_allow_private_network_allows_private_but_never_metadata():
    guard = UrlGuard(allow_private_network=True)
    assert guard.check("http://127.0.0.1:8000/a.jpg") is None
    assert guard.check("http://10.0.0.1/a.jpg") is None
    assert guard.check("http://169.254.169.254/latest/") == "private_address"
    assert guard.check("http://[fd00:ec2::254]/") == "private_address"
    assert is_forbidden_address(ipaddress.ip_address("::ffff:169.254.169.254"), allow_private_network=True)


def test_blocklist_matches_domain_and_subdomains_only():
    guard = UrlGuard(blocked_domains=["Blocked.Test.", "other.example"])
    assert guard.check("http://blocked.test/a.jpg") == "blocked"
    assert guard.check("http://img.cdn.BLOCKED.test/a.jpg") == "blocked"
    assert guard.check("http://other.example./a.jpg") == "blocked"
    assert guard.check("http://notblocked.test/a.jpg") != "blocked"
    assert guard.check("http://blocked.test.evil.invalid/a.jpg") != "blocked"


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/a.jpg", "file:///etc/passwd", "javascript:alert(1)", "http:///a.jpg",
     "http://exa mple.com/a.jpg", "http://example.com:99999/a.jpg", "http://[::1/a.jpg", "", "a.jpg"],
)
def test_bad_urls(url):
    assert UrlGuard().check(url) == "bad_url"


def test_unresolvable_host_is_a_dns_error():
    decision = UrlGuard().inspect("http://no-such-host.invalid/a.jpg")
    assert decision.reason == "dns_error"
    assert "no-such-host.invalid" in decision.error


def test_load_blocklist(tmp_path: Path):
    path = tmp_path / "blocked.txt"
    path.write_text("# adult sites\nBad.Example\n\n  spam.test  \n")
    assert load_blocklist(path) == {"bad.example", "spam.test"}
    with pytest.raises(InputError, match="missing.txt"):
        load_blocklist(tmp_path / "missing.txt")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["noai"], "noai"),
        (["NoImageAI"], "noimageai"),
        (["index, follow", "noindex"], "noindex"),
        (["googlebot: noai, noimageai"], None),
        (["lvdtool: noimageindex"], "noimageindex"),
        (["*: noai"], "noai"),
        (["unavailable_after: 25 Jun 2010 15:00:00 PST"], None),
        (["nofollow, noarchive"], None),
        ([], None),
    ],
)
def test_opt_out_header_parsing(values, expected):
    assert opted_out(values, "lvdtool", DEFAULT_OPT_OUT_DIRECTIVES) == expected


def test_robots_directives_keep_valued_directives_generic():
    assert robots_directives(["max-image-preview: large, noai"], "lvdtool") == {"max-image-preview: large", "noai"}

"""Fetcher against the loopback fixture server: statuses, retries, limits, deadlines, opt-out."""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lvdtool.errors import ConfigError
from lvdtool.ingest import FetchConfig, Fetcher, read_file


@pytest.fixture
def fetcher(local_fetch_config):
    with Fetcher(local_fetch_config()) as f:
        yield f


def test_good_photo_is_fetched_byte_for_byte(server, images, fetcher):
    result = fetcher.fetch(server.url("/img/astronaut.jpg"))
    assert result.status == "ok" and result.ok
    assert result.data == images["astronaut.jpg"]
    assert result.http_status == 200
    assert result.headers["content-type"] == "image/jpeg"
    assert result.attempts == 1


def test_chunked_body_is_reassembled(server, images, fetcher):
    result = fetcher.fetch(server.url("/chunked-photo"))
    assert result.status == "ok"
    assert result.data == images["astronaut.jpg"]


def test_404_is_not_retried(server, fetcher):
    result = fetcher.fetch(server.url("/status/404"))
    assert result.status == "http_404"
    assert result.http_status == 404
    assert result.data is None
    assert server.hits["/status/404"] >= 1


def test_403_gets_exactly_one_attempt(server, images, local_fetch_config):
    path = server.unique("forbidden")
    server.add_bytes(path, b"no", "text/plain", 403)
    with Fetcher(local_fetch_config(retries=3)) as fetcher:
        result = fetcher.fetch(server.url(path))
    assert result.status == "http_403"
    assert server.hits[path] == 1
    assert result.attempts == 1


def test_500_then_200_is_retried_until_success(server, images, local_fetch_config):
    path = server.unique("flaky")
    server.add_sequence(path, [(500, b"oops"), (503, b"busy"), (200, images["chelsea.jpg"])])
    with Fetcher(local_fetch_config(retries=3)) as fetcher:
        result = fetcher.fetch(server.url(path))
    assert result.status == "ok"
    assert result.data == images["chelsea.jpg"]
    assert server.hits[path] == 3
    assert result.attempts == 3


def test_500_always_ends_as_http_500_after_all_retries(server, local_fetch_config):
    path = server.unique("broken")
    server.add_bytes(path, b"oops", "text/plain", 500)
    with Fetcher(local_fetch_config(retries=2)) as fetcher:
        result = fetcher.fetch(server.url(path))
    assert result.status == "http_500"
    assert server.hits[path] == 3
    assert result.attempts == 3


def test_backoff_grows_and_is_capped():
    fetcher = Fetcher(FetchConfig(backoff_base=0.5, backoff_max=3.0))
    for index, cap in enumerate([0.5, 1.0, 2.0, 3.0, 3.0]):
        delays = [fetcher.backoff(index) for _ in range(50)]
        assert all(cap * 0.5 <= d <= cap for d in delays)
        assert len(set(delays)) > 1  # jittered


def test_slow_response_times_out(server, local_fetch_config):
    with Fetcher(local_fetch_config(read_timeout=0.3, retries=0)) as fetcher:
        start = time.monotonic()
        result = fetcher.fetch(server.url("/slow"))
    assert result.status == "timeout"
    assert time.monotonic() - start < 1.2


@pytest.mark.parametrize("path", ["/drip-body", "/drip-headers"])
def test_slow_drip_is_cut_by_the_total_deadline(server, local_fetch_config, path):
    # Every single read returns within read_timeout; only the per-attempt deadline can stop this.
    with Fetcher(local_fetch_config(read_timeout=0.5, deadline=0.8, retries=0)) as fetcher:
        start = time.monotonic()
        result = fetcher.fetch(server.url(path))
        elapsed = time.monotonic() - start
    assert result.status == "timeout"
    assert 0.7 < elapsed < 1.6


def test_body_shorter_than_content_length_is_a_connection_error(server, local_fetch_config):
    with Fetcher(local_fetch_config(retries=1)) as fetcher:
        result = fetcher.fetch(server.url("/short-body"))
    assert result.status == "connection_error"
    assert "500 of 1000" in result.error
    assert result.attempts == 2  # connection errors are retried


def test_refused_connection_is_a_connection_error(local_fetch_config):
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago has nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Fetcher(local_fetch_config(retries=0)) as fetcher:
        result = fetcher.fetch(f"http://127.0.0.1:{port}/x.jpg")
    assert result.status == "connection_error"
    assert "Refused" in result.error


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
def test_body_over_max_bytes_is_too_large(server, local_fetch_config, path):
    with Fetcher(local_fetch_config(max_bytes=100_000)) as fetcher:
        result = fetcher.fetch(server.url(path))
    assert result.status == "too_large"
    assert result.data is None
    with Fetcher(local_fetch_config(max_bytes=400_000)) as fetcher:
        assert fetcher.fetch(server.url(path)).status == "ok"


def test_redirects_are_followed_to_the_image(server, images, fetcher):
    result = fetcher.fetch(server.url("/hop1"))
    assert result.status == "ok"
    assert result.data == images["astronaut.jpg"]
    assert result.final_url == server.url("/img/astronaut.jpg")


def test_redirect_loop_is_too_many_redirects(server, local_fetch_config):
    with Fetcher(local_fetch_config(max_redirects=4)) as fetcher:
        before = server.hits["/loop"]
        result = fetcher.fetch(server.url("/loop"))
    assert result.status == "too_many_redirects"
    assert server.hits["/loop"] - before == 5  # the first request plus 4 followed redirects


def test_redirect_limit_counts_hops(server, local_fetch_config):
    with Fetcher(local_fetch_config(max_redirects=1)) as fetcher:
        assert fetcher.fetch(server.url("/hop1")).status == "too_many_redirects"
    with Fetcher(local_fetch_config(max_redirects=2)) as fetcher:
        assert fetcher.fetch(server.url("/hop1")).status == "ok"


def test_every_redirect_hop_is_checked_by_the_guard(server, local_fetch_config):
    with Fetcher(local_fetch_config(blocked_domains=("blocked.test",))) as fetcher:
        blocked = fetcher.fetch(server.url("/to-blocked"))
        ftp = fetcher.fetch(server.url("/to-ftp"))
    assert blocked.status == "blocked"
    assert blocked.final_url == "http://cdn.blocked.test/x.jpg"
    assert ftp.status == "bad_url"


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/noai", "opt_out"), ("/our-agent-noindex", "opt_out"), ("/other-agent-noai", "ok")],
)
def test_x_robots_tag_opt_out(server, fetcher, path, expected):
    result = fetcher.fetch(server.url(path))
    assert result.status == expected
    assert (result.data is None) == (expected == "opt_out")


def test_opt_out_directives_are_configurable(server, local_fetch_config):
    with Fetcher(local_fetch_config(opt_out_directives=("noimageai",))) as fetcher:
        assert fetcher.fetch(server.url("/noai")).status == "ok"
        assert fetcher.fetch(server.url("/our-agent-noindex")).status == "ok"


def test_private_address_is_refused_without_allow_private_network(server, local_fetch_config):
    path = server.unique("private")
    server.add_bytes(path, b"secret")
    with Fetcher(local_fetch_config(allow_private_network=False)) as fetcher:
        by_name = fetcher.fetch(server.url(path, host="localhost"))
        by_ip = fetcher.fetch(server.url(path))
    assert by_name.status == "private_address"
    assert by_ip.status == "private_address"
    assert server.hits[path] == 0  # refused before any connection


def test_blocked_domain_and_bad_urls(local_fetch_config):
    with Fetcher(local_fetch_config(blocked_domains=("blocked.test",))) as fetcher:
        assert fetcher.fetch("https://img.blocked.test/a.jpg").status == "blocked"
        assert fetcher.fetch("ftp://example.com/a.jpg").status == "bad_url"
        assert fetcher.fetch("not a url").status == "bad_url"
        assert fetcher.fetch("").status == "bad_url"


def test_concurrent_fetches_share_one_fetcher(server, images, fetcher):
    names = ["astronaut.jpg", "coffee.png", "chelsea.jpg", "rocket.jpg", "china.jpg", "flower.webp"] * 4
    paths = [f"/img/{n}" for n in names] + ["/status/404", "/hop1", "/noai"] * 2
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda p: fetcher.fetch(server.url(p)), paths))
    for name, result in zip(names, results):
        assert result.status == "ok"
        assert hashlib.sha256(result.data).digest() == hashlib.sha256(images[name]).digest()
    assert [r.status for r in results[len(names):]] == ["http_404", "ok", "opt_out"] * 2


def test_fetch_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="deadline"):
        FetchConfig(deadline=0)
    with pytest.raises(ConfigError, match="retries"):
        FetchConfig(retries=-1)
    with pytest.raises(ConfigError, match="max_bytes"):
        FetchConfig(max_bytes=0)


def test_read_file_statuses(tmp_path: Path, images):
    photo = tmp_path / "a.jpg"
    photo.write_bytes(images["astronaut.jpg"])
    ok = read_file(photo, max_bytes=10_000_000)
    assert ok.status == "ok" and ok.data == images["astronaut.jpg"]
    assert read_file(photo, max_bytes=1000).status == "too_large"
    assert read_file(tmp_path / "nope.jpg", max_bytes=1000).status == "missing"
    assert read_file(tmp_path, max_bytes=1000).status == "read_error"


def test_https_with_a_trusted_certificate(tls_server, images, local_fetch_config, self_signed_pem):
    with Fetcher(local_fetch_config(ca_file=str(self_signed_pem))) as fetcher:
        by_ip = fetcher.fetch(tls_server.url("/img/coffee.png"))
        by_name = fetcher.fetch(tls_server.url("/hop1", host="localhost"))
    assert by_ip.status == "ok" and by_ip.data == images["coffee.png"]
    assert by_name.status == "ok" and by_name.data == images["astronaut.jpg"]


def test_https_with_an_untrusted_certificate_fails_once(tls_server, local_fetch_config):
    path = tls_server.unique("tls")
    tls_server.add_bytes(path, b"x")
    with Fetcher(local_fetch_config(retries=3)) as fetcher:
        result = fetcher.fetch(tls_server.url(path))
    assert result.status == "connection_error"
    assert "TLS" in result.error
    assert result.attempts == 1  # a certificate problem does not go away by retrying
    with Fetcher(local_fetch_config(verify_tls=False)) as fetcher:
        assert fetcher.fetch(tls_server.url(path)).status == "ok"


def test_https_slow_drip_is_cut_by_the_deadline(tls_server, local_fetch_config):
    with Fetcher(local_fetch_config(verify_tls=False, deadline=0.8, retries=0)) as fetcher:
        start = time.monotonic()
        result = fetcher.fetch(tls_server.url("/drip-body"))
    assert result.status == "timeout"
    assert time.monotonic() - start < 1.6


def test_bad_ca_file_is_a_config_error(tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="ca.pem"):
        Fetcher(FetchConfig(ca_file=str(bad)))

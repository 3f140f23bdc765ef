"""A real HTTP server on 127.0.0.1 serving real photos, generated images and misbehaving routes."""

from __future__ import annotations

import io
import ssl
import struct
import sys
import threading
import time
import uuid
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
import skimage.data
from PIL import Image
from sklearn.datasets import load_sample_images

from lvdtool.ingest import FetchConfig

RouteHandler = Callable[[BaseHTTPRequestHandler], None]
DRIP_INTERVAL = 0.05
DRIP_LIMIT = 5.0  # a drip route gives up by itself after this many seconds
# Self-signed certificate and key for localhost / 127.0.0.1 (valid until 2126), made with openssl req -x509.
SELF_SIGNED_PEM = Path(__file__).parent / "data" / "localhost-selfsigned.pem"


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def send(handler: BaseHTTPRequestHandler, body: bytes, content_type: str = "image/jpeg", status: int = 200,
         headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Connection", "close")
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 drops SYNs under a thread pool (1 s retransmit stalls)

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that refuse our self-signed certificate or hang up early are what the tests want.
        if not isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class FixtureServer:
    """Routes are exact paths; tests add their own under unique names; hits are counted per path."""

    def __init__(self, tls_context: ssl.SSLContext | None = None) -> None:
        self.scheme = "https" if tls_context else "http"
        self.routes: dict[str, RouteHandler] = {}
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        fixture = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # needed for chunked bodies

            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                with fixture._lock:
                    fixture.hits[self.path] += 1
                route = fixture.routes.get(self.path)
                self.close_connection = True
                try:
                    if route is None:
                        send(self, b"not found", "text/plain", 404)
                    else:
                        route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeouts, size limits): expected in these tests

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        if tls_context is not None:
            # Handshake lazily in the handler thread, so one slow client cannot stall accept().
            self.httpd.socket = tls_context.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, path: str, handler: RouteHandler) -> str:
        self.routes[path] = handler
        return self.url(path)

    def add_bytes(self, path: str, body: bytes, content_type: str = "image/jpeg", status: int = 200,
                  headers: dict[str, str] | None = None) -> str:
        return self.add(path, lambda h: send(h, body, content_type, status, headers))

    def add_sequence(self, path: str, responses: list[tuple[int, bytes]]) -> str:
        """Answer the n-th request with responses[n] (status, body); the last one repeats."""
        served = [0]

        def respond(handler: BaseHTTPRequestHandler) -> None:
            with self._lock:
                index = min(served[0], len(responses) - 1)
                served[0] += 1
            status, body = responses[index]
            send(handler, body, "image/jpeg" if status == 200 else "text/plain", status)

        return self.add(path, respond)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def unique(self, stem: str) -> str:
        return f"/{stem}/{uuid.uuid4().hex}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _crafted_png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height 1-bit pixels, with a valid all-zero image stream."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    stream = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


def _build_images() -> dict[str, bytes]:
    astronaut = Image.fromarray(skimage.data.astronaut())
    coffee = Image.fromarray(skimage.data.coffee())
    china, flower = (Image.fromarray(a) for a in load_sample_images().images)
    images = {
        "astronaut.jpg": encode(astronaut, "JPEG", quality=92),
        "coffee.png": encode(coffee, "PNG"),
        "chelsea.jpg": encode(Image.fromarray(skimage.data.chelsea()), "JPEG", quality=90),
        "rocket.jpg": encode(Image.fromarray(skimage.data.rocket()), "JPEG", quality=90),
        "china.jpg": encode(china, "JPEG", quality=90),
        "flower.webp": encode(flower, "WEBP", quality=90),
        "astronaut-cmyk.jpg": encode(astronaut.convert("CMYK"), "JPEG", quality=95),
    }
    # RGBA: left half transparent black, right half opaque blue, a 50%-alpha red band at the bottom.
    rgba = np.zeros((100, 120, 4), np.uint8)
    rgba[:, 60:] = (0, 0, 255, 255)
    rgba[80:, :] = (255, 0, 0, 128)
    images["alpha.png"] = encode(Image.fromarray(rgba, "RGBA"), "PNG")
    # Palette with a transparent index 0 (stored colour black) around an opaque green square.
    palette = Image.new("P", (90, 90), 0)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * (256 * 3 - 6))
    palette.paste(1, (30, 30, 60, 60))
    images["transparent.gif"] = encode(palette, "GIF", transparency=0)
    frames = [Image.new("RGB", (96, 80), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    images["animated.gif"] = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    images["animated.webp"] = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50,
                                     lossless=True)
    # 16-bit grayscale: a horizontal ramp over the full 0..65535 range.
    ramp = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (80, 1))
    images["gray16.png"] = encode(Image.fromarray(ramp), "PNG")
    # LA: gray 100, left half fully transparent.
    la = np.zeros((80, 100, 2), np.uint8)
    la[..., 0] = 100
    la[:, 50:, 1] = 255
    images["gray-alpha.png"] = encode(Image.fromarray(la, "LA"), "PNG")
    # Stored 200 wide x 100 high with a red marker in the stored top-left corner, EXIF orientation 6.
    stored = np.full((100, 200, 3), 40, np.uint8)
    stored[:20, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    images["rotated.jpg"] = encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())
    images["truncated.jpg"] = images["astronaut.jpg"][: len(images["astronaut.jpg"]) // 2]
    images["truncated.png"] = images["coffee.png"][: len(images["coffee.png"]) // 2]
    images["bomb.png"] = _crafted_png_header_only(20_000, 20_000)
    return images


@pytest.fixture(scope="session")
def images() -> dict[str, bytes]:
    return _build_images()


def _drip_body(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/jpeg")
    handler.send_header("Content-Length", "100000")
    handler.send_header("Connection", "close")
    handler.end_headers()
    _drip(handler, b"x" * 100_000)


def _drip_headers(handler: BaseHTTPRequestHandler) -> None:
    _drip(handler, b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 10_000 + b"\r\n\r\n")


def _drip(handler: BaseHTTPRequestHandler, payload: bytes) -> None:
    start = time.monotonic()
    for offset in range(len(payload)):
        if time.monotonic() - start > DRIP_LIMIT:
            return
        handler.wfile.write(payload[offset : offset + 1])
        handler.wfile.flush()
        time.sleep(DRIP_INTERVAL)


def _chunked(handler: BaseHTTPRequestHandler, body: bytes) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/jpeg")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.send_header("Connection", "close")
    handler.end_headers()
    for start in range(0, len(body), 65536):
        piece = body[start : start + 65536]
        handler.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    handler.wfile.write(b"0\r\n\r\n")


def _short_body(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/jpeg")
    handler.send_header("Content-Length", "1000")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(b"y" * 500)


def _redirect(location: str, status: int = 302) -> RouteHandler:
    return lambda h: send(h, b"", "text/plain", status, {"Location": location})


def _install_routes(srv: FixtureServer, images: dict[str, bytes]) -> None:
    for name, body in images.items():
        content_type = {"png": "image/png", "gif": "image/gif", "webp": "image/webp"}.get(name.rsplit(".", 1)[1], "image/jpeg")
        srv.add_bytes(f"/img/{name}", body, content_type)
    srv.add_bytes("/text-as-jpeg", b"<html>this is not an image</html>" * 20, "image/jpeg")
    srv.add_bytes("/big", b"z" * 300_000)
    srv.add("/big-chunked", lambda h: _chunked(h, b"z" * 300_000))
    srv.add("/chunked-photo", lambda h: _chunked(h, images["astronaut.jpg"]))
    srv.add("/short-body", _short_body)
    srv.add("/drip-body", _drip_body)
    srv.add("/drip-headers", _drip_headers)
    srv.add("/slow", lambda h: (time.sleep(1.5), send(h, images["astronaut.jpg"])))
    srv.add("/loop", _redirect("/loop"))
    srv.add("/hop1", _redirect("/hop2", 301))
    srv.add("/hop2", _redirect(srv.url("/img/astronaut.jpg"), 307))
    srv.add("/to-blocked", _redirect("http://cdn.blocked.test/x.jpg"))
    srv.add("/to-ftp", _redirect("ftp://127.0.0.1/x.jpg"))
    for code in (403, 404, 500):
        srv.add_bytes(f"/status/{code}", b"nope", "text/plain", code)
    srv.add_bytes("/noai", images["astronaut.jpg"], headers={"X-Robots-Tag": "noai"})
    srv.add_bytes("/other-agent-noai", images["astronaut.jpg"], headers={"X-Robots-Tag": "otherbot: noai, noimageai"})
    srv.add_bytes("/our-agent-noindex", images["astronaut.jpg"], headers={"X-Robots-Tag": "lvdtool: noindex"})


@pytest.fixture(scope="session")
def server(images: dict[str, bytes]) -> Iterator[FixtureServer]:
    srv = FixtureServer()
    _install_routes(srv, images)
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def self_signed_pem() -> Path:
    return SELF_SIGNED_PEM


@pytest.fixture(scope="session")
def tls_server(images: dict[str, bytes]) -> Iterator[FixtureServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(SELF_SIGNED_PEM)
    srv = FixtureServer(context)
    _install_routes(srv, images)
    yield srv
    srv.close()


@pytest.fixture
def local_fetch_config() -> Callable[..., FetchConfig]:
    """Fetch settings for the loopback server: private network allowed, short timeouts, fast backoff."""

    def make(**overrides: object) -> FetchConfig:
        settings: dict[str, object] = dict(
            allow_private_network=True,
            connect_timeout=1.0,
            read_timeout=0.5,
            deadline=2.0,
            retries=2,
            backoff_base=0.01,
            backoff_max=0.05,
            max_bytes=2_000_000,
        )
        settings.update(overrides)
        return FetchConfig(**settings)  # type: ignore[arg-type]

    return make

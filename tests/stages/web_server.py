"""A real HTTP server on 127.0.0.1 for stage tests: static bytes plus hostile endpoints."""
from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image


def real_photos() -> dict[str, Image.Image]:
    from skimage import data as skdata
    from sklearn.datasets import load_sample_images

    photos = {name: Image.fromarray(getattr(skdata, name)()).convert("RGB") for name in ("astronaut", "coffee", "chelsea", "rocket")}
    for i, arr in enumerate(load_sample_images().images):
        photos[f"sklearn{i}"] = Image.fromarray(arr)
    return photos


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def scene(seed: int, size=(200, 150)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (6, 8, 3)).astype(np.uint8)
    return Image.fromarray(base).resize(size, Image.Resampling.BICUBIC)


class Routes:
    def __init__(self) -> None:
        self.static: dict[str, tuple[bytes, str, dict[str, str]]] = {}
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()

    def add(self, path: str, body: bytes, ctype: str = "image/jpeg", headers: dict[str, str] | None = None) -> None:
        self.static[path] = (body, ctype, headers or {})


def make_server(routes: Routes):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            with routes.lock:
                routes.hits[self.path] = routes.hits.get(self.path, 0) + 1
                n = routes.hits[self.path]
            if self.path == "/flaky.jpg" and n == 1:
                return self.send_error(500)
            if self.path == "/always500.jpg":
                return self.send_error(503)
            if self.path == "/slow.jpg":
                time.sleep(3)
            if self.path == "/loop":
                self.send_response(302)
                self.send_header("Location", "/loop")
                self.end_headers()
                return
            if self.path not in routes.static:
                return self.send_error(404)
            body, ctype, headers = routes.static[self.path]
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server

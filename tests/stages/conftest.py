from __future__ import annotations

import io

import pytest
from PIL import Image

from web_server import Routes, jpeg_bytes, make_server, real_photos, scene


@pytest.fixture(scope="session")
def photos():
    return real_photos()


@pytest.fixture(scope="module")
def web(photos):
    """A server with good photos, planted duplicates and every hostile case; yields (base_url, routes, urls)."""
    routes = Routes()
    urls = []
    for name, img in photos.items():
        routes.add(f"/{name}.jpg", jpeg_bytes(img))
        urls.append(f"/{name}.jpg")
    routes.add("/astronaut_copy.jpg", jpeg_bytes(photos["astronaut"]))  # identical bytes
    routes.add("/coffee_small.jpg", jpeg_bytes(photos["coffee"].resize((300, 200)), 70))  # near duplicate
    for i in range(12):
        routes.add(f"/scene{i}.jpg", jpeg_bytes(scene(i)))
    png = io.BytesIO()
    Image.new("RGBA", (120, 90), (0, 0, 255, 0)).save(png, format="PNG")
    routes.add("/alpha.png", png.getvalue(), "image/png")
    routes.add("/text.jpg", b"hello, I am not an image at all", "image/jpeg")
    routes.add("/truncated.jpg", jpeg_bytes(photos["chelsea"])[:2000])
    routes.add("/optout.jpg", jpeg_bytes(scene(99)), headers={"X-Robots-Tag": "noai"})
    routes.add("/tiny.jpg", jpeg_bytes(Image.new("RGB", (20, 20), (9, 9, 9))))
    urls += ["/astronaut_copy.jpg", "/coffee_small.jpg"] + [f"/scene{i}.jpg" for i in range(12)]
    urls += ["/alpha.png", "/missing.jpg", "/flaky.jpg", "/always500.jpg", "/slow.jpg", "/loop", "/text.jpg",
             "/truncated.jpg", "/optout.jpg", "/tiny.jpg"]
    routes.add("/flaky.jpg", jpeg_bytes(scene(50)))
    server = make_server(routes)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield base, routes, urls
    server.shutdown()

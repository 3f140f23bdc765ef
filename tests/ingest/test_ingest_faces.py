"""Face blurring with OpenCV's bundled Haar cascade on real photos."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

from lvdtool.errors import DependencyError
from lvdtool.ingest import FaceBlurrer, ProcessConfig, decode_image, encode_image


@pytest.fixture(scope="module")
def blurrer() -> FaceBlurrer:
    return FaceBlurrer()


def _sharpness(region: np.ndarray) -> float:
    gray = region.astype(float).mean(axis=2)
    return float(np.abs(np.diff(gray, axis=0)).mean() + np.abs(np.diff(gray, axis=1)).mean())


def test_astronaut_face_is_blurred_and_nothing_else_changes(blurrer):
    original = Image.fromarray(skimage.data.astronaut())
    boxes = blurrer.detect(original)
    assert len(boxes) == 1
    box = boxes[0]
    # A face in a portrait: well inside the image, a sensible size, roughly square.
    assert 40 <= box.right - box.left <= 250 and 0.7 <= (box.bottom - box.top) / (box.right - box.left) <= 1.4
    blurred, count = blurrer.blur(original)
    assert count == 1
    before, after = np.asarray(original).astype(int), np.asarray(blurred).astype(int)
    inside = (slice(box.top, box.bottom), slice(box.left, box.right))
    assert np.abs(after[inside] - before[inside]).mean() > 5
    assert _sharpness(after[inside]) < 0.5 * _sharpness(before[inside])
    outside = np.ones(before.shape[:2], bool)
    outside[inside] = False
    assert np.array_equal(after[outside], before[outside])


@pytest.mark.parametrize("name", ["coffee", "rocket"])
def test_photos_without_faces_are_returned_unchanged(blurrer, name):
    image = Image.fromarray(getattr(skimage.data, name)())
    result, count = blurrer.blur(image)
    assert count == 0
    assert result is image


def test_blurred_image_is_what_gets_encoded(blurrer):
    import io

    data = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(data, "JPEG", quality=95)
    config = ProcessConfig(keep_original=True)
    decoded = decode_image(data.getvalue(), config)
    blurred, count = blurrer.blur(decoded.image)
    assert count == 1
    encoded = encode_image(decoded, config, image=blurred)
    assert encoded.data != data.getvalue()
    stored = np.asarray(Image.open(io.BytesIO(encoded.data))).astype(int)
    assert np.abs(stored - np.asarray(blurred).astype(int)).mean() < 2


def test_missing_opencv_raises_dependency_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` fail like an absent package
    with pytest.raises(DependencyError, match=r"lvdtool\[faces\]"):
        FaceBlurrer()


def test_missing_cascade_file(tmp_path):
    with pytest.raises(DependencyError, match="nope.xml"):
        FaceBlurrer(cascade_path=str(tmp_path / "nope.xml"))

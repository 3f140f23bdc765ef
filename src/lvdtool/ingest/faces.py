"""Blur identifiable faces, as DINOv2 did for its web pool.

Detector: OpenCV's cascade classifier with the frontal-face Haar cascade that OpenCV 4.x wheels
bundle. OpenCV 5 moved CascadeClassifier out of the main wheels and ships no cascade files, so the
`faces` extra needs opencv-python-headless 4.x; any OpenCV cascade XML (Haar or LBP) can be passed
as `cascade_path` instead of the bundled one.

Each detected box is enlarged by `margin` on every side (a detector box stops at the brow and chin)
and Gaussian-blurred with a sigma proportional to its size, so the blur removes identity at any
face size. Pixels outside the boxes are left exactly as they were.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from lvdtool.errors import DependencyError, InputError

_INSTALL_HINT = "face blurring needs the 'faces' extra: pip install 'lvdtool[faces]'"


@dataclass(frozen=True)
class FaceBox:
    left: int
    top: int
    right: int
    bottom: int


def _import_cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise DependencyError(_INSTALL_HINT) from exc
    if not hasattr(cv2, "CascadeClassifier"):
        raise DependencyError(
            f"{_INSTALL_HINT} (OpenCV {cv2.__version__} has no CascadeClassifier; install opencv-python-headless<5)"
        )
    return cv2


class FaceBlurrer:
    """Detects and blurs faces in RGB PIL images. Thread-safe: one classifier per thread."""

    def __init__(
        self,
        cascade_path: str | None = None,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 24,
        margin: float = 0.15,
        sigma_fraction: float = 0.15,
    ) -> None:
        self._cv2 = _import_cv2()
        if cascade_path is None:
            cascade_path = os.path.join(getattr(self._cv2, "data").haarcascades, "haarcascade_frontalface_default.xml")
        if not os.path.isfile(cascade_path):
            raise DependencyError(f"{cascade_path}: face cascade file not found; {_INSTALL_HINT}")
        self.cascade_path = cascade_path
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.margin = margin
        self.sigma_fraction = sigma_fraction
        self._local = threading.local()
        self._classifier()  # load once now, so a bad file fails at construction, not mid-crawl

    def _classifier(self) -> Any:
        # OpenCV does not promise that detectMultiScale is safe on one object from many threads.
        classifier = getattr(self._local, "classifier", None)
        if classifier is None:
            classifier = self._cv2.CascadeClassifier(self.cascade_path)
            if classifier.empty():
                raise InputError(f"{self.cascade_path}: not a readable OpenCV cascade file")
            self._local.classifier = classifier
        return classifier

    def detect(self, image: Image.Image) -> list[FaceBox]:
        """Face boxes in `image` coordinates, already enlarged by the margin and clipped."""
        cv2 = self._cv2
        gray = cv2.equalizeHist(np.asarray(image.convert("L")))
        found = self._classifier().detectMultiScale(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        boxes = []
        for x, y, w, h in np.asarray(found, dtype=np.int64).reshape(-1, 4):
            pad_x, pad_y = round(w * self.margin), round(h * self.margin)
            boxes.append(
                FaceBox(
                    max(0, int(x) - pad_x),
                    max(0, int(y) - pad_y),
                    min(image.width, int(x + w) + pad_x),
                    min(image.height, int(y + h) + pad_y),
                )
            )
        return boxes

    def blur(self, image: Image.Image) -> tuple[Image.Image, int]:
        """(image with faces blurred, number of faces); the input image itself when none is found."""
        boxes = self.detect(image)
        if not boxes:
            return image, 0
        pixels = np.array(image.convert("RGB"))
        for box in boxes:
            region = pixels[box.top : box.bottom, box.left : box.right]
            sigma = max(2.0, self.sigma_fraction * max(region.shape[0], region.shape[1]))
            pixels[box.top : box.bottom, box.left : box.right] = self._cv2.GaussianBlur(region, (0, 0), sigma)
        return Image.fromarray(pixels), len(boxes)

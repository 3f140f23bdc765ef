"""Decode, validate, normalise and re-encode one downloaded image.

Order of work, cheapest rejection first: identify the format and read the header size (no pixels
decoded) -> pixel-bomb, min-side and aspect checks on that size -> plan the resize -> decode once,
at a reduced JPEG scale when the plan shrinks a lot (Image.draft) -> to RGB -> EXIF orientation ->
resize/crop -> encode.

There is no separate Image.verify() pass: without ImageFile.LOAD_TRUNCATED_IMAGES, load() itself
raises on truncated or corrupt data, and verify() would cost a second parse for nothing more.

`keep_original` rule: the source bytes are stored unchanged only if the image is a JPEG, PNG or
WebP, single-frame, already RGB without transparency, without an EXIF rotation, and the resize plan
leaves it as it is. Anything else is re-encoded as JPEG, so every stored image decodes to exactly
what the rest of the pipeline saw.

`orig_width`/`orig_height` are the displayed size (after EXIF orientation) before resizing, so
they compare directly with `width`/`height`; for images rejected before decoding (pixel_bomb,
too_small, bad_aspect) they are the size stored in the header.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace

from PIL import Image, UnidentifiedImageError

from lvdtool.errors import ConfigError
from lvdtool.ingest.resize import RESAMPLING, RESIZE_MODES, apply_plan
from lvdtool.ingest.rgb import apply_orientation, exif_orientation, has_transparency, orientation_swaps_axes, to_rgb

OK = "ok"
NOT_IMAGE = "not_image"
DECODE_ERROR = "decode_error"
PIXEL_BOMB = "pixel_bomb"
TOO_SMALL = "too_small"
BAD_ASPECT = "bad_aspect"

_KEEPABLE_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
_DRAFT_FORMATS = frozenset({"JPEG", "MPO"})  # MPO: multi-picture JPEG written by many cameras


@dataclass(frozen=True)
class ProcessConfig:
    resize_mode: str = "max_side"  # keep | max_side | shorter_side_center_crop (see resize.py)
    size: int = 512
    min_side: int = 64  # on the original image
    max_aspect: float = 5.0  # longer side / shorter side, on the original image
    max_pixels: int = 89_478_485  # Pillow's own default bomb limit (about 89.5 MP)
    jpeg_quality: int = 95
    keep_original: bool = False
    resample: str = "bicubic"  # bicubic | lanczos | area (box mean on downscale; see resize.py)

    def __post_init__(self) -> None:
        if self.resample not in RESAMPLING:
            raise ConfigError(f"process.resample '{self.resample}' unknown (use {', '.join(sorted(RESAMPLING))})")
        if self.resize_mode not in RESIZE_MODES:
            raise ConfigError(f"process.resize_mode '{self.resize_mode}' unknown (use {', '.join(sorted(RESIZE_MODES))})")
        if self.size < 1 or self.min_side < 0 or self.max_pixels < 1:
            raise ConfigError(f"process.size, min_side and max_pixels must be positive, got {self.size}, {self.min_side}, {self.max_pixels}")
        if self.max_aspect < 1:
            raise ConfigError(f"process.max_aspect must be >= 1, got {self.max_aspect}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"process.jpeg_quality must be in 1..100, got {self.jpeg_quality}")


@dataclass
class ProcessResult:
    status: str
    error: str = ""
    data: bytes | None = None  # encoded image to store (set by encode_image)
    ext: str | None = None  # 'jpg' | 'png' | 'webp'
    width: int = 0
    height: int = 0
    orig_width: int = 0
    orig_height: int = 0
    orig_format: str | None = None
    image: Image.Image | None = field(default=None, repr=False)  # RGB, after orientation and resize
    original: bytes | None = field(default=None, repr=False)  # source bytes, set only when they may be kept

    @property
    def ok(self) -> bool:
        return self.status == OK


def _failure(status: str, exc_or_text: BaseException | str, **sizes: object) -> ProcessResult:
    text = exc_or_text if isinstance(exc_or_text, str) else f"{type(exc_or_text).__name__}: {exc_or_text}"
    return ProcessResult(status, error=text, **sizes)  # type: ignore[arg-type]


def _displayed(width: int, height: int, orientation: int) -> tuple[int, int]:
    return (height, width) if orientation_swaps_axes(orientation) else (width, height)


def decode_image(data: bytes, config: ProcessConfig) -> ProcessResult:
    """Decode and normalise `data`; `data`/`ext` stay empty until encode_image."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        return _failure(PIXEL_BOMB, exc)
    except UnidentifiedImageError:
        # Pillow's message embeds the BytesIO object's address: keep the text stable across reruns
        return _failure(NOT_IMAGE, "cannot identify image data (not a supported image format)")
    except Exception as exc:  # plugins raise many types on corrupt headers
        return _failure(DECODE_ERROR, exc)
    fmt = image.format
    stored_w, stored_h = image.size
    sizes = {"orig_width": stored_w, "orig_height": stored_h, "orig_format": fmt}
    if stored_w < 1 or stored_h < 1:
        return _failure(DECODE_ERROR, f"empty image {stored_w}x{stored_h}", **sizes)
    # Area, shorter side and aspect do not change under rotation: check them on the header size.
    if stored_w * stored_h > config.max_pixels:
        return _failure(PIXEL_BOMB, f"{stored_w}x{stored_h} over {config.max_pixels} pixels", **sizes)
    if min(stored_w, stored_h) < config.min_side:
        return _failure(TOO_SMALL, f"{stored_w}x{stored_h} under min side {config.min_side}", **sizes)
    if max(stored_w, stored_h) / min(stored_w, stored_h) > config.max_aspect:
        return _failure(BAD_ASPECT, f"{stored_w}x{stored_h} aspect over {config.max_aspect}", **sizes)

    # JPEG EXIF sits in the header, so its orientation is known before decoding; asking a PNG for
    # EXIF before load() would decode it (its eXIf chunk may follow the pixels).
    orientation = exif_orientation(image) if fmt in _DRAFT_FORMATS else None
    if orientation is not None:
        width, height = _displayed(stored_w, stored_h, orientation)
        plan = RESIZE_MODES[config.resize_mode](width, height, config.size)
        if plan.size[0] < width and plan.size[1] < height:
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale, never below the resize target; the
            # scale depends on sizes only, so results are deterministic.
            image.draft(image.mode, plan.size[::-1] if orientation_swaps_axes(orientation) else plan.size)
    try:
        image.load()
        if orientation is None:
            orientation = exif_orientation(image)
        source_mode_plain_rgb = image.mode == "RGB" and not has_transparency(image)
        rgb = apply_orientation(to_rgb(image), orientation)
    except Image.DecompressionBombError as exc:
        return _failure(PIXEL_BOMB, exc, **sizes)
    except Exception as exc:  # truncated data, corrupt streams, unsupported modes
        return _failure(DECODE_ERROR, exc, **sizes)
    width, height = _displayed(stored_w, stored_h, orientation)
    sizes.update(orig_width=width, orig_height=height)
    plan = RESIZE_MODES[config.resize_mode](width, height, config.size)
    rgb = apply_plan(rgb, plan, config.resample)

    keepable = (
        config.keep_original
        and fmt in _KEEPABLE_FORMATS
        and source_mode_plain_rgb
        and orientation == 1
        and not plan.changes(width, height)
        # APNG and WebP know this from their headers (no seek); GIF never gets here.
        and not getattr(image, "is_animated", False)
    )
    return ProcessResult(
        OK,
        width=rgb.width,
        height=rgb.height,
        image=rgb,
        original=data if keepable else None,
        **sizes,  # type: ignore[arg-type]
    )


def encode_image(result: ProcessResult, config: ProcessConfig, image: Image.Image | None = None) -> ProcessResult:
    """Fill `data`/`ext`. Pass `image` when it was edited after decoding (face blur): it is encoded
    and the original bytes are never kept."""
    if not result.ok:
        return result
    if image is None and config.keep_original and result.original is not None:
        assert result.orig_format is not None
        return replace(result, data=result.original, ext=_KEEPABLE_FORMATS[result.orig_format])
    final = image if image is not None else result.image
    assert final is not None
    buffer = io.BytesIO()
    final.save(buffer, format="JPEG", quality=config.jpeg_quality)
    return replace(result, data=buffer.getvalue(), ext="jpg", image=final, width=final.width, height=final.height)


def process_image(data: bytes, config: ProcessConfig) -> ProcessResult:
    """decode_image then encode_image."""
    return encode_image(decode_image(data, config), config)

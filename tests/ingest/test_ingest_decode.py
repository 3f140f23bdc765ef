"""process_image on real photos and generated edge cases, fetched from the fixture server."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageOps

from lvdtool.errors import ConfigError
from lvdtool.ingest import Fetcher, ProcessConfig, decode_image, encode_image, process_image


@pytest.fixture(scope="module")
def served(server, images):
    """Fetch every fixture image over HTTP once; the decode tests use those bytes."""
    from lvdtool.ingest import FetchConfig

    with Fetcher(FetchConfig(allow_private_network=True, max_bytes=10_000_000)) as fetcher:
        fetched = {name: fetcher.fetch(server.url(f"/img/{name}")) for name in images}
    assert all(r.status == "ok" for r in fetched.values())
    return {name: r.data for name, r in fetched.items()}


def pixels(result) -> np.ndarray:
    assert result.image is not None and result.image.mode == "RGB"
    return np.asarray(result.image).astype(int)


def stored_pixels(result) -> np.ndarray:
    """The pixels of the encoded bytes, as a reader of the shard will see them."""
    return np.asarray(Image.open(io.BytesIO(result.data)).convert("RGB")).astype(int)


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("astronaut.jpg", skimage.data.astronaut().shape),
        ("coffee.png", skimage.data.coffee().shape),
        ("chelsea.jpg", skimage.data.chelsea().shape),
        ("rocket.jpg", skimage.data.rocket().shape),
        ("china.jpg", (427, 640, 3)),
        ("flower.webp", (427, 640, 3)),
    ],
)
def test_real_photos_decode_to_rgb_within_max_side(served, name, shape):
    height, width = shape[:2]
    scale = min(1.0, 512 / max(width, height))
    result = process_image(served[name], ProcessConfig())
    assert result.status == "ok", result.error
    assert (result.orig_width, result.orig_height) == (width, height)
    assert (result.width, result.height) == (round(width * scale), round(height * scale))
    assert result.ext == "jpg"
    stored = Image.open(io.BytesIO(result.data))
    assert stored.format == "JPEG" and stored.mode == "RGB"
    assert stored.size == (result.width, result.height)


def test_coffee_resized_content_matches_a_plain_pillow_resize(served):
    result = process_image(served["coffee.png"], ProcessConfig(size=300))
    reference = Image.fromarray(skimage.data.coffee()).resize((result.width, result.height), Image.Resampling.LANCZOS)
    assert np.abs(pixels(result) - np.asarray(reference).astype(int)).mean() < 1.0
    assert np.abs(stored_pixels(result) - np.asarray(reference).astype(int)).mean() < 3.0  # JPEG q95


def test_cmyk_jpeg_is_converted_to_the_right_colours(served):
    result = process_image(served["astronaut-cmyk.jpg"], ProcessConfig())
    assert result.status == "ok"
    assert result.orig_format == "JPEG"
    # CMYK round trip through JPEG loses a little; an inversion or channel mix-up would be far off.
    assert np.abs(pixels(result) - skimage.data.astronaut().astype(int)).mean() < 8.0


def test_alpha_png_is_composited_on_white(served):
    result = process_image(served["alpha.png"], ProcessConfig(min_side=10))
    image = pixels(result)
    assert (image[40, 10] == [255, 255, 255]).all()  # transparent black -> white, not black
    assert (image[40, 100] == [0, 0, 255]).all()  # opaque blue stays
    assert abs(image[90, 10, 0] - 255) <= 1 and abs(image[90, 10, 1] - 127) <= 1  # 50% red over white


def test_palette_gif_transparency_becomes_white(served):
    result = process_image(served["transparent.gif"], ProcessConfig(min_side=10))
    image = pixels(result)
    assert (image[5, 5] == [255, 255, 255]).all()
    assert (image[45, 45] == [0, 200, 0]).all()


@pytest.mark.parametrize("name", ["animated.gif", "animated.webp"])
def test_animated_images_use_the_first_frame(served, name):
    result = process_image(served[name], ProcessConfig(min_side=10))
    assert result.status == "ok"
    assert (result.width, result.height) == (96, 80)
    assert (pixels(result)[40, 48] == [255, 0, 0]).all()


def test_sixteen_bit_png_is_scaled_not_clipped(served):
    assert Image.open(io.BytesIO(served["gray16.png"])).mode.startswith("I")
    result = process_image(served["gray16.png"], ProcessConfig(min_side=10))
    row = pixels(result)[40, :, 0]
    assert row[0] == 0 and row[-1] == 255
    assert abs(row[128] - 128) <= 1  # the middle of the ramp is mid-gray, not white
    assert (np.diff(row) >= 0).all()  # the ramp stays monotonic
    assert len(np.unique(row)) > 200  # and keeps its levels (clipping leaves about 1)


def test_la_png_is_composited_on_white(served):
    image = pixels(process_image(served["gray-alpha.png"], ProcessConfig(min_side=10)))
    assert (image[40, 10] == [255, 255, 255]).all()
    assert (image[40, 90] == [100, 100, 100]).all()


def test_exif_orientation_6_rotates_pixels_and_swaps_size(served):
    result = process_image(served["rotated.jpg"], ProcessConfig())
    assert (result.width, result.height) == (100, 200)
    assert (result.orig_width, result.orig_height) == (100, 200)
    image = pixels(result)
    # Orientation 6: the stored top-left corner is shown at the top right.
    assert image[10, 90, 0] > 200 and image[10, 90, 1] < 60
    assert image[10, 10, 0] < 80
    reference = ImageOps.exif_transpose(Image.open(io.BytesIO(served["rotated.jpg"]))).convert("RGB")
    assert np.array_equal(image, np.asarray(reference).astype(int))


@pytest.mark.parametrize(
    ("name", "status"),
    [("truncated.jpg", "decode_error"), ("truncated.png", "decode_error"), ("bomb.png", "pixel_bomb")],
)
def test_broken_images_are_rejected(served, name, status):
    result = process_image(served[name], ProcessConfig())
    assert result.status == status
    assert result.data is None and result.error


def test_text_served_as_jpeg_is_not_an_image(server):
    from lvdtool.ingest import FetchConfig

    with Fetcher(FetchConfig(allow_private_network=True)) as fetcher:
        fetched = fetcher.fetch(server.url("/text-as-jpeg"))
    assert fetched.status == "ok"
    assert process_image(fetched.data, ProcessConfig()).status == "not_image"
    assert process_image(b"", ProcessConfig()).status == "not_image"


def test_pixel_limit_is_checked_before_decoding(served):
    result = process_image(served["astronaut.jpg"], ProcessConfig(max_pixels=512 * 512 - 1))
    assert result.status == "pixel_bomb"
    assert (result.orig_width, result.orig_height) == (512, 512)
    assert process_image(served["astronaut.jpg"], ProcessConfig(max_pixels=512 * 512)).status == "ok"


def test_size_and_aspect_filters():
    small = Image.fromarray(skimage.data.astronaut()).resize((50, 60))
    wide = Image.fromarray(skimage.data.rocket()).crop((0, 0, 640, 100))  # 6.4 : 1
    small_bytes, wide_bytes = (_jpeg(i) for i in (small, wide))
    assert process_image(small_bytes, ProcessConfig()).status == "too_small"
    assert process_image(small_bytes, ProcessConfig(min_side=50)).status == "ok"
    assert process_image(wide_bytes, ProcessConfig()).status == "bad_aspect"
    assert process_image(wide_bytes, ProcessConfig(max_aspect=7.0)).status == "ok"


def _jpeg(image: Image.Image, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def test_keep_mode_keeps_the_size(served):
    result = process_image(served["china.jpg"], ProcessConfig(resize_mode="keep"))
    assert (result.width, result.height) == (640, 427)


def test_shorter_side_center_crop_takes_the_middle():
    stripes = np.zeros((200, 600, 3), np.uint8)
    stripes[:, :200] = (255, 0, 0)
    stripes[:, 200:400] = (0, 255, 0)
    stripes[:, 400:] = (0, 0, 255)
    config = ProcessConfig(resize_mode="shorter_side_center_crop", size=224, max_aspect=10)
    result = decode_image(_png(stripes), config)
    assert (result.width, result.height) == (224, 224)
    image = pixels(result)
    assert (np.abs(image - [0, 255, 0]).max(axis=2) <= 2).mean() > 0.98  # only the green middle third left
    tall = decode_image(_png(stripes.transpose(1, 0, 2)), config)
    assert (tall.width, tall.height) == (224, 224)
    upscaled = decode_image(_png(stripes[:100, :150]), ProcessConfig(resize_mode="shorter_side_center_crop", size=224))
    assert (upscaled.width, upscaled.height) == (224, 224)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def test_reduced_jpeg_decoding_is_deterministic_and_faithful():
    # A 2048 x 1365 JPEG shrunk to 256: the decoder uses libjpeg's 1/4 scale (draft) first.
    big = Image.fromarray(skimage.data.coffee()).resize((2048, 1365), Image.Resampling.BICUBIC)
    data = _jpeg(big)
    config = ProcessConfig(size=256)
    first, second = process_image(data, config), process_image(data, config)
    assert first.data == second.data
    assert (first.width, first.height) == (256, round(1365 * 256 / 2048))
    reference = Image.open(io.BytesIO(data)).convert("RGB").resize((first.width, first.height), Image.Resampling.LANCZOS)
    assert np.abs(pixels(first) - np.asarray(reference).astype(int)).mean() < 3.0


def test_keep_original_rule(served):
    keep = ProcessConfig(keep_original=True)
    same = process_image(served["astronaut.jpg"], keep)
    assert same.data == served["astronaut.jpg"] and same.ext == "jpg"
    webp = process_image(served["flower.webp"], ProcessConfig(keep_original=True, size=640))
    assert webp.data == served["flower.webp"] and webp.ext == "webp"
    # Needs a resize, a rotation, an alpha composite or animation -> re-encoded as JPEG.
    for name in ("coffee.png", "rotated.jpg", "alpha.png", "animated.webp"):
        result = process_image(served[name], ProcessConfig(keep_original=True, min_side=10))
        assert result.data != served[name] and result.ext == "jpg", name
    # An edited image (a face blur, say) is always encoded, never replaced by the original.
    decoded = decode_image(served["astronaut.jpg"], keep)
    edited = ImageOps.invert(decoded.image)
    encoded = encode_image(decoded, keep, image=edited)
    assert encoded.data != served["astronaut.jpg"]
    assert stored_pixels(encoded).mean() == pytest.approx(np.asarray(edited).mean(), abs=2)


def test_failed_results_pass_through_encode(served):
    failed = decode_image(served["truncated.jpg"], ProcessConfig())
    assert encode_image(failed, ProcessConfig()) is failed


def test_process_config_validation():
    with pytest.raises(ConfigError, match="resize_mode"):
        ProcessConfig(resize_mode="border")
    with pytest.raises(ConfigError, match="jpeg_quality"):
        ProcessConfig(jpeg_quality=0)
    with pytest.raises(ConfigError, match="max_aspect"):
        ProcessConfig(max_aspect=0.5)


def test_png_exif_orientation_is_applied_after_loading():
    stored = np.full((100, 200, 3), 40, np.uint8)
    stored[:20, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, "PNG", exif=exif.tobytes())
    result = decode_image(buffer.getvalue(), ProcessConfig())
    assert (result.width, result.height) == (100, 200)
    assert (pixels(result)[10, 90] == [255, 0, 0]).all()


def _saved(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def test_other_modes_become_rgb_with_the_right_values():
    checker = Image.fromarray((np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)).convert("1")
    floats = Image.fromarray(np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (64, 1)))
    wide_floats = Image.fromarray(np.tile(np.linspace(-5.0, 5.0, 64, dtype=np.float32), (64, 1)))
    ints = Image.fromarray(np.tile(np.linspace(0, 65535, 64).astype(np.int32), (64, 1)))
    config = ProcessConfig(resize_mode="keep")
    one = pixels(decode_image(_saved(checker, "PNG"), config))
    assert set(np.unique(one)) == {0, 255} and one[0, 0, 0] != one[0, 1, 0]
    for image, fmt in ((floats, "TIFF"), (wide_floats, "TIFF"), (ints, "TIFF")):
        assert Image.open(io.BytesIO(_saved(image, fmt))).mode == image.mode
        row = pixels(decode_image(_saved(image, fmt), config))[5, :, 0]
        assert row[0] == 0 and row[-1] == 255 and (np.diff(row) >= 0).all(), image.mode
        assert abs(int(row[32]) - 130) <= 3  # 32/63 of the range, not clipped to white


def test_resample_choice(served):
    bicubic = process_image(served["coffee.png"], ProcessConfig(size=300))
    lanczos = process_image(served["coffee.png"], ProcessConfig(size=300, resample="lanczos"))
    assert (bicubic.width, bicubic.height) == (lanczos.width, lanczos.height)
    diff = np.abs(pixels(bicubic) - pixels(lanczos))
    assert 0 < diff.mean() < 2.0, "the two filters differ slightly, never grossly"
    with pytest.raises(ConfigError, match="process.resample 'nearest'"):
        ProcessConfig(resample="nearest")


def test_area_resample_is_the_footprint_mean_on_downscale_and_bicubic_on_upscale(served):
    from lvdtool.ingest.resize import ResizePlan, apply_plan

    source = decode_image(served["coffee.png"], ProcessConfig(resize_mode="keep")).image
    source = source.crop((0, 0, source.width // 2 * 2, source.height // 2 * 2))
    width, height = source.size
    half = np.asarray(apply_plan(source, ResizePlan((width // 2, height // 2)), "area"), dtype=np.float64)
    blocks = np.asarray(source, dtype=np.float64).reshape(height // 2, 2, width // 2, 2, 3).mean(axis=(1, 3))
    assert np.abs(half - blocks).max() <= 1.0  # the mean of each 2 x 2 footprint, up to rounding
    target = (round(width / 1.75), round(height / 1.75))  # a non-integer factor: partly covered pixels
    area = np.asarray(apply_plan(source, ResizePlan(target), "area"), dtype=np.float64)
    bicubic = np.asarray(apply_plan(source, ResizePlan(target), "bicubic"), dtype=np.float64)
    assert 0.2 < np.abs(area - bicubic).mean() < 3.0  # another filter, not another picture
    up = (width * 2, height * 2)
    assert np.array_equal(np.asarray(apply_plan(source, ResizePlan(up), "area")),
                          np.asarray(apply_plan(source, ResizePlan(up), "bicubic")))

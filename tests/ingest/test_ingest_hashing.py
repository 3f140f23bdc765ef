"""Content hash, perceptual hash robustness, and the multi-index Hamming search against brute force."""

from __future__ import annotations

import hashlib
import io
import itertools
import random

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageEnhance
from sklearn.datasets import load_sample_images

from lvdtool.errors import ConfigError
from lvdtool.ingest import PerceptualIndex, content_hash, hamming, phash64, to_signed64, to_unsigned64
from lvdtool.ingest.perceptual_index import choose_band_count


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    found = {name: Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
             for name in ("astronaut", "coffee", "chelsea", "rocket", "camera")}
    china, flower = load_sample_images().images
    found["china"], found["flower"] = Image.fromarray(china), Image.fromarray(flower)
    return found


def test_content_hash_is_sha256_of_the_bytes():
    assert content_hash(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert content_hash(b"abc") != content_hash(b"abd")


def test_hamming():
    assert hamming(0, 0) == 0
    assert hamming(0b1011, 0b0001) == 2
    assert hamming(0, (1 << 64) - 1) == 64


def test_phash_is_a_balanced_64_bit_value(photos):
    for image in photos.values():
        value = phash64(image)
        assert 0 <= value < 1 << 64
        assert 24 <= value.bit_count() <= 40  # bits are set against the median


def _variants(image: Image.Image) -> list[Image.Image]:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=60)
    reencoded = Image.open(buffer)
    resized = image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR)
    brighter = ImageEnhance.Brightness(image).enhance(1.1)
    return [reencoded, resized, brighter]


def test_phash_survives_reencoding_resizing_and_brightening(photos):
    for name, image in photos.items():
        original = phash64(image)
        distances = [hamming(original, phash64(v)) for v in _variants(image)]
        assert max(distances) <= 6, (name, distances)


def test_phash_separates_different_photos(photos):
    hashes = {name: phash64(image) for name, image in photos.items()}
    for a, b in itertools.combinations(hashes, 2):
        assert hamming(hashes[a], hashes[b]) >= 16, (a, b)


def test_signed_storage_round_trip():
    for value in (0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1):
        signed = to_signed64(value)
        assert -(1 << 63) <= signed < 1 << 63
        assert to_unsigned64(signed) == value


def _random_hashes_with_near_copies(count: int, copies: int, max_flips: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    hashes = [rng.getrandbits(64) for _ in range(count)]
    for _ in range(copies):
        source = rng.choice(hashes)
        flips = rng.sample(range(64), rng.randint(0, max_flips))
        hashes.append(source ^ sum(1 << bit for bit in flips))
    rng.shuffle(hashes)
    return hashes


def _brute_force_pairs(hashes: list[int], max_distance: int) -> set[tuple[int, int]]:
    values = np.array(hashes, dtype=np.uint64)
    pairs = set()
    for i in range(len(values)):
        distances = np.bitwise_count(values[:i] ^ values[i])
        for j in np.flatnonzero(distances <= max_distance):
            pairs.add((int(j), i))
    return pairs


@pytest.mark.parametrize(("max_distance", "bands"), [(0, None), (3, None), (6, None), (6, 7), (6, 3), (10, None)])
def test_index_finds_exactly_the_brute_force_pairs(max_distance, bands):
    hashes = _random_hashes_with_near_copies(1500, 300, max_flips=max_distance + 2, seed=max_distance)
    index = PerceptualIndex(max_distance, expected_size=len(hashes), bands=bands)
    for key, value in enumerate(hashes):
        index.add(key, value)
    found = {(a, b) for a, b, _ in index.pairs()}
    expected = _brute_force_pairs(hashes, max_distance)
    assert found == expected
    assert len(expected) > 100  # the planted copies make the comparison meaningful


def test_index_query_and_streaming_dedup():
    index = PerceptualIndex(max_distance=4)
    base = 0x0123_4567_89AB_CDEF
    assert index.add_if_new("a", base) is None
    assert index.add_if_new("b", base ^ 0b111) == ("a", 3)
    assert index.add_if_new("c", base ^ (0b11111 << 40)) is None  # 5 bits away: new
    assert len(index) == 2
    assert index.query(base ^ 1) == [("a", 1)]
    assert index.query(base ^ (0b1111 << 40)) == [("c", 1), ("a", 4)]
    assert index.nearest(~base & ((1 << 64) - 1)) is None


def test_band_choice_prefers_wide_bands_for_big_indexes():
    assert choose_band_count(4, expected_size=1_000_000) < 5
    assert choose_band_count(0, expected_size=10) == 1


def test_index_rejects_bad_settings():
    with pytest.raises(ConfigError, match="max_distance"):
        PerceptualIndex(64)
    with pytest.raises(ConfigError, match="bands"):
        PerceptualIndex(3, bands=5)
    with pytest.raises(ConfigError, match="probes"):
        PerceptualIndex(10, bands=1)
    with pytest.raises(ValueError, match="64-bit"):
        PerceptualIndex(3).add("k", -1)

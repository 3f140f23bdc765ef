"""The numba backend of the multi-crop against the torch path, on real JPEG and PNG images: the same
generator calls and boxes, crops equal to float32 rounding, and its own crops the same bits per
image and in a batch. Also: the resize taps are torch's own, and how "auto" resolves."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_augment_equivalence import SMALL_DATA, _digit_pngs, _scene_bytes

from lvdtool.data.augment import MultiCropAugment, MultiCropConfig, backend
from lvdtool.data.augment.geometry import sample_crop_box
from lvdtool.data.augment.multicrop import CropParams
from lvdtool.data.augment.numba_render import resize_taps
from lvdtool.data.augment.photometric import PhotometricParams
from lvdtool.data.decode import decode_rgb, to_uint8_chw
from lvdtool.errors import ConfigError

# Normalised crops (std ~0.225 scales [0, 1] differences by ~4.4): observed at most 7.6e-6 on these
# images, from the resize's rounding (torch contracts its multiply-adds) carried through the hue.
TOLERANCE = 2e-5


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _numba(cfg: MultiCropConfig) -> MultiCropAugment:
    return MultiCropAugment(dataclasses.replace(cfg, backend="numba"))


def _close(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    worst = 0.0
    for key in a:
        x = torch.stack(a[key]) if isinstance(a[key], list) else a[key]
        y = torch.stack(b[key]) if isinstance(b[key], list) else b[key]
        assert x.shape == y.shape, key
        worst = max(worst, (x - y).abs().max().item())
    return worst


def test_paper_crops_of_a_jpeg_match_the_torch_path_with_the_same_draws():
    image = to_uint8_chw(decode_rgb(_scene_bytes(0)))
    cfg = MultiCropConfig(gram_crops_size=256)
    for seed in range(3):
        g_torch, g_numba = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        ref, got = MultiCropAugment(cfg)(image, g_torch), _numba(cfg)(image, g_numba)
        assert _close(got, ref) <= TOLERANCE
        assert torch.equal(g_torch.get_state(), g_numba.get_state())  # the same number of draws
        assert all(torch.isfinite(c).all() for crops in got.values() for c in crops)


def test_a_batch_is_the_per_image_crops_bit_for_bit_and_matches_the_torch_batch():
    images = _digit_pngs(10) + [to_uint8_chw(decode_rgb(_scene_bytes(1, (80, 64), "PNG")))]
    cfg = MultiCropConfig(**{**SMALL_DATA.__dict__, "blur_as_trained": True})
    aug = _numba(cfg)
    batch = aug.batch(images, [torch.Generator().manual_seed(7 + i) for i in range(len(images))])
    single = [aug(im, torch.Generator().manual_seed(7 + i)) for i, im in enumerate(images)]
    for key, n_views in (("global_crops", 2), ("local_crops", cfg.n_local_crops)):
        view_major = torch.stack([single[i][key][v] for v in range(n_views) for i in range(len(images))])
        assert torch.equal(batch[key], view_major), key
    ref = MultiCropAugment(cfg).batch(images, [torch.Generator().manual_seed(7 + i) for i in range(len(images))])
    assert _close(batch, ref) <= TOLERANCE


@pytest.mark.parametrize("kind", ["rgb", "grey", "float"])
def test_every_photometric_op_and_order_matches_the_torch_ops(kind):
    """All flags, all op orders, extreme factors, flips, up- and downscaling: the combinations the
    random recipe rarely draws; a grey (1-channel) image and a float image as inputs too."""
    image = to_uint8_chw(decode_rgb(_scene_bytes(2)))
    if kind == "grey":
        image = image[:1]
    elif kind == "float":
        image = image.to(torch.float32) / 255.0
    orders = [(0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2), (2, 0, 3, 1)] * 3
    crops = [CropParams(sample_crop_box((375, 500), (0.004, 0.02) if s < 4 else (0.05, 1.0),
                                        torch.Generator().manual_seed(s)), s % 2 == 0,
                        PhotometricParams(jitter=s != 11, brightness=0.6 + 0.07 * s, contrast=1.4 - 0.07 * s,
                                          saturation=0.8 + 0.04 * s, hue=-0.5 + 0.09 * s, order=orders[s],
                                          grayscale=s % 3 == 0, blur_sigma=(0.0, 0.1, 2.0, 0.7)[s % 4],
                                          solarize=s % 2 == 1)) for s in range(12)]
    assert min(c.box.width for c in crops) < 64 < max(c.box.width for c in crops)  # up- and downscaled
    cfg = MultiCropConfig()
    rgb = image.expand(3, -1, -1) if kind == "grey" else image
    source = rgb if kind == "float" else rgb.to(torch.float32).div_(255.0)
    for photometric, normalized in ((False, False), (True, False), (True, True)):
        ref = MultiCropAugment(cfg)._render([source] * 12, crops, 64, photometric, normalized)
        got = _numba(cfg)._render([rgb] * 12, crops, 64, photometric, normalized)
        assert (got - ref).abs().max().item() <= TOLERANCE, (photometric, normalized)
        if not normalized:
            assert got.min() >= 0 and got.max() <= 1
    assert not torch.equal(got, MultiCropAugment(cfg)._render([source] * 12, crops, 64, False, True))


@pytest.mark.parametrize("n_in,n_out", [(280, 224), (150, 98), (37, 98), (500, 16), (98, 98), (1, 5)])
def test_resize_taps_are_torchs_weights_exactly(n_in, n_out):
    eye = torch.eye(n_in).view(1, 1, n_in, n_in)
    weights = F.interpolate(eye, size=(n_in, n_out), mode="bicubic", antialias=True,
                            align_corners=False)[0, 0].t().numpy()  # [out, in], exact: one 1 per sum
    for flip in (False, True):
        start, taps = resize_taps(n_in, n_out, flip)
        dense = np.zeros((n_out, n_in), np.float32)
        for x in range(n_out):
            dense[x, start[x] : start[x] + taps.shape[1]] = taps[x, : n_in - start[x]]
        assert np.array_equal(dense, weights[::-1] if flip else weights)


def test_auto_takes_numba_where_installed_and_names_the_fix_where_not(monkeypatch):
    assert backend.numba_available()  # the dev extra installs it: the numba path is tested
    assert backend.resolve_backend("auto") == "numba"
    assert backend.resolve_backend("torch") == "torch"
    with pytest.raises(ConfigError, match="data.augment_backend: expected one of auto, torch, numba"):
        backend.resolve_backend("fast")
    with pytest.raises(ConfigError, match="backend must be one of torch, numba"):
        MultiCropConfig(backend="auto")  # resolved before a config is built
    monkeypatch.setattr(backend, "numba_available", lambda: False)
    assert backend.resolve_backend("auto") == "torch"
    with pytest.raises(ConfigError, match=r"numba is not installed here .*data.augment_backend=torch"):
        backend.resolve_backend("numba")

"""The fast multi-crop path against a frozen copy of the implementation it replaced (commit
9e1f063), on real JPEG and PNG images: the same generator calls, the same crops bit for bit.

Resumed runs depend on this: a run started before the rewrite and resumed after it must see the
same crops. The reference below is the old code, kept only here; crop_resize, sample_crop_box,
sample_photometric_params and gaussian_kernels are still the library's own (unchanged, tested in
their own files), so the reference keeps its exact sequence of generator calls.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from sklearn.datasets import load_digits

from lvdtool.data.augment import MultiCropAugment, MultiCropConfig, PhotometricBatch, apply_photometric_batch
from lvdtool.data.augment.color import gaussian_kernels
from lvdtool.data.augment.geometry import crop_resize, sample_crop_box
from lvdtool.data.augment.photometric import PhotometricParams, sample_photometric_params
from lvdtool.data.decode import decode_rgb, to_uint8_chw

SMALL_DATA = MultiCropConfig(global_crops_size=32, local_crops_size=16, n_local_crops=4,
                             global_crops_scale=(0.5, 1.0), local_crops_scale=(0.2, 0.5))  # recipe/small_data.yaml


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread, as in the loader's workers: these tensors are small, and on a shared
    2-core machine two threads made this file 20x slower (9 s instead of 0.4 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- the old photometric ops, verbatim in their arithmetic -------------------------------------

def _ps(v, x):
    return v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _luma(x):
    return (x * torch.tensor((0.299, 0.587, 0.114), dtype=x.dtype).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def _blend(x, other, f):
    f = _ps(f, x)
    return (f * x + (1.0 - f) * other).clamp_(0.0, 1.0)


def _brightness(x, f):
    return (x * _ps(f, x)).clamp_(0.0, 1.0)


def _contrast(x, f):
    return _blend(x, _luma(x).double().mean(dim=(1, 2, 3), keepdim=True).to(x.dtype), f)


def _saturation(x, f):
    return _blend(x, _luma(x), f)


def _hue(x, shift):
    r, g, b = x.unbind(dim=1)
    maxc, minc = x.amax(dim=1), x.amin(dim=1)
    delta = maxc - minc
    grey = delta == 0
    sd = torch.where(grey, torch.ones_like(delta), delta)
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    hue6 = torch.where(maxc == r, (g - b) / sd, torch.where(maxc == g, 2.0 + (b - r) / sd, 4.0 + (r - g) / sd))
    hue = torch.where(grey, torch.zeros_like(hue6), torch.remainder(hue6 / 6.0, 1.0))
    hue = torch.remainder(hue + shift.to(x.dtype).view(-1, 1, 1), 1.0)
    offsets = torch.tensor([5.0, 3.0, 1.0], dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(offsets + 6.0 * hue.unsqueeze(1), 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return (maxc.unsqueeze(1) - (maxc * sat).unsqueeze(1) * ramp).clamp_(0.0, 1.0)


def _blur(x, sigmas, kernel_size=9):
    b, c, h, w = x.shape
    pad = kernel_size // 2
    k = gaussian_kernels(sigmas, kernel_size).to(x.dtype).repeat_interleave(c, dim=0)
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (pad, pad, 0, 0), mode="reflect"), k.view(b * c, 1, 1, kernel_size), groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, pad, pad), mode="reflect"), k.view(b * c, 1, kernel_size, 1), groups=b * c)
    return y.view(b, c, h, w)


def _photometric(x, p: PhotometricBatch, kernel_size=9, threshold=0.5):
    out = x.clone()
    for position in range(4):
        for op_id, op in enumerate((_brightness, _contrast, _saturation, _hue)):
            idx = torch.nonzero(p.jitter & (p.order[:, position] == op_id)).flatten()
            if idx.numel():
                out[idx] = op(out[idx], p.factors[idx, op_id])
    x = torch.where(p.grayscale.view(-1, 1, 1, 1), _luma(out).expand_as(out).contiguous(), out)
    if bool((p.blur_sigma > 0).any()):
        x = _blur(x, p.blur_sigma, kernel_size)
    return torch.where(p.solarize.view(-1, 1, 1, 1), torch.where(x >= threshold, 1.0 - x, x), x)


def _normalize(x, cfg):
    return (x - torch.tensor(cfg.mean).view(3, 1, 1)) / torch.tensor(cfg.std).view(3, 1, 1)


# ---- the old sampling (three generator calls per crop, then randperm) and application ----------

def _crop_params(hw, scale, blur_p, sol_p, cfg, g):
    box = sample_crop_box(hw, scale, g, cfg.crop_ratio)
    flip = bool(torch.rand((), generator=g, dtype=torch.float64) < cfg.flip_prob)
    return box, flip, sample_photometric_params(g, cfg.jitter, cfg.grayscale_prob, blur_p, cfg.blur_sigma, sol_p)


def _reference(image, cfg, g):
    hw = (image.shape[1], image.shape[2])
    b1, b2, bl = cfg.effective_blur_probs
    glob = [_crop_params(hw, cfg.global_crops_scale, b1, 0.0, cfg, g),
            _crop_params(hw, cfg.global_crops_scale, b2, cfg.solarize_prob, cfg, g)]
    loc = [_crop_params(hw, cfg.local_crops_scale, bl, 0.0, cfg, g) for _ in range(cfg.n_local_crops)]

    def crops(params, size, photometric=True):
        x = torch.stack([crop_resize(image, box, size).flip(-1) if flip else crop_resize(image, box, size)
                         for box, flip, _ in params])
        if photometric:
            x = _photometric(x, PhotometricBatch.stack([p for _, _, p in params]), cfg.blur_kernel_size,
                             cfg.solarize_threshold)
        return _normalize(x, cfg)

    out = {"global_crops": crops(glob, cfg.global_crops_size), "local_crops": crops(loc, cfg.local_crops_size)}
    if cfg.gram_crops_size:
        out["gram_crops"] = crops(glob, cfg.gram_crops_size, photometric=False)
    return out


# ---- real images ---------------------------------------------------------------------------------

def _scene_bytes(seed: int, size=(500, 375), fmt="JPEG") -> bytes:
    """A photo-like scene: gradients, overlapping shapes, sensor noise, saturated and grey areas."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = Image.fromarray(np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], -1).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(30):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        box = [x0, y0, x0 + int(rng.integers(10, w // 3)), y0 + int(rng.integers(10, h // 3))]
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    draw.rectangle([0, 0, w // 8, h // 8], fill=(128, 128, 128))  # grey: hue undefined
    draw.rectangle([w - w // 8, 0, w, h // 8], fill=(255, 255, 255))
    noisy = np.clip(np.asarray(img, np.float32) + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _digit_pngs(n: int) -> list[torch.Tensor]:
    """scikit-learn digits stored as 64-px RGB PNGs, decoded as the small-data runs decode them."""
    digits = load_digits()
    out = []
    for i in range(n):
        pixels = (digits.images[i] / 16.0 * 255).astype(np.uint8)
        img = Image.fromarray(pixels).resize((64, 64), Image.BICUBIC).convert("RGB")
        buf = io.BytesIO()
        img.save(buf, "PNG")
        out.append(to_uint8_chw(decode_rgb(buf.getvalue(), min_side=64)))
    return out


def _assert_same(new: dict, old: dict) -> None:
    assert set(new) == set(old)
    for key in old:
        got = torch.stack(new[key]) if isinstance(new[key], list) else new[key]
        assert got.shape == old[key].shape and torch.equal(got, old[key]), (key, (got - old[key]).abs().max())


def test_paper_crops_of_a_jpeg_are_the_old_crops_bit_for_bit_with_the_same_draws():
    image = to_uint8_chw(decode_rgb(_scene_bytes(0)))
    assert image.shape == (3, 375, 500)
    cfg = MultiCropConfig(gram_crops_size=256)  # 2 x 224 + 8 x 98, and the Gram crops
    for seed in range(2):
        g_new, g_old = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        _assert_same(MultiCropAugment(cfg)(image, g_new), _reference(image, cfg, g_old))
        assert torch.equal(g_new.get_state(), g_old.get_state())  # the same number of draws


def test_small_data_batch_of_digit_pngs_is_the_old_crops_bit_for_bit():
    images = _digit_pngs(12) + [to_uint8_chw(decode_rgb(_scene_bytes(1, (80, 64), "PNG")))]
    cfg = MultiCropConfig(**{**SMALL_DATA.__dict__, "blur_as_trained": True})
    out = MultiCropAugment(cfg).batch(images, [torch.Generator().manual_seed(100 + i) for i in range(len(images))])
    ref = [_reference(im, cfg, torch.Generator().manual_seed(100 + i)) for i, im in enumerate(images)]
    for key, n_views in (("global_crops", 2), ("local_crops", cfg.n_local_crops)):
        view_major = torch.stack([ref[i][key][v] for v in range(n_views) for i in range(len(images))])
        assert torch.equal(out[key], view_major), key


def test_every_photometric_op_at_once_matches_the_old_ops_on_real_pixels():
    """All flags on, every op order, strong factors: the cases the random recipe rarely combines."""
    image = to_uint8_chw(decode_rgb(_scene_bytes(2)))
    x = torch.stack([crop_resize(image, box, 64) for box in
                     (sample_crop_box((375, 500), (0.05, 1.0), torch.Generator().manual_seed(s)) for s in range(8))])
    orders = [(0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2), (2, 0, 3, 1)] * 2
    params = [PhotometricParams(jitter=i != 7, brightness=0.6 + 0.1 * i, contrast=1.4 - 0.1 * i,
                                saturation=0.8 + 0.05 * i, hue=-0.5 + 0.14 * i, order=orders[i], grayscale=i % 3 == 0,
                                blur_sigma=(0.0, 0.1, 2.0, 0.7)[i % 4], solarize=i % 2 == 1) for i in range(8)]
    batch = PhotometricBatch.stack(params)
    new, old = apply_photometric_batch(x, batch), _photometric(x, batch)
    assert not torch.equal(old, x)
    assert torch.equal(new, old), (new - old).abs().max()

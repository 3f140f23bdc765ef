import pytest
import torch
import torch.nn.functional as F

from lvdtool.data.augment.color import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur_batch,
    gaussian_kernels,
    grayscale_batch,
    hsv_to_rgb,
    normalize,
    rgb_to_hsv,
    solarize_batch,
)


def pixel(r, g, b):
    return torch.tensor([r, g, b], dtype=torch.float32).view(1, 3, 1, 1)


def test_hue_shift_on_pure_red():
    red = pixel(1.0, 0.0, 0.0)
    # +0.1 turn = 36 degrees: (1, 0.6, 0); +1/3 turn: pure green; -1/3 turn: pure blue
    torch.testing.assert_close(adjust_hue(red, torch.tensor([0.1])), pixel(1.0, 0.6, 0.0))
    torch.testing.assert_close(adjust_hue(red, torch.tensor([1 / 3])), pixel(0.0, 1.0, 0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(adjust_hue(red, torch.tensor([-1 / 3])), pixel(0.0, 0.0, 1.0), atol=1e-6, rtol=0)
    grey = pixel(0.4, 0.4, 0.4)
    torch.testing.assert_close(adjust_hue(grey, torch.tensor([0.25])), grey)


def test_hsv_values_and_roundtrip():
    hsv = rgb_to_hsv(pixel(0.5, 1.0, 0.0))  # chartreuse: hue 90 degrees
    torch.testing.assert_close(hsv.flatten(), torch.tensor([0.25, 1.0, 1.0]))
    x = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-6, rtol=0)


def test_brightness_contrast_saturation_by_hand():
    x = torch.stack([torch.tensor([0.2, 0.4, 0.6]).view(3, 1, 1).expand(3, 1, 2)])  # [1, 3, 1, 2]
    torch.testing.assert_close(adjust_brightness(x, torch.tensor([2.0]))[0, :, 0, 0], torch.tensor([0.4, 0.8, 1.0]))
    grey = 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6
    # contrast 0 -> the mean grey level; saturation 0 -> each pixel's grey level
    torch.testing.assert_close(adjust_contrast(x, torch.tensor([0.0])), torch.full_like(x, grey))
    torch.testing.assert_close(adjust_saturation(x, torch.tensor([0.0])), torch.full_like(x, grey))
    half = adjust_saturation(x, torch.tensor([0.5]))[0, :, 0, 0]
    torch.testing.assert_close(half, 0.5 * torch.tensor([0.2, 0.4, 0.6]) + 0.5 * grey)


def test_grayscale_and_solarize_per_sample():
    x = torch.stack([pixel(1.0, 0.0, 0.0)[0], pixel(0.2, 0.7, 0.9)[0]])
    out = grayscale_batch(x, torch.tensor([True, False]))
    torch.testing.assert_close(out[0].flatten(), torch.full((3,), 0.299))
    assert torch.equal(out[1], x[1])
    values = torch.arange(256, dtype=torch.float32) / 255
    img = values.view(1, 1, 1, 256).expand(2, 3, 1, 256)
    sol = solarize_batch(img, torch.tensor([True, False]))
    expected_u8 = torch.where(torch.arange(256) >= 128, 255 - torch.arange(256), torch.arange(256))
    torch.testing.assert_close(sol[0, 0, 0], expected_u8.float() / 255)  # threshold 128 on uint8
    assert torch.equal(sol[1], img[1])


def test_gaussian_kernels():
    k = gaussian_kernels(torch.tensor([0.0, 0.5, 2.0]), 9)
    assert k.shape == (3, 9)
    assert torch.equal(k[0], F.one_hot(torch.tensor(4), 9).float())
    torch.testing.assert_close(k.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(k, k.flip(1))
    ratio = (k[1, 5] / k[1, 4]).item()
    assert ratio == pytest.approx(torch.exp(torch.tensor(-0.5 / 0.25)).item(), rel=1e-5)
    assert k[2, 0] > k[1, 0]  # wider sigma, heavier tails


def test_blur_matches_2d_convolution_and_identity():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 12, 10, generator=g)
    out = gaussian_blur_batch(x, torch.tensor([1.3, 0.0]), kernel_size=9)
    assert torch.equal(out[1], x[1])  # sigma 0: untouched
    k1 = gaussian_kernels(torch.tensor([1.3]), 9)[0]
    k2 = torch.outer(k1, k1).view(1, 1, 9, 9).repeat(3, 1, 1, 1)
    ref = F.conv2d(F.pad(x[:1], (4, 4, 4, 4), mode="reflect"), k2, groups=3)
    torch.testing.assert_close(out[:1], ref, atol=1e-6, rtol=1e-5)
    const = torch.full((1, 3, 9, 9), 0.3)
    torch.testing.assert_close(gaussian_blur_batch(const, torch.tensor([2.0])), const)


def test_normalize():
    x = torch.ones(3, 2, 2)
    out = normalize(x)
    for c in range(3):
        assert out[c, 0, 0].item() == pytest.approx((1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c])

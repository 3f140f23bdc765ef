import pytest
import torch

from lvdtool.data.augment.geometry import CropBox, crop_resize, hflip, hflip_batch, sample_crop_box
from lvdtool.errors import InputError


def test_crop_boxes_fit_and_respect_scale_and_ratio():
    g = torch.Generator().manual_seed(0)
    h, w = 300, 400
    for _ in range(200):
        box = sample_crop_box((h, w), (0.05, 0.32), g)
        assert 0 <= box.top and box.top + box.height <= h
        assert 0 <= box.left and box.left + box.width <= w
        # rounding the sides moves area and aspect a little off the sampled values
        area = box.height * box.width / (h * w)
        assert 0.05 * 0.9 <= area <= 0.32 * 1.1
        assert 3 / 4 * 0.95 <= box.width / box.height <= 4 / 3 * 1.05


def test_crop_box_positions_cover_the_image():
    g = torch.Generator().manual_seed(1)
    boxes = [sample_crop_box((100, 100), (0.05, 0.1), g) for _ in range(300)]
    assert min(b.top for b in boxes) < 10 and max(b.top + b.height for b in boxes) > 90
    assert min(b.left for b in boxes) < 10 and max(b.left + b.width for b in boxes) > 90


def test_fallback_is_the_central_crop():
    # a 10 x 1000 strip: no box of the requested area and aspect fits, so the largest
    # centred box at the maximum aspect 4/3 is used: height 10, width round(13.33) = 13
    g = torch.Generator().manual_seed(0)
    box = sample_crop_box((10, 1000), (0.9, 1.0), g)
    assert box == CropBox(top=0, left=(1000 - 13) // 2, height=10, width=13)
    tall = sample_crop_box((1000, 10), (0.9, 1.0), torch.Generator().manual_seed(0))
    assert tall == CropBox(top=(1000 - 13) // 2, left=0, height=13, width=10)


def test_crop_box_deterministic_for_a_seed():
    a = [sample_crop_box((50, 80), (0.3, 1.0), torch.Generator().manual_seed(3)) for _ in range(2)]
    assert a[0] == a[1]


def test_crop_resize_identity_and_range():
    img = torch.arange(3 * 6 * 8, dtype=torch.uint8).view(3, 6, 8)
    out = crop_resize(img, CropBox(1, 2, 4, 4), 4)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, img[:, 1:5, 2:6].float() / 255)
    # a constant image stays constant through bicubic resampling
    const = torch.full((3, 37, 53), 200, dtype=torch.uint8)
    torch.testing.assert_close(crop_resize(const, CropBox(0, 0, 37, 53), 16), torch.full((3, 16, 16), 200 / 255))
    # bicubic overshoot on a sharp edge is clamped to [0, 1]
    edge = torch.zeros(3, 40, 40, dtype=torch.uint8)
    edge[:, :, 20:] = 255
    up = crop_resize(edge, CropBox(0, 10, 20, 20), 64)
    assert up.min() >= 0 and up.max() <= 1 and up.shape == (3, 64, 64)


def test_crop_resize_float_input_does_not_alias():
    img = torch.rand(3, 8, 8)
    out = crop_resize(img, CropBox(0, 0, 8, 8), 8)
    out.zero_()
    assert img.abs().sum() > 0


def test_flip():
    x = torch.arange(6.0).view(1, 2, 3)
    assert hflip(x).tolist() == [[[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]]
    batch = torch.stack([x, x])
    out = hflip_batch(batch, torch.tensor([True, False]))
    assert torch.equal(out[0], hflip(x)) and torch.equal(out[1], x)


@pytest.mark.parametrize("size", [(0, 5), (5, 0)])
def test_bad_image_size(size):
    with pytest.raises(InputError):
        sample_crop_box(size, (0.3, 1.0), torch.Generator())

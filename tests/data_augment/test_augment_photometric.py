import torch

from lvdtool.data.augment.color import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur_batch,
    grayscale_batch,
    solarize_batch,
)
from lvdtool.data.augment.photometric import (
    ColorJitterConfig,
    PhotometricBatch,
    PhotometricParams,
    apply_photometric_batch,
    color_jitter_batch,
    sample_photometric_params,
)

OPS = {0: adjust_brightness, 1: adjust_contrast, 2: adjust_saturation, 3: adjust_hue}


def _params(**kw):
    base = dict(jitter=True, brightness=1.3, contrast=0.7, saturation=1.2, hue=0.08, order=(0, 1, 2, 3),
                grayscale=False, blur_sigma=0.0, solarize=False)
    base.update(kw)
    return PhotometricParams(**base)


def _sample_list(n, seed, **kw):
    g = torch.Generator().manual_seed(seed)
    return [sample_photometric_params(g, ColorJitterConfig(), 0.2, 0.5, (0.1, 2.0), 0.5, **kw) for _ in range(n)]


def test_jitter_follows_each_samples_own_order():
    x = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    for order in [(0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2)]:
        p = _params(order=order)
        expected = x
        factors = [p.brightness, p.contrast, p.saturation, p.hue]
        for op_id in order:
            expected = OPS[op_id](expected, torch.tensor([factors[op_id]]))
        torch.testing.assert_close(color_jitter_batch(x, PhotometricBatch.stack([p])), expected)
    # the order matters (brightness clamps before or after the contrast blend)
    a = color_jitter_batch(x, PhotometricBatch.stack([_params(order=(0, 1, 2, 3))]))
    b = color_jitter_batch(x, PhotometricBatch.stack([_params(order=(1, 0, 2, 3))]))
    assert not torch.allclose(a, b)


def test_no_jitter_is_identity():
    x = torch.rand(2, 3, 5, 5)
    out = color_jitter_batch(x, PhotometricBatch.stack([_params(jitter=False)] * 2))
    assert torch.equal(out, x)


def test_batched_equals_per_sample():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 3, 16, 16, generator=g)
    params = _sample_list(6, seed=2)
    assert len({p.order for p in params}) > 1 and any(p.blur_sigma > 0 for p in params)
    batched = apply_photometric_batch(x, PhotometricBatch.stack(params))
    single = torch.cat([apply_photometric_batch(x[i : i + 1], PhotometricBatch.stack([p])) for i, p in enumerate(params)])
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=1e-5)


def test_pipeline_order_jitter_gray_blur_solarize():
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    p = _params(grayscale=True, blur_sigma=1.0, solarize=True)
    flags = torch.tensor([True])
    expected = color_jitter_batch(x, PhotometricBatch.stack([p]))
    expected = grayscale_batch(expected, flags)
    expected = gaussian_blur_batch(expected, torch.tensor([1.0]))
    expected = solarize_batch(expected, flags)
    torch.testing.assert_close(apply_photometric_batch(x, PhotometricBatch.stack([p])), expected)


def test_sampling_ranges_and_determinism():
    params = _sample_list(400, seed=4)
    assert params[:5] == _sample_list(5, seed=4)
    assert params[:5] != _sample_list(5, seed=5)
    assert all(0.6 <= p.brightness <= 1.4 and 0.6 <= p.contrast <= 1.4 for p in params)
    assert all(0.8 <= p.saturation <= 1.2 and -0.1 <= p.hue <= 0.1 for p in params)
    assert all(sorted(p.order) == [0, 1, 2, 3] for p in params)
    assert all(p.blur_sigma == 0.0 or 0.1 <= p.blur_sigma <= 2.0 for p in params)
    jitter_rate = sum(p.jitter for p in params) / 400
    gray_rate = sum(p.grayscale for p in params) / 400
    assert 0.72 < jitter_rate < 0.88 and 0.14 < gray_rate < 0.26


def test_probability_extremes():
    g = torch.Generator().manual_seed(0)
    never = [sample_photometric_params(g, ColorJitterConfig(prob=0.0), 0.0, 0.0, (0.1, 2.0), 0.0) for _ in range(50)]
    assert not any(p.jitter or p.grayscale or p.blur_sigma or p.solarize for p in never)
    always = [sample_photometric_params(g, ColorJitterConfig(prob=1.0), 1.0, 1.0, (0.1, 2.0), 1.0) for _ in range(50)]
    assert all(p.jitter and p.grayscale and p.blur_sigma > 0 and p.solarize for p in always)

import pytest
import torch

from lvdtool.data.augment.color import IMAGENET_MEAN, IMAGENET_STD
from lvdtool.data.augment.multicrop import MultiCropAugment, MultiCropConfig, sample_multicrop_params
from lvdtool.errors import ConfigError, InputError

SMALL = MultiCropConfig(global_crops_size=32, local_crops_size=14, n_local_crops=3)


def _image(seed=0, h=48, w=64):
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_output_shapes_dtypes_and_normalised_range():
    out = MultiCropAugment(SMALL)(_image(), torch.Generator().manual_seed(0))
    assert len(out["global_crops"]) == 2 and len(out["local_crops"]) == 3
    assert all(c.shape == (3, 32, 32) and c.dtype == torch.float32 for c in out["global_crops"])
    assert all(c.shape == (3, 14, 14) and c.dtype == torch.float32 for c in out["local_crops"])
    for crop in out["global_crops"] + out["local_crops"]:
        for ch in range(3):
            lo = (0 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch]
            hi = (1 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch]
            assert crop[ch].min() >= lo - 1e-5 and crop[ch].max() <= hi + 1e-5


def test_default_recipe_sizes():
    cfg = MultiCropConfig()
    assert (cfg.global_crops_size, cfg.local_crops_size, cfg.n_local_crops) == (224, 98, 8)
    out = MultiCropAugment(cfg)(_image(h=120, w=160), torch.Generator().manual_seed(0))
    assert out["global_crops"][0].shape == (3, 224, 224) and out["local_crops"][7].shape == (3, 98, 98)


def test_unnormalised_crops_in_unit_range():
    aug = MultiCropAugment(SMALL)
    img = _image(1)
    params = aug.sample_params((48, 64), torch.Generator().manual_seed(1))
    raw = aug.apply(img, params, normalized=False)
    for crop in raw["global_crops"] + raw["local_crops"]:
        assert crop.min() >= 0.0 and crop.max() <= 1.0
    norm = aug.apply(img, params)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(norm["global_crops"][1], (raw["global_crops"][1] - mean) / std)


def test_deterministic_for_a_seed():
    aug = MultiCropAugment(SMALL)
    a = aug(_image(), torch.Generator().manual_seed(7))
    b = aug(_image(), torch.Generator().manual_seed(7))
    c = aug(_image(), torch.Generator().manual_seed(8))
    for x, y in zip(a["global_crops"] + a["local_crops"], b["global_crops"] + b["local_crops"]):
        assert torch.equal(x, y)
    assert not torch.equal(a["global_crops"][0], c["global_crops"][0])


def test_blur_and_solarize_probabilities_per_crop():
    g = torch.Generator().manual_seed(0)
    paper = [sample_multicrop_params((64, 64), SMALL, g) for _ in range(300)]
    trained_cfg = MultiCropConfig(global_crops_size=32, local_crops_size=14, n_local_crops=3, blur_as_trained=True)
    trained = [sample_multicrop_params((64, 64), trained_cfg, g) for _ in range(300)]
    assert SMALL.effective_blur_probs == (1.0, 0.1, 0.5)
    assert trained_cfg.effective_blur_probs == (0.0, 0.9, 0.5)

    def rate(ps, pick):
        return sum(pick(p) for p in ps) / len(ps)

    assert rate(paper, lambda p: p.global_crops[0].photometric.blur_sigma > 0) == 1.0
    assert 0.04 < rate(paper, lambda p: p.global_crops[1].photometric.blur_sigma > 0) < 0.17
    assert rate(trained, lambda p: p.global_crops[0].photometric.blur_sigma > 0) == 0.0
    assert 0.83 < rate(trained, lambda p: p.global_crops[1].photometric.blur_sigma > 0) < 0.96
    assert 0.4 < rate(paper, lambda p: p.local_crops[0].photometric.blur_sigma > 0) < 0.6
    # solarization: second global crop only, p = 0.2
    assert rate(paper, lambda p: p.global_crops[0].photometric.solarize) == 0.0
    assert rate(paper, lambda p: any(c.photometric.solarize for c in p.local_crops)) == 0.0
    assert 0.13 < rate(paper, lambda p: p.global_crops[1].photometric.solarize) < 0.27
    assert 0.4 < rate(paper, lambda p: p.local_crops[2].flip) < 0.6


def test_scales_of_global_and_local_boxes():
    g = torch.Generator().manual_seed(2)
    for _ in range(50):
        p = sample_multicrop_params((100, 100), SMALL, g)
        assert all(c.box.height * c.box.width >= 0.32 * 0.85 * 1e4 for c in p.global_crops)
        assert all(c.box.height * c.box.width <= 0.32 * 1.15 * 1e4 for c in p.local_crops)


def test_flip_is_applied_geometrically():
    aug = MultiCropAugment(SMALL)
    img = _image(3)
    params = aug.sample_params((48, 64), torch.Generator().manual_seed(3))
    crop = params.local_crops[0]
    flipped = type(crop)(crop.box, not crop.flip, crop.photometric)
    a = aug.geometric(img, [crop], 14)
    b = aug.geometric(img, [flipped], 14)
    torch.testing.assert_close(a, b.flip(-1))


def test_grayscale_input_and_bad_input():
    aug = MultiCropAugment(SMALL)
    gray = torch.randint(0, 256, (1, 40, 40), dtype=torch.uint8)
    out = aug(gray, torch.Generator().manual_seed(0))
    assert out["global_crops"][0].shape == (3, 32, 32)
    with pytest.raises(InputError):
        aug(torch.zeros(4, 10, 10, dtype=torch.uint8), torch.Generator())


def test_no_local_crops_and_config_validation():
    out = MultiCropAugment(MultiCropConfig(global_crops_size=16, n_local_crops=0))(_image(), torch.Generator())
    assert out["local_crops"] == []
    cfg = MultiCropConfig(global_crops_scale=[0.4, 1.0])  # lists from YAML are accepted
    assert cfg.global_crops_scale == (0.4, 1.0)
    with pytest.raises(ConfigError):
        MultiCropConfig(local_crops_scale=(0.5, 0.1))
    with pytest.raises(ConfigError):
        MultiCropConfig(blur_probs=(1.5, 0.1, 0.5))
    with pytest.raises(ConfigError):
        MultiCropConfig(blur_kernel_size=8)

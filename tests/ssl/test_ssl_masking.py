import numpy as np
import pytest
import torch

from lvdtool.errors import ConfigError
from lvdtool.ssl.masking import BatchMaskSampler, BlockMaskGenerator, sample_batch_masks


def test_blocks_respect_size_aspect_and_budget():
    gen = BlockMaskGenerator((16, 16))
    rng = np.random.default_rng(0)
    for target in (4, 25, 60, 128):
        for _ in range(20):
            mask, blocks = gen.sample_with_blocks(target, rng)
            assert mask.sum() <= target
            assert blocks, "at least one block is always placed for a reachable target"
            union = np.zeros_like(mask)
            for b in blocks:
                assert b.height * b.width >= 4
                assert 0.3 <= b.height / b.width <= 1 / 0.3
                assert b.height * b.width <= 128  # a block never exceeds half the grid
                assert 0 <= b.top and b.top + b.height <= 16 and 0 <= b.left and b.left + b.width <= 16
                union[b.top : b.top + b.height, b.left : b.left + b.width] = True
            assert np.array_equal(union, mask)


def test_generator_reaches_most_of_the_target():
    gen = BlockMaskGenerator((16, 16))
    rng = np.random.default_rng(1)
    counts = [gen(100, rng).sum() for _ in range(30)]
    assert np.mean(counts) > 80 and max(counts) <= 100


def test_zero_target_masks_nothing():
    assert not BlockMaskGenerator((8, 8))(0, np.random.default_rng(0)).any()


def test_batch_masks_half_masked_with_spread_ratios():
    n_crops, grid = 16, (16, 16)
    n = grid[0] * grid[1]
    sampler = BatchMaskSampler(grid, mask_prob=0.5, ratio_range=(0.1, 0.5))
    targets, upperbound = sampler.target_counts(n_crops, np.random.default_rng(5))
    # 8 masked crops, k-th target drawn in the k-th of 8 equal bins of [0.1, 0.5]
    assert len(targets) == 8
    for k, t in enumerate(targets):
        lo, hi = 0.1 + 0.05 * k, 0.1 + 0.05 * (k + 1)
        assert int(n * lo) <= t <= int(n * hi)
    assert upperbound == sum(int(n * (0.1 + 0.05 * (k + 1))) for k in range(8))

    bm = sampler(n_crops, np.random.default_rng(5))
    counts = bm.masks.sum(dim=1)
    assert bm.masks.shape == (16, 256) and bm.masks.dtype == torch.bool
    assert int((counts > 0).sum()) == 8 and bm.n_masked_crops == 8
    ratios = counts[counts > 0].float() / n
    assert ratios.min() >= 0.05 and ratios.max() <= 0.5
    assert bm.n_masked_patches == int(counts.sum()) <= bm.upperbound == upperbound
    # masked crops are shuffled across the batch, not all in the first half
    assert not bm.masks[:8].any(dim=1).all()


def test_batch_masks_indices_and_weights():
    bm = sample_batch_masks(6, np.random.default_rng(2), grid=(8, 8))
    flat = bm.masks.flatten()
    assert torch.all(flat[bm.mask_indices])
    assert bm.mask_indices.numel() == int(flat.sum()) == bm.n_masked_patches
    crop_of_patch = bm.mask_indices // 64
    counts = bm.masks.sum(dim=1)
    torch.testing.assert_close(bm.masks_weight, 1.0 / counts[crop_of_patch].float())
    # each masked crop's weights sum to 1
    per_crop = torch.zeros(6).index_add_(0, crop_of_patch, bm.masks_weight)
    torch.testing.assert_close(per_crop, (counts > 0).float())


def test_batch_masks_deterministic_per_seed():
    a = sample_batch_masks(8, np.random.default_rng(7))
    b = sample_batch_masks(8, np.random.default_rng(7))
    c = sample_batch_masks(8, np.random.default_rng(8))
    assert torch.equal(a.masks, b.masks)
    assert not torch.equal(a.masks, c.masks)


def test_odd_batch_and_no_masking():
    bm = sample_batch_masks(5, np.random.default_rng(0), mask_prob=0.5)
    assert int(bm.masks.any(dim=1).sum()) == 2  # int(5 * 0.5)
    none = sample_batch_masks(4, np.random.default_rng(0), mask_prob=0.0)
    assert none.n_masked_patches == 0 and none.upperbound == 0 and not none.masks.any()


@pytest.mark.parametrize("kwargs", [{"mask_prob": 1.5}, {"ratio_range": (0.6, 0.2)}])
def test_bad_sampler_config(kwargs):
    with pytest.raises(ConfigError):
        BatchMaskSampler((16, 16), **kwargs)


def test_small_target_on_a_tiny_grid_still_masks():
    # target 2 < 4 patches per block: the block minimum shrinks to the target
    gen = BlockMaskGenerator((4, 4))
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask, blocks = gen.sample_with_blocks(2, rng)
        assert 1 <= mask.sum() <= 2 and all(b.height * b.width <= 2 for b in blocks)

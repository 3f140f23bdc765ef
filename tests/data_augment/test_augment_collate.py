import numpy as np
import pytest
import torch

from lvdtool.data.augment.collate import collate_multicrop
from lvdtool.data.augment.multicrop import MultiCropAugment, MultiCropConfig
from lvdtool.errors import InputError
from lvdtool.ssl.masking import BatchMaskSampler


def _fake_sample(i, n_local=3, label=True):
    # crop v of sample i is filled with the value 10 * v + i, so the order can be read back
    s = {
        "global_crops": [torch.full((3, 4, 4), 10.0 * v + i) for v in range(2)],
        "local_crops": [torch.full((3, 2, 2), 100.0 + 10.0 * v + i) for v in range(n_local)],
    }
    if label:
        s["label"] = i
    return s


def test_view_major_order_and_labels():
    batch = collate_multicrop([_fake_sample(i) for i in range(3)], BatchMaskSampler((2, 2)), np.random.default_rng(0))
    assert batch["global_crops"].shape == (6, 3, 4, 4)
    assert batch["global_crops"][:, 0, 0, 0].tolist() == [0, 1, 2, 10, 11, 12]
    assert batch["local_crops"].shape == (9, 3, 2, 2)
    assert batch["local_crops"][:, 0, 0, 0].tolist() == [100, 101, 102, 110, 111, 112, 120, 121, 122]
    assert batch["labels"].tolist() == [0, 1, 2]


def test_masks_fields_are_consistent():
    batch = collate_multicrop([_fake_sample(i) for i in range(4)], BatchMaskSampler((4, 4)), np.random.default_rng(1))
    masks = batch["masks"]
    assert masks.shape == (8, 16) and masks.dtype == torch.bool
    assert int(masks.any(dim=1).sum()) == 4
    assert batch["n_masked_patches"] == int(masks.sum()) == batch["mask_indices"].numel()
    assert torch.all(masks.flatten()[batch["mask_indices"]])
    assert batch["masks_weight"].shape == batch["mask_indices"].shape
    assert batch["upperbound"] >= batch["n_masked_patches"]


def test_real_augment_to_batch_and_dtype():
    cfg = MultiCropConfig(global_crops_size=28, local_crops_size=14, n_local_crops=2)
    aug = MultiCropAugment(cfg)
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8, generator=g)
    samples = [aug(img, g) for _ in range(2)]
    batch = collate_multicrop(samples, BatchMaskSampler((2, 2)), np.random.default_rng(0), dtype=torch.bfloat16)
    assert batch["global_crops"].shape == (4, 3, 28, 28) and batch["global_crops"].dtype == torch.bfloat16
    assert batch["local_crops"].shape == (4, 3, 14, 14)
    assert "labels" not in batch
    torch.testing.assert_close(batch["global_crops"][1].float(), samples[1]["global_crops"][0].to(torch.bfloat16).float())


def test_inconsistent_samples_raise():
    with pytest.raises(InputError):
        collate_multicrop([_fake_sample(0), _fake_sample(1, n_local=2)], BatchMaskSampler((2, 2)), np.random.default_rng(0))
    with pytest.raises(InputError):
        collate_multicrop([], BatchMaskSampler((2, 2)), np.random.default_rng(0))

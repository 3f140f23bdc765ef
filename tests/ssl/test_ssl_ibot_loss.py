import math

import pytest
import torch

from lvdtool.errors import InputError
from lvdtool.ssl.ibot_loss import ibot_patch_loss
from lvdtool.ssl.masking import batch_masks_from_tensor


def ce(teacher_row, student_row, temp):
    logits = [x / temp for x in student_row]
    log_z = math.log(sum(math.exp(x) for x in logits))
    return -sum(t * (s - log_z) for t, s in zip(teacher_row, logits))


def _three_images():
    # 3 images x 4 patches: image 0 has 1 masked patch, image 1 none, image 2 three.
    masks = torch.tensor(
        [[False, True, False, False], [False, False, False, False], [True, False, True, True]]
    )
    bm = batch_masks_from_tensor(masks)
    g = torch.Generator().manual_seed(0)
    student = torch.randn(bm.n_masked_patches, 3, generator=g)
    teacher = torch.softmax(torch.randn(bm.n_masked_patches, 3, generator=g), dim=-1)
    return masks, bm, student, teacher


def test_weights_and_indices_from_masks():
    masks, bm, _, _ = _three_images()
    assert bm.mask_indices.tolist() == [1, 8, 10, 11]
    torch.testing.assert_close(bm.masks_weight, torch.tensor([1.0, 1 / 3, 1 / 3, 1 / 3]))
    assert bm.n_masked_patches == 4


def test_official_denominator_counts_all_images():
    masks, bm, student, teacher = _three_images()
    s, t = student.tolist(), teacher.tolist()
    # image 0: its single patch; image 2: mean of its three patches; image 1 contributes 0
    image0 = ce(t[0], s[0], 0.1)
    image2 = sum(ce(t[i], s[i], 0.1) for i in (1, 2, 3)) / 3
    expected = (image0 + image2) / 3  # divided by all 3 images, as the official code does
    got = ibot_patch_loss(student, teacher, bm.masks_weight, n_images=masks.shape[0], student_temp=0.1)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # the "masked images only" convention is available by passing that count
    got_masked_only = ibot_patch_loss(student, teacher, bm.masks_weight, n_images=2, student_temp=0.1)
    assert got_masked_only.item() == pytest.approx((image0 + image2) / 2, rel=1e-5)


def test_padding_rows_are_ignored():
    masks, bm, student, teacher = _three_images()
    pad_s = torch.cat([student, torch.full((3, 3), 100.0)])
    pad_t = torch.cat([teacher, torch.full((3, 3), 1 / 3)])
    a = ibot_patch_loss(student, teacher, bm.masks_weight, n_images=3)
    b = ibot_patch_loss(pad_s, pad_t, bm.masks_weight, n_images=3, n_masked_patches=bm.n_masked_patches)
    torch.testing.assert_close(a, b)


def test_gradient_flows_to_student():
    _, bm, student, teacher = _three_images()
    student.requires_grad_()
    ibot_patch_loss(student, teacher, bm.masks_weight, n_images=3).backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_bad_arguments_raise():
    _, bm, student, teacher = _three_images()
    with pytest.raises(InputError):
        ibot_patch_loss(student, teacher, bm.masks_weight, n_images=0)
    with pytest.raises(InputError):
        ibot_patch_loss(student[:2], teacher, bm.masks_weight, n_images=3)

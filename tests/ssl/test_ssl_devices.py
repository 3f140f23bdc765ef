"""The losses and centering run on every available device and agree with the CPU result
(only the CPU here; CUDA too on a GPU machine)."""

import pytest
import torch

from lvdtool.ssl.centering import SoftmaxCenter, sinkhorn_knopp
from lvdtool.ssl.dino_loss import dino_loss
from lvdtool.ssl.ibot_loss import ibot_patch_loss
from lvdtool.ssl.koleo import koleo_loss

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _compute(device):
    g = torch.Generator().manual_seed(0)
    student = torch.randn(4 * 3, 7, generator=g).to(device)
    teacher_logits = torch.randn(2 * 3, 7, generator=g).to(device)
    center = SoftmaxCenter(7).to(device)
    probs = center(teacher_logits, 0.04)
    return torch.stack([
        dino_loss(student, probs),
        dino_loss(student, sinkhorn_knopp(teacher_logits, 0.05)),
        ibot_patch_loss(student[:5], probs[:5], torch.full((5,), 0.2, device=device), n_images=2),
        koleo_loss(student),
        center.center.sum(),
    ]).cpu()


@pytest.mark.parametrize("device", DEVICES)
def test_same_results_on_device(device):
    torch.testing.assert_close(_compute(device), _compute("cpu"), rtol=1e-4, atol=1e-5)
    assert torch.isfinite(_compute(device)).all()

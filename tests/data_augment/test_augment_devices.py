"""Batched photometric augmentation runs on every available device (the CPU here; CUDA too
on a GPU machine) and agrees with the CPU result."""

import pytest
import torch

from lvdtool.data.augment.color import normalize
from lvdtool.data.augment.photometric import (
    ColorJitterConfig,
    PhotometricBatch,
    apply_photometric_batch,
    sample_photometric_params,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _run(device):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 20, 20, generator=g)
    params = [sample_photometric_params(g, ColorJitterConfig(), 0.2, 0.5, (0.1, 2.0), 0.5) for _ in range(8)]
    out = apply_photometric_batch(x.to(device), PhotometricBatch.stack(params, device=device))
    return normalize(out).cpu()


@pytest.mark.parametrize("device", DEVICES)
def test_photometric_batch_on_device(device):
    out = _run(device)
    assert out.shape == (8, 3, 20, 20) and torch.isfinite(out).all()
    torch.testing.assert_close(out, _run("cpu"), atol=1e-5, rtol=1e-4)

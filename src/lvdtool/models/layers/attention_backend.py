"""Scaled dot-product attention kernels: PyTorch SDPA always, xformers only where it works.

xformers is an optional extra: it often fails to import against a different torch build, and
its kernels only run on CUDA. It is probed once per device type and silently replaced by SDPA
otherwise, so choosing it is never an error.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch.nn import functional as F


@functools.cache
def _xformers_attention() -> Callable[..., torch.Tensor] | None:
    try:
        import xformers.ops as xops  # type: ignore[import-not-found]
    except Exception:  # ImportError, or a binary built for another torch
        return None
    return xops.memory_efficient_attention


@functools.cache
def xformers_runs_on(device_type: str) -> bool:
    """True when xformers imports and a tiny attention call succeeds on this device type."""
    kernel = _xformers_attention()
    if kernel is None or device_type != "cuda":
        return False
    try:
        probe = torch.zeros(1, 8, 1, 64, device=device_type, dtype=torch.float16)
        kernel(probe, probe, probe)
    except Exception:
        return False
    return True


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    """Softmax attention over (B, heads, N, head_dim) tensors; returns the same shape."""
    if backend == "xformers" and xformers_runs_on(q.device.type):
        kernel: Any = _xformers_attention()
        # xformers wants (B, N, heads, head_dim): transposes are views, no copy.
        out = kernel(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v)

"""The demo's copy-detection descriptor: each image as an 8x8 thumbnail with its mean removed, saved as
TorchScript (the form SSCD, the paper's descriptor, is published in) for `lvd embed model.kind=torchscript`.

Re-encodes, resizes, slight crops and brightness changes keep a thumbnail (cosine > 0.97 on the demo's
planted copies) while distinct photos and scenes stay below 0.89; heavier edits (large crops, overlays,
flips), which SSCD is trained to see through, do not. Usage: python stages/demo_descriptor.py OUT_FILE
"""
from __future__ import annotations

import sys

import torch


class Thumbnail(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)  # [B, 3 * 64]
        return t - t.mean(dim=1, keepdim=True)  # brightness offsets do not move it


if __name__ == "__main__":
    torch.jit.script(Thumbnail()).save(sys.argv[1])

"""What the backbone sees: the first three PCA components of patch features, shown as RGB.

The picture of the DINOv2 paper's figure 1: one PCA is fitted on the patch tokens of all the
shown images together (so a colour means the same direction in every image), each component is
min-max scaled to [0, 1] over those images, and the patch grid is upsampled (nearest) to the
image size and placed next to the image.
"""
from __future__ import annotations

import torch
from PIL import Image

from lvdtool.data.eval_transform import normalize_batch
from lvdtool.eval.contact_sheet import contact_sheet


@torch.no_grad()
def patch_pca_rgb(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] images -> float [N, 3, h, w] in [0, 1]: the first three principal
    components of the last block's normalised patch tokens, per patch (h, w = H, W // patch)."""
    device = next(model.parameters()).device
    x = normalize_batch(images.to(device))
    tokens = model.eval()(x)["x_norm_patchtokens"].float()  # [N, h*w, D]
    n, _, dim = tokens.shape
    h, w = images.shape[-2] // model.patch_size, images.shape[-1] // model.patch_size
    flat = tokens.reshape(n * h * w, dim)
    flat = flat - flat.mean(dim=0, keepdim=True)
    # principal directions from the small D x D covariance (N * h * w can be large)
    _, vectors = torch.linalg.eigh(flat.t() @ flat)
    k = min(3, dim)
    proj = flat @ vectors[:, -k:].flip(-1)  # largest component first
    lo, hi = proj.amin(dim=0), proj.amax(dim=0)
    proj = (proj - lo) / (hi - lo).clamp_min(1e-12)
    if k < 3:
        proj = torch.cat([proj, proj.new_zeros(proj.shape[0], 3 - k)], dim=1)
    return proj.reshape(n, h, w, 3).permute(0, 3, 1, 2).cpu()


def patch_pca_sheet(model: torch.nn.Module, images: torch.Tensor, captions: list[str], cell: int = 128,
                    title: str | None = None) -> Image.Image:
    """A contact sheet of (image, its patch PCA) pairs, two columns per image."""
    rgb = patch_pca_rgb(model, images)
    items: list[tuple[Image.Image, str]] = []
    for image, pca, caption in zip(images, rgb, captions):
        picture = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
        colours = Image.fromarray((pca.permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
        colours = colours.resize(picture.size, Image.Resampling.NEAREST)
        items += [(picture, caption), (colours, "patch PCA")]
    return contact_sheet(items, cell=cell, cols=min(len(items), 8), title=title)

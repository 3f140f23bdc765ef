"""Record the official DINOv3 outputs the parity tests compare against (run by hand, not by pytest).

    python tests/models/dinov3_official/record.py /path/to/a/checkout/of/facebookresearch/dinov3

For each released ViT: builds the official `DinoVisionTransformer` with the hub arguments (at
the record depth/width of `reference.RELEASED`), fills its parameters with `make_weights`, and
saves its eval outputs (CLS, storage and patch tokens) at each of `IMAGE_SIZES`, its training-mode
multi-crop outputs with the coordinate rescaling off (so the untied local CLS norm is exercised
deterministically), its buffers, and whether a file written by lvd's `save_backbone` loads
strictly into it. The full-size models' key layouts go to layouts.json (built on the meta device).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from reference import (  # noqa: E402
    IMAGE_SIZES, LAYOUT_PATH, RELEASED, TRAIN_CROPS, first_buffers, image_batch, keep_patches, record_path, make_images,
    make_weights,
)


def outputs(features: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    return {
        "x_norm_clstoken": features["x_norm_clstoken"].clone(),
        "x_storage_tokens": features["x_storage_tokens"].clone(),
        "x_norm_patchtokens": keep_patches(features["x_norm_patchtokens"], size).clone(),
    }


def main(official_root: str) -> None:
    sys.path.insert(0, official_root)
    from dinov3.models.vision_transformer import DinoVisionTransformer

    from lvdtool.models import save_backbone

    layouts = {}
    for spec in RELEASED:
        full = DinoVisionTransformer(**spec.official_kwargs(full=True), device="meta")
        layouts[spec.arch] = {k: list(v.shape) for k, v in full.state_dict().items()}
        model = DinoVisionTransformer(**spec.official_kwargs(full=False))
        model.init_weights()
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        model.load_state_dict(make_weights(shapes, buffers), strict=True)
        model.eval()
        record: dict = {"official_kwargs": spec.official_kwargs(full=False), "buffers": first_buffers(buffers), "eval": {}}
        with torch.no_grad():
            for size in IMAGE_SIZES:
                record["eval"][f"{size[0]}x{size[1]}"] = outputs(model.forward_features(make_images(size, image_batch(size))), size)
            # Training mode with the rescaling off is deterministic; it differs from eval only where
            # the local crops get their own CLS norm, so only those models record it.
            if spec.official.get("untie_global_and_local_cls_norm"):
                train = DinoVisionTransformer(**{**spec.official_kwargs(full=False), "pos_embed_rope_rescale_coords": None})
                train.load_state_dict(model.state_dict(), strict=True)
                train.train()
                crops = [make_images((h, w), b, salt=1) for b, h, w in TRAIN_CROPS]
                features = train.forward_features(crops, [None, None])
                record["train"] = [outputs(f, (h, w)) for f, (_, h, w) in zip(features, TRAIN_CROPS)]
        with tempfile.TemporaryDirectory() as tmp:
            path = save_backbone(model.state_dict(), Path(tmp) / "backbone.pth")
            strict = DinoVisionTransformer(**spec.official_kwargs(full=False))
            result = strict.load_state_dict(torch.load(path, weights_only=True), strict=True)
            record["lvd_save_loads_strictly"] = not result.missing_keys and not result.unexpected_keys
        torch.save(record, record_path(spec.arch))
        print(spec.arch, "recorded", sum(v.numel() for v in model.parameters()), "parameters")
    LAYOUT_PATH.write_text(json.dumps(layouts, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])

"""The pretraining loader's batch: per-sample multi-crop + collate against one batched augmentation.

Both paths compute the same tensors bit for bit (tests/train/test_pretrain_loader.py); this times
them on the same decoded images in one process, alternating, and prints images/s and the ratio.

    python benchmarks/augment_batch.py                      # 64 synthetic 64-px images, small_data crops
    python benchmarks/augment_batch.py --paper --side 500   # 2 x 224 + 8 x 98 on 500-px images
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lvdtool.data.augment import MultiCropAugment, MultiCropConfig, collate_multicrop
from lvdtool.data.augment.collate import attach_masks
from lvdtool.ssl.masking import BatchMaskSampler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--side", type=int, default=64, help="decoded image side")
    ap.add_argument("--paper", action="store_true", help="2 x 224 + 8 x 98 crops instead of 2 x 32 + 4 x 16")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if args.paper:
        crops = MultiCropConfig(global_crops_size=224, local_crops_size=98, n_local_crops=8)
        grid = 16
    else:
        crops = MultiCropConfig(global_crops_size=32, local_crops_size=16, n_local_crops=4,
                                global_crops_scale=(0.5, 1.0), local_crops_scale=(0.2, 0.5))
        grid = 4
    augment, masks = MultiCropAugment(crops), BatchMaskSampler((grid, grid))
    gen = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, args.side, args.side), dtype=torch.uint8, generator=gen)
              for _ in range(args.batch)]

    def generators() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(i) for i in range(args.batch)]

    def per_sample() -> dict:
        samples = [augment(im, g) for im, g in zip(images, generators())]
        return collate_multicrop(samples, masks, np.random.default_rng(0))

    def batched() -> dict:
        out = augment.batch(images, generators())
        return attach_masks(out["global_crops"], out["local_crops"], masks, np.random.default_rng(0))

    a, b = per_sample(), batched()  # warm-up, and the check that they agree
    assert torch.equal(a["global_crops"], b["global_crops"]) and torch.equal(a["local_crops"], b["local_crops"])
    times = {"per-sample + collate": [], "batched": []}
    for _ in range(args.repeats):
        for name, fn in (("per-sample + collate", per_sample), ("batched", batched)):
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    shape = "2 x 224 + 8 x 98" if args.paper else "2 x 32 + 4 x 16"
    print(f"\nmulti-crop batch: {args.batch} images of {args.side} px, crops {shape}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'path':22s} {'s/batch':>8s} {'images/s':>9s}")
    med = {k: float(np.median(v)) for k, v in times.items()}
    for name, t in med.items():
        print(f"{name:22s} {t:8.3f} {args.batch / t:9.1f}")
    print(f"ratio batched / per-sample: {med['per-sample + collate'] / med['batched']:.2f}x")


if __name__ == "__main__":
    main()

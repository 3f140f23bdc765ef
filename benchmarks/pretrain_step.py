"""Throughput of one full DINOv2 pretraining step per architecture, as a table.

A step is what `lvd pretrain` runs per iteration: student forward/backward on all crops (iBOT
masks included), teacher forward, DINO + iBOT + KoLeo losses, gradient clipping, AdamW and the
teacher EMA, through the same FSDP2 / precision setup. Data loading is excluded (one synthetic
batch is reused), so the numbers are the model's ceiling.

    python benchmarks/pretrain_step.py                                   # S/B/L/g at 128/128/64/32
    python benchmarks/pretrain_step.py --arch vit_l14 --batch 64 --compile
    python benchmarks/pretrain_step.py --arch vit_test --batch 4 --steps 3   # CPU smoke run
    torchrun --nproc_per_node=8 benchmarks/pretrain_step.py --arch vit_g14 --batch 32

Recipe values (heads, crops, drop path) come from configs/recipe/<arch>.yaml; `--set key=value`
overrides any pretrain config key (e.g. --set crops.n_local_crops=4).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from lvdtool.config import compose_config
from lvdtool.data.augment import collate_multicrop
from lvdtool.ssl.masking import BatchMaskSampler
from lvdtool.ssl.schedules import ScheduleValues
from lvdtool.train.build import build_meta_arch, step_shape
from lvdtool.train.config import PretrainConfig
from lvdtool.train.distributed import DistEnv, init_distributed
from lvdtool.train.flops import device_peak_flops, pretrain_flops_per_image
from lvdtool.train.optim import build_optimizer
from lvdtool.train.parallelize import ParallelPlan, parallelize, resolve_precision
from lvdtool.train.step import batch_to_device, train_step

DEFAULT_BATCHES = {"vit_s14": 128, "vit_b14": 128, "vit_l14": 64, "vit_g14": 32}


def synthetic_batch(cfg: PretrainConfig, batch: int, patch_size: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    g, l, n_local = cfg.crops.global_crops_size, cfg.crops.local_crops_size, cfg.crops.n_local_crops
    samples = [{"global_crops": list(torch.randn(2, 3, g, g, generator=gen)),
                "local_crops": list(torch.randn(n_local, 3, l, l, generator=gen))} for _ in range(batch)]
    grid = g // patch_size
    masks = BatchMaskSampler((grid, grid), cfg.ibot.mask_prob, tuple(cfg.ibot.mask_ratio))
    return collate_multicrop(samples, masks, np.random.default_rng(0))


def peak_memory_gib(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "GPU"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "RSS"  # ru_maxrss is in KiB


def bench(arch: str, batch: int, args: argparse.Namespace, env: DistEnv) -> dict:
    overrides = [f"recipe={arch}", "data.images=-", "out=-", f"train.batch_size_per_gpu={batch}",
                 f"parallel.precision={args.precision}", *args.set]
    cfg, _ = compose_config("pretrain", overrides, PretrainConfig)
    meta = build_meta_arch(cfg)
    backbone_cfg = meta.student.backbone.config
    dtype = resolve_precision(cfg.parallel.precision, env.device)
    parallelize(meta, ParallelPlan(env.device, env.world_size, dtype, args.activation_checkpointing, args.compile))
    optimizer = build_optimizer(meta.student, backbone_cfg.depth, cfg.optim)
    meta.train()
    data = batch_to_device(synthetic_batch(cfg, batch, backbone_cfg.patch_size), env.device)
    values = ScheduleValues(lr=1e-4, last_layer_lr=1e-4, weight_decay=0.04, teacher_momentum=0.994, teacher_temp=0.07)
    sync = torch.cuda.synchronize if env.device.type == "cuda" else (lambda: None)
    if env.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(env.device)
    for _ in range(args.warmup):
        train_step(meta, optimizer, data, values, cfg.optim.clip_grad)
    sync()
    started = time.perf_counter()
    for _ in range(args.steps):
        train_step(meta, optimizer, data, values, cfg.optim.clip_grad)
    sync()
    step_s = (time.perf_counter() - started) / args.steps
    flops = pretrain_flops_per_image(backbone_cfg, step_shape(cfg), cfg.dino.head_config(),
                                     cfg.ibot.head_config() if cfg.ibot.separate_head else None)
    name = torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else "cpu"
    peak = device_peak_flops(name, args.peak_tflops) if (env.device.type == "cuda" or args.peak_tflops) else None
    memory, kind = peak_memory_gib(env.device)
    images_per_s = batch / step_s  # per rank
    return {"arch": arch, "batch": batch, "step_ms": step_s * 1e3, "images_per_s": images_per_s,
            "memory": f"{memory:.2f} GiB {kind}", "gflop_per_image": flops / 1e9,
            "mfu": f"{flops * images_per_s / peak:.1%}" if peak else "-", "device": name,
            "precision": str(dtype).replace("torch.", "")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=list(DEFAULT_BATCHES))
    parser.add_argument("--batch", nargs="+", type=int, help="per-rank batch, one per arch (default: reference's)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, help="accelerator peak for MFU (H100/H200/A100 known)")
    parser.add_argument("--set", nargs="*", default=[], help="pretrain config overrides key=value")
    args = parser.parse_args()
    batches = args.batch or [DEFAULT_BATCHES.get(a, 8) for a in args.arch]
    if len(batches) == 1:
        batches = batches * len(args.arch)
    if len(batches) != len(args.arch):
        parser.error("--batch takes one value, or one per --arch")
    env = init_distributed(args.device)
    try:
        rows = [bench(arch, batch, args, env) for arch, batch in zip(args.arch, batches)]
    finally:
        env.close()
    if env.rank == 0:
        print(f"device: {rows[0]['device']} x {env.world_size}, precision {rows[0]['precision']}, "
              f"compile {args.compile}, activation checkpointing {args.activation_checkpointing}")
        print(f"{'arch':<10} {'batch':>5} {'step ms':>9} {'img/s/rank':>11} {'peak memory':>16} {'GFLOP/img':>10} {'MFU':>6}")
        for r in rows:
            print(f"{r['arch']:<10} {r['batch']:>5} {r['step_ms']:>9.1f} {r['images_per_s']:>11.1f} "
                  f"{r['memory']:>16} {r['gflop_per_image']:>10.4g} {r['mfu']:>6}")


if __name__ == "__main__":
    main()

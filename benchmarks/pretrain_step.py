"""Throughput of one full DINOv2 pretraining step per architecture, as a table.

A step is what `lvd pretrain` runs per iteration: student forward/backward on all crops (iBOT
masks included), teacher forward, DINO + iBOT + KoLeo losses, gradient clipping, AdamW and the
teacher EMA, through the same FSDP2 / precision setup. Data loading is excluded (one synthetic
batch is reused), so the numbers are the model's ceiling.

    python benchmarks/pretrain_step.py                                   # S/B/L/g at 128/128/64/32
    python benchmarks/pretrain_step.py --arch vit_l14 --batch 64 --compile
    python benchmarks/pretrain_step.py --arch vit_test --batch 4 --steps 3   # CPU smoke run
    torchrun --nproc_per_node=8 benchmarks/pretrain_step.py --arch vit_g14 --batch 32
    python benchmarks/pretrain_step.py --arch vit_l14 --batch 64 --json step.json --markdown step.md --deadline-s 60

Recipe values (heads, crops, drop path) come from configs/recipe/<arch>.yaml; `--recipe` takes
another recipe for every arch (the reference's ViT-S/14 runs the vitl14 recipe), `--set
key=value` overrides any pretrain config key (e.g. --set crops.n_local_crops=4).

MFU is given twice: nominal (every student image through every block, as the recipe counts) and
effective (only the images stochastic depth's subset mode computes, rates above 0.1: what the
GPU did; the reference harness reports the same split). With `--deadline-s` the timed steps are
cut to what fits after the warm-up, and an arch that runs out of memory or time is a row with
its error instead of the end of the run; `--json`/`--markdown` are rewritten after each arch.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lvdtool.config import compose_config
from lvdtool.errors import LvdError
from lvdtool.data.augment import collate_multicrop
from lvdtool.ssl.masking import BatchMaskSampler
from lvdtool.ssl.schedules import ScheduleValues
from lvdtool.train.build import build_meta_arch, step_shape
from lvdtool.train.config import PretrainConfig
from lvdtool.train.distributed import DistEnv, init_distributed
from lvdtool.models.config import BackboneConfig
from lvdtool.models.layers.stochastic_depth import EFFICIENT_THRESHOLD
from lvdtool.train.flops import (
    BACKWARD_FACTOR,
    StepShape,
    device_peak_flops,
    pretrain_flops_per_image,
    vit_forward_flops,
)
from lvdtool.train.optim import build_optimizer
from lvdtool.train.parallelize import ParallelPlan, parallelize, resolve_precision
from lvdtool.train.step import batch_to_device, train_step

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import Deadline, Table, commit  # noqa: E402

DEFAULT_BATCHES = {"vit_s14": 128, "vit_b14": 128, "vit_l14": 64, "vit_g14": 32}
COLUMNS = ["arch", "recipe", "batch", "steps", "step_ms", "images_per_s", "peak_gib", "memory", "gflop_per_image",
           "effective_gflop_per_image", "mfu", "effective_mfu", "device", "precision", "error"]


def skipped_student_flops(cfg: BackboneConfig, shape: StepShape, batch: int) -> float:
    """Student block FLOPs per image (forward + backward) that subset-mode stochastic depth skips:
    a block at rate r > EFFICIENT_THRESHOLD runs on max(int(n (1 - r)), 1) of each crop batch's n."""
    skipped = 0.0
    for size, crops in ((shape.global_crops_size, shape.n_global_crops), (shape.local_crops_size, shape.n_local_crops)):
        if crops == 0:
            continue
        patches = (size // cfg.patch_size) ** 2
        per_block = (vit_forward_flops(cfg, size) - 2.0 * patches * cfg.in_chans * cfg.patch_size**2 * cfg.embed_dim) \
            / cfg.depth
        n = crops * batch
        for rate in cfg.drop_path_rates():
            if rate > EFFICIENT_THRESHOLD:
                skipped += crops * per_block * (1.0 - max(int(n * (1.0 - rate)), 1) / n)
    return (1.0 + BACKWARD_FACTOR) * skipped


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


def bench(arch: str, batch: int, args: argparse.Namespace, env: DistEnv, share: float) -> dict:
    """One arch's row; its timed steps are cut to what fits in `share` seconds after the warm-up."""
    began = time.perf_counter()
    recipe = args.recipe or arch
    overrides = [f"recipe={recipe}", f"model.arch={arch}", "data.images=-", "out=-", f"train.batch_size_per_gpu={batch}",
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
    warm_s = float("inf")
    for _ in range(max(1, args.warmup)):
        started = time.perf_counter()
        train_step(meta, optimizer, data, values, cfg.optim.clip_grad)
        sync()
        warm_s = min(warm_s, time.perf_counter() - started)
    left = share - (time.perf_counter() - began)
    # at least 3 timed steps (or --steps) even past the share: fewer would time noise; the suite's timeout guards
    steps = args.steps if left == float("inf") else max(min(3, args.steps), min(args.steps, int(left / warm_s)))
    started = time.perf_counter()
    for _ in range(steps):
        train_step(meta, optimizer, data, values, cfg.optim.clip_grad)
    sync()
    step_s = (time.perf_counter() - started) / steps
    shape = step_shape(cfg)
    flops = pretrain_flops_per_image(backbone_cfg, shape, cfg.dino.head_config(),
                                     cfg.ibot.head_config() if cfg.ibot.separate_head else None)
    effective = flops - skipped_student_flops(backbone_cfg, shape, batch)
    name = torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else "cpu"
    peak = device_peak_flops(name, args.peak_tflops) if (env.device.type == "cuda" or args.peak_tflops) else None
    memory, kind = peak_memory_gib(env.device)
    images_per_s = batch / step_s  # per rank
    return {"arch": arch, "recipe": recipe, "batch": batch, "steps": steps, "step_ms": step_s * 1e3,
            "images_per_s": images_per_s, "peak_gib": memory, "memory": f"{memory:.2f} GiB {kind}",
            "gflop_per_image": flops / 1e9, "effective_gflop_per_image": effective / 1e9,
            "mfu": f"{flops * images_per_s / peak:.1%}" if peak else "-",
            "effective_mfu": f"{effective * images_per_s / peak:.1%}" if peak else "-", "device": name,
            "precision": str(dtype).replace("torch.", ""), "error": ""}


def failed(arch: str, recipe: str, batch: int, error: BaseException) -> dict:
    """A row for an arch that did not finish (out of memory, a config error): the run goes on."""
    line = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:200]
    return {c: None for c in COLUMNS} | {"arch": arch, "recipe": recipe, "batch": batch, "error": line}


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
    parser.add_argument("--recipe", help="recipe for every arch (default: the arch's own)")
    parser.add_argument("--deadline-s", type=float, help="seconds for the whole run; later archs are skipped")
    parser.add_argument("--json", help="write the table as JSON here (after each arch)")
    parser.add_argument("--markdown", help="write the table as markdown here (after each arch)")
    args = parser.parse_args()
    batches = args.batch or [DEFAULT_BATCHES.get(a, 8) for a in args.arch]
    if len(batches) == 1:
        batches = batches * len(args.arch)
    if len(batches) != len(args.arch):
        parser.error("--batch takes one value, or one per --arch")
    env = init_distributed(args.device)
    deadline = Deadline(args.deadline_s)
    is_main = env.rank == 0
    table = Table("lvd pretrain step", COLUMNS, args.json if is_main else None, args.markdown if is_main else None,
                  {"commit": commit(), "torch": torch.__version__, "world size": env.world_size,
                   "compile": args.compile, "overrides": " ".join(args.set) or "-"})
    rows = []
    try:
        for i, (arch, batch) in enumerate(zip(args.arch, batches)):
            if deadline.passed():
                row = failed(arch, args.recipe or arch, batch, TimeoutError(f"deadline {args.deadline_s} s reached"))
            else:
                try:
                    row = bench(arch, batch, args, env, deadline.left() / (len(batches) - i))
                except (torch.OutOfMemoryError, RuntimeError, LvdError) as error:  # the next arch still runs
                    row = failed(arch, args.recipe or arch, batch, error)
                finally:
                    gc.collect()  # the arch's model and optimizer, so the next arch's peak starts from zero
                    if env.device.type == "cuda":
                        torch.cuda.empty_cache()
            rows.append(row)
            table.add(**row)
    finally:
        env.close()
    if is_main:
        done = [r for r in rows if not r["error"]]
        print(f"device: {done[0]['device'] if done else '-'} x {env.world_size}, "
              f"precision {done[0]['precision'] if done else '-'}, "
              f"compile {args.compile}, activation checkpointing {args.activation_checkpointing}")
        print(f"{'arch':<10} {'batch':>5} {'step ms':>9} {'img/s/rank':>11} {'peak memory':>16} {'GFLOP/img':>10} "
              f"{'MFU':>6} {'eff. MFU':>8}")
        for r in rows:
            if r["error"]:
                print(f"{r['arch']:<10} {r['batch']:>5} failed: {r['error']}")
                continue
            print(f"{r['arch']:<10} {r['batch']:>5} {r['step_ms']:>9.1f} {r['images_per_s']:>11.1f} "
                  f"{r['memory']:>16} {r['gflop_per_image']:>10.4g} {r['mfu']:>6} {r['effective_mfu']:>8}")


if __name__ == "__main__":
    main()

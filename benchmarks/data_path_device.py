"""The pretraining data path with the augmentation split between DataLoader workers and the
device: CPU time per training image in the workers (and in the main process that drives the
device), and end-to-end images/s, for three placements of the same multi-crop augmentation:

- cpu: workers decode and run all of it (the loader's path today, `MultiCropAugment.batch`);
- photometric on device: workers decode, crop and resize (float crops in [0, 1] and the crops'
  photometric parameters); the device runs colour jitter, grayscale, blur, solarize and the
  normalisation on the whole batch (`apply_photometric_`, `normalize_`);
- all on device: workers decode only (uint8 images, the parameters drawn from the same
  generators); the device also crops and resizes.

Every placement draws each image's parameters from torch.Generator(seed = image index), so all
three compute the same crops; the table's last column is the first batch's largest difference
from the cpu placement (0 on the CPU; float rounding on a GPU). Worker CPU time is what the
exited workers consumed (getrusage of the waited-for children), start-up and IPC included.
"device only" times the device part alone on one resident batch.

    python benchmarks/data_path_device.py --device cuda --workers 8 --images 2048 --batch 64
    python benchmarks/data_path_device.py --device cpu --recipe small_data --images 64 --batch 16 --workers 2
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_path import RECIPES, scene_jpeg  # noqa: E402
from report import Deadline, Table, commit  # noqa: E402

from lvdtool.data.augment import MultiCropAugment, MultiCropConfig, PhotometricBatch  # noqa: E402
from lvdtool.data.augment.backend import resolve_backend  # noqa: E402
from lvdtool.data.augment.color import normalize_  # noqa: E402
from lvdtool.data.augment.geometry import to_float_image  # noqa: E402
from lvdtool.data.augment.photometric import apply_photometric_  # noqa: E402
from lvdtool.data.decode import decode_rgb, to_uint8_chw  # noqa: E402

MODES = ("cpu", "photometric on device", "all on device")
COLUMNS = ["mode", "recipe", "workers", "batch", "images", "seconds", "images_per_s", "worker_cpu_ms_per_image",
           "main_cpu_ms_per_image", "cpu_ms_per_image", "device_only_images_per_s", "max_abs_diff_vs_cpu", "device"]


def _view_major(per_image: list[torch.Tensor]) -> torch.Tensor:
    """[B] x [n, 3, s, s] -> [n * B, 3, s, s] in collate_multicrop's order (view-major)."""
    stacked = torch.stack(per_image, dim=1)
    return stacked.view(-1, *stacked.shape[2:])


class Batches(Dataset):
    """Item i: batch i of the benchmark's images, prepared as `mode` leaves it to the device."""

    def __init__(self, jpegs: list[bytes], n_images: int, batch: int, cfg: MultiCropConfig, min_side: int | None,
                 mode: str) -> None:
        self.jpegs, self.n_images, self.batch, self.min_side, self.mode = jpegs, n_images, batch, min_side, mode
        self.augment = MultiCropAugment(cfg)

    def __len__(self) -> int:
        return self.n_images // self.batch

    def __getitem__(self, i: int) -> dict:
        ids = range(i * self.batch, (i + 1) * self.batch)
        images = [to_uint8_chw(decode_rgb(self.jpegs[j % len(self.jpegs)], self.min_side)) for j in ids]
        gens = [torch.Generator().manual_seed(j) for j in ids]
        if self.mode == "cpu":
            return self.augment.batch(images, gens)
        params = [self.augment.sample_params((im.shape[1], im.shape[2]), g) for im, g in zip(images, gens)]
        photometric = {  # view-major, as the crops
            "global": PhotometricBatch.stack([p.global_crops[v].photometric for v in range(2) for p in params]),
            "local": PhotometricBatch.stack([p.local_crops[v].photometric for v in range(len(params[0].local_crops))
                                             for p in params]),
        }
        if self.mode == "all on device":
            return {"images": images, "params": params, "photometric": photometric}
        cfg = self.augment.config
        return {"global_crops": _view_major([self.augment.geometric(im, p.global_crops, cfg.global_crops_size)
                                             for im, p in zip(images, params)]),
                "local_crops": _view_major([self.augment.geometric(im, p.local_crops, cfg.local_crops_size)
                                            for im, p in zip(images, params)]),
                "photometric": photometric}


def _collate(items: list[dict]) -> dict:
    return items[0]  # one dataset item is already a batch


def _on_device(batch: dict, augment: MultiCropAugment, device: torch.device) -> dict[str, torch.Tensor]:
    """Finish the batch on the device as its mode left it; returns the normalised crops."""
    cfg = augment.config
    if "photometric" not in batch:  # cpu: already normalised
        return {k: batch[k].to(device, non_blocking=True) for k in ("global_crops", "local_crops")}
    if "images" in batch:  # all on device: crop + resize there too
        images = [to_float_image(im.to(device, non_blocking=True)) for im in batch["images"]]
        crops = {}
        for key, size, of in (("global_crops", cfg.global_crops_size, lambda p: p.global_crops),
                              ("local_crops", cfg.local_crops_size, lambda p: p.local_crops)):
            n = len(of(batch["params"][0]))
            out = torch.empty(n, len(images), 3, size, size, device=device)
            for i, (image, p) in enumerate(zip(images, batch["params"])):
                # geometric() allocates its output on the CPU; _render writes into a device view
                augment._render([image] * n, of(p), size, out=out[:, i])
            crops[key] = out.view(n * len(images), 3, size, size)
    else:
        crops = {k: batch[k].to(device, non_blocking=True) for k in ("global_crops", "local_crops")}
    for key, part in (("global_crops", "global"), ("local_crops", "local")):
        x = crops[key]
        apply_photometric_(x, batch["photometric"][part], cfg.blur_kernel_size, cfg.solarize_threshold)
        normalize_(x, cfg.mean, cfg.std)
    return crops


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def recipe(args: argparse.Namespace) -> tuple[MultiCropConfig, int | None]:
    """The recipe's crops with the CPU backend asked for (auto: numba where installed)."""
    cfg, min_side, _ = RECIPES[args.recipe]
    return dataclasses.replace(cfg, backend=resolve_backend(args.backend, "--backend")), min_side


def run_mode(mode: str, jpegs: list[bytes], args: argparse.Namespace, device: torch.device, seconds: float,
             reference: dict[str, torch.Tensor]) -> dict:
    cfg, min_side = recipe(args)
    data = Batches(jpegs, args.images, args.batch, cfg, min_side, mode)
    augment = data.augment
    first = _on_device(data[0], augment, device)  # warm-up (kernels, allocator) and the check
    diff = max(float((first[k].cpu() - reference[k]).abs().max()) for k in reference)
    resident = data[0]
    _sync(device)
    started, n = time.perf_counter(), 0
    while n == 0 or time.perf_counter() - started < min(args.device_only_s, seconds / 4):
        _on_device(resident, augment, device)
        n += 1
    _sync(device)
    device_only = n * args.batch / (time.perf_counter() - started)

    deadline = Deadline(seconds)
    children, main = _cpu_seconds(resource.RUSAGE_CHILDREN), _cpu_seconds(resource.RUSAGE_SELF)
    loader = DataLoader(data, batch_size=None, shuffle=False, num_workers=args.workers, collate_fn=None,
                        pin_memory=device.type == "cuda", prefetch_factor=4 if args.workers else None)
    started, images = time.perf_counter(), 0
    iterator = iter(loader)
    for batch in iterator:
        _on_device(batch, augment, device)
        images += args.batch
        if deadline.passed():
            break
    _sync(device)
    wall = time.perf_counter() - started
    main_cpu = _cpu_seconds(resource.RUSAGE_SELF) - main
    del iterator  # shuts the workers down and waits for them, so their CPU time is counted
    worker_cpu = _cpu_seconds(resource.RUSAGE_CHILDREN) - children
    if args.workers == 0:
        worker_cpu = 0.0  # the main process did the workers' part: it is in main_cpu
    return {"mode": mode, "recipe": args.recipe, "workers": args.workers, "batch": args.batch, "images": images,
            "seconds": wall, "images_per_s": images / wall, "worker_cpu_ms_per_image": 1e3 * worker_cpu / images,
            "main_cpu_ms_per_image": 1e3 * main_cpu / images,
            "cpu_ms_per_image": 1e3 * (worker_cpu + main_cpu) / images, "device_only_images_per_s": device_only,
            "max_abs_diff_vs_cpu": diff, "device": str(device)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--recipe", default="dinov2", choices=sorted(RECIPES), help="crop sizes (data_path.py's)")
    ap.add_argument("--images", type=int, default=2048, help="images per placement (fewer if the deadline cuts)")
    ap.add_argument("--distinct", type=int, default=64, help="distinct JPEGs generated, cycled over")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--backend", default="auto", choices=["auto", "torch", "numba"],
                    help="who renders on the CPU (workers' crops and resizes): data.augment_backend's choices")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--device-only-s", type=float, default=2.0, help="seconds of the device-only timing per placement")
    ap.add_argument("--deadline-s", type=float, help="seconds for the whole run, shared by the placements")
    ap.add_argument("--json", help="write the table as JSON here (after each placement)")
    ap.add_argument("--markdown", help="write the table as markdown here (after each placement)")
    args = ap.parse_args()
    name = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    torch.set_num_threads(1)  # as the loader's workers; the device does the batched work
    deadline = Deadline(args.deadline_s)
    jpegs = [scene_jpeg(i) for i in range(min(args.distinct, args.images))]
    cfg, min_side = recipe(args)
    shape = f"2 x {cfg.global_crops_size} + {cfg.n_local_crops} x {cfg.local_crops_size}"
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    table = Table("data path with the augmentation on the device", COLUMNS, args.json, args.markdown,
                  {"commit": commit(), "torch": torch.__version__, "device": label, "crops": shape,
                   "images": "500 x 375 JPEG", "cpu_backend": cfg.backend})
    reference = Batches(jpegs, args.images, args.batch, cfg, min_side, "cpu")[0]
    for i, mode in enumerate(args.modes):
        share = deadline.left() / (len(args.modes) - i)
        if share <= 0:
            table.add(mode=mode, recipe=args.recipe, device=str(device), images=0)
            continue
        try:
            table.add(**run_mode(mode, jpegs, args, device, share, reference))
        except (torch.OutOfMemoryError, RuntimeError) as error:  # the next placement still runs
            print(f"{mode}: {type(error).__name__}: {str(error).splitlines()[0]}", flush=True)
            table.add(mode=mode, recipe=args.recipe, device=f"failed: {type(error).__name__}")
    table.print()


if __name__ == "__main__":
    main()

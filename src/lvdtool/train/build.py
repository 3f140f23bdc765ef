"""Build the pieces of a pretraining run from its config: data, model, inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lvdtool.artifacts.images import ImagesArtifact
from lvdtool.artifacts.manifest import InputRef, input_ref
from lvdtool.artifacts.selection import Selection
from lvdtool.data.augment import ColorJitterConfig, MultiCropAugment, MultiCropConfig
from lvdtool.data.augment.backend import resolve_backend
from lvdtool.data.image_table import ImageTable, distributed_table
from lvdtool.data.pretrain_loader import PretrainBatches, check_training_inputs
from lvdtool.data.resolution import CropVariant, ResolutionChoice
from lvdtool.errors import ConfigError
from lvdtool.models import backbone_fingerprint, build_backbone, extract_backbone_state, read_weights
from lvdtool.ssl.masking import BatchMaskSampler
from lvdtool.ssl.meta_arch import SSLMetaArch
from lvdtool.train.config import PretrainConfig
from lvdtool.train.distributed import DistEnv
from lvdtool.train.flops import StepShape


@dataclass
class TrainingData:
    table: ImageTable
    dataset: PretrainBatches
    inputs: list[InputRef]
    warning: str | None = None  # e.g. images stored smaller than the crop


def multicrop_config(cfg: PretrainConfig, global_size: int | None = None, local_size: int | None = None,
                     gram_size: int | None = None) -> MultiCropConfig:
    crops = cfg.crops
    return MultiCropConfig(
        global_crops_size=global_size or crops.global_crops_size,
        local_crops_size=local_size or crops.local_crops_size,
        n_local_crops=crops.n_local_crops,
        global_crops_scale=tuple(crops.global_crops_scale),  # type: ignore[arg-type]
        local_crops_scale=tuple(crops.local_crops_scale),  # type: ignore[arg-type]
        blur_as_trained=crops.blur_as_trained,
        blur_probs=tuple(crops.blur_probs),  # type: ignore[arg-type]
        flip_prob=crops.flip_prob,
        solarize_prob=crops.solarize_prob,
        jitter=ColorJitterConfig(prob=crops.color_jitter_prob),
        gram_crops_size=gram_size,
        backend=resolve_backend(cfg.data.augment_backend),
    )


def step_shape(cfg: PretrainConfig) -> StepShape:
    return StepShape(cfg.crops.global_crops_size, cfg.crops.local_crops_size, cfg.crops.n_local_crops,
                     mask_prob=cfg.ibot.mask_prob, mask_ratio=(cfg.ibot.mask_ratio[0], cfg.ibot.mask_ratio[1]))


TABLE_DIR = "data_table"  # in the run directory: the training table, built once, mapped at every start


def build_training_data(cfg: PretrainConfig, patch_size: int, run_dir: Path | None = None,
                        env: DistEnv | None = None) -> TrainingData:
    """The image table (ok keys, optionally a selection's) and the multi-crop batch dataset.

    With a run directory the table is built once, split over the ranks (each reads the indexes of
    its share of the shards, rank 0 merges), saved in run_dir/data_table and mapped by every rank;
    a restart maps the saved table and starts in seconds whatever the artifact's size."""
    images = ImagesArtifact(cfg.data.images)
    inputs = [input_ref(cfg.data.images, images.manifest, role="images")]
    selection = None
    if cfg.data.selection:
        selection = Selection(cfg.data.selection)
        inputs.append(input_ref(cfg.data.selection, selection.manifest, role="selection"))
    check_training_inputs(images, selection, cfg.data.verify, env)
    if run_dir is None or env is None:
        table = ImageTable.from_artifact(images, selection)
    else:
        fingerprint = "+".join(ref.fingerprint for ref in inputs)
        table = distributed_table(images, selection, run_dir / TABLE_DIR, fingerprint, env.rank, env.world_size,
                                  env.run_on_all, env.run_on_main)
    pairs = crop_sizes(cfg, patch_size)
    grams = gram_sizes(cfg, patch_size)
    ratio = (cfg.ibot.mask_ratio[0], cfg.ibot.mask_ratio[1])
    variants = []
    for (global_size, local_size, _), gram_size in zip(pairs, grams):
        grid = global_size // patch_size  # the iBOT mask grid follows the crop size
        masks = BatchMaskSampler((grid, grid), mask_prob=cfg.ibot.mask_prob, ratio_range=ratio)
        min_side = cfg.data.decode_min_side or max(2 * global_size, gram_size or 0)
        augment = MultiCropAugment(multicrop_config(cfg, global_size, local_size, gram_size))
        variants.append(CropVariant(augment, masks, min_side))
    choice = ResolutionChoice([p for _, _, p in pairs], cfg.train.seed)
    first = variants[0]
    dataset = PretrainBatches(table, first.augment, first.mask_sampler, cfg.train.seed, first.decode_min_side,
                              variants=variants, choice=choice)
    return TrainingData(table, dataset, inputs, ingest_size_warning(images.manifest.config, max(p[0] for p in pairs)))


def crop_sizes(cfg: PretrainConfig, patch_size: int) -> list[tuple[int, int, float]]:
    """(global, local, probability) of every resolution the run trains at. `crops.resolutions`
    entries are rounded to the nearest multiple of the patch size (DINOv3's sizes are given for
    patch 16: 512 -> 518 at patch 14); the single-size keys must be multiples already."""
    if not cfg.crops.resolutions:
        for key, crop in (("crops.global_crops_size", cfg.crops.global_crops_size),
                          ("crops.local_crops_size", cfg.crops.local_crops_size)):
            if crop % patch_size:
                raise ConfigError(f"{key}={crop} is not a multiple of the patch size {patch_size}")
        return [(cfg.crops.global_crops_size, cfg.crops.local_crops_size, 1.0)]

    def fit(size: int) -> int:
        return max(patch_size, int(round(size / patch_size)) * patch_size)

    return [(fit(r.global_size), fit(r.local_size), float(r.p)) for r in cfg.crops.resolutions]


def gram_sizes(cfg: PretrainConfig, patch_size: int) -> list[int | None]:
    """The Gram-teacher crop of every resolution `crop_sizes` gives (None each without Gram
    anchoring): gram.crop_size, a resolution's gram_size, or gram.crop_factor x the global crop,
    rounded to the nearest multiple of the patch size and never below the global crop."""
    pairs = crop_sizes(cfg, patch_size)
    if not cfg.gram.enabled:
        return [None] * len(pairs)

    def fit(size: float, global_size: int) -> int:
        return max(global_size, int(round(size / patch_size)) * patch_size)

    if cfg.gram.crop_size is not None:
        if cfg.gram.crop_size % patch_size:
            raise ConfigError(f"gram.crop_size={cfg.gram.crop_size} is not a multiple of the patch size {patch_size}")
        return [cfg.gram.crop_size]
    specs = cfg.crops.resolutions or [None]
    return [fit(spec.gram_size if spec is not None and spec.gram_size else global_size * cfg.gram.crop_factor, global_size)
            for spec, (global_size, _, _) in zip(specs, pairs)]


def ingest_size_warning(images_config: dict, crop: int) -> str | None:
    """A warning when the images artifact was stored smaller than the largest global crop (the
    crops would be upsampled: a high-resolution phase on 512 px images learns little)."""
    process = (images_config or {}).get("process") or {}
    mode, size = process.get("resize_mode"), process.get("size")
    if process.get("keep_original") or mode in (None, "keep") or not isinstance(size, int):
        return None
    stored = {"max_side": "longest side", "shorter_side_center_crop": "side"}.get(mode, "size")
    if size < crop:
        return (f"the images were ingested at {stored} {size} px (crawl-ingest process.size), smaller than the "
                f"{crop} px global crop: crops are upsampled; re-ingest with process.size={crop} or more "
                f"(or process.keep_original=true) for a real high-resolution phase")
    return None


def build_meta_arch(cfg: PretrainConfig) -> SSLMetaArch:
    """Student and teacher on CPU, initialised from `train.seed` (identical on every rank)."""
    torch.manual_seed(cfg.train.seed)
    backbone = build_backbone(cfg.model.arch, **cfg.model.backbone_overrides())
    return SSLMetaArch(backbone, cfg.meta_arch_config(), gram=cfg.gram.enabled)


def load_init_weights(meta: SSLMetaArch, path: str) -> InputRef:
    """Continued pretraining: backbone weights into student and teacher; returns the input record."""
    state = extract_backbone_state(read_weights(path), path)
    try:
        meta.load_backbone_weights(state)
    except RuntimeError as exc:
        first = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3])[:300]
        raise ConfigError(f"init={path}: does not fit model.arch={meta.student.backbone.config.arch} ({first})") from None
    resolved = str(Path(path).resolve())
    return InputRef(path=resolved, kind="file", fingerprint="sha256:" + backbone_fingerprint(path), role="init")

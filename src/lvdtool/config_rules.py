"""The allowed values of every stage config key: one table per schema (a dataclass, named by its
module and class so this file imports none of the stages), checked by `config_checks` when the
config is composed. Every numeric key has a range (tests/stages/test_config_validation.py checks
that none is missing); enumerated strings have their choices. A subclass schema inherits the
tables of its bases (the DINO and iBOT heads share HeadSection's).

Cross-key rules that need more than one value (a crop below the patch size, ...) stay with the
code that has the values: `PretrainConfig.validate`, the stages' own checks.
"""
from __future__ import annotations

from typing import Callable

from lvdtool.config_checks import Choice, Range, Rule

POSITIVE_INT = Range(1)  # counts, sizes, intervals
NON_NEGATIVE = Range(0)  # counts that may be 0, seeds, weights, decays
ABOVE_ZERO = Range(0, lo_open=True)  # rates, temperatures, timeouts
PROBABILITY = Range(0, 1)
COSINE = Range(-1, 1, hi_open=True)
FRACTION = Range(0, 1, lo_open=True)  # crop scales, layer-wise decay

SIZE_OR_FULL = Choice(("size", "full"))
PRECISION = Choice(("auto", "bf16", "fp32"))
TORCH_DEVICE = Choice(("auto", "cpu", "cuda"), patterns=((r"cuda:\d+", "cuda:N"),))  # embed, probe
INDEX_DEVICE = Choice(("auto", "cpu", "cuda"))  # lvdtool.index.backend.DEVICES
ENGINE = Choice(("auto", "faiss", "torch"))


def _archs() -> list[str]:
    from lvdtool.models import list_archs

    return list_archs()


def _resize_modes() -> list[str]:
    from lvdtool.ingest.resize import RESIZE_MODES

    return sorted(RESIZE_MODES)


def _resampling() -> list[str]:
    from lvdtool.ingest.resize import RESAMPLING

    return sorted(RESAMPLING)


def _representatives() -> list[str]:
    from lvdtool.curation.representatives import REPRESENTATIVE_POLICIES

    return sorted(REPRESENTATIVE_POLICIES)


def _kmeans_inits() -> list[str]:
    from lvdtool.index.kmeans_init import INITS

    return ["auto", *sorted(INITS)]


ARCH = Choice(_archs)

RULES: dict[str, dict[str, Rule]] = {
    # ---------------------------------------------------------------- crawl-ingest
    "lvdtool.stages.crawl_ingest.CrawlIngestConfig": {
        "shard_size": POSITIVE_INT, "threads": POSITIVE_INT, "processes": POSITIVE_INT, "verify": SIZE_OR_FULL,
        "wait_s": NON_NEGATIVE,
    },
    "lvdtool.ingest.fetch.FetchConfig": {
        "connect_timeout": ABOVE_ZERO, "read_timeout": ABOVE_ZERO, "deadline": ABOVE_ZERO, "retries": NON_NEGATIVE,
        "backoff_base": NON_NEGATIVE, "backoff_max": NON_NEGATIVE, "max_bytes": POSITIVE_INT, "max_redirects": NON_NEGATIVE,
    },
    "lvdtool.ingest.decode.ProcessConfig": {
        "resize_mode": Choice(_resize_modes), "size": POSITIVE_INT, "min_side": NON_NEGATIVE, "max_aspect": Range(1),
        "max_pixels": POSITIVE_INT, "jpeg_quality": Range(1, 100), "resample": Choice(_resampling),
    },
    "lvdtool.stages.crawl_ingest.DedupConfig": {"max_distance": Range(0, 64), "buckets": NON_NEGATIVE},
    # ---------------------------------------------------------------- embed
    "lvdtool.stages.embed.EmbedConfig": {
        "arch": ARCH, "resolution": POSITIVE_INT, "resize": POSITIVE_INT, "token": Choice(("cls", "avgpool", "cls+avgpool")),
        "batch_size": POSITIVE_INT, "workers": NON_NEGATIVE, "device": TORCH_DEVICE, "precision": PRECISION,
        "verify": SIZE_OR_FULL,
    },
    "lvdtool.models.torchscript_descriptor.ModelConfig": {"kind": Choice(("vit", "torchscript")), "dim": POSITIVE_INT},
    "lvdtool.data.preprocess.PreprocessConfig": {
        "resize": POSITIVE_INT, "crop": POSITIVE_INT, "interpolation": Choice(("bilinear", "bicubic")),
        "mean": PROBABILITY, "std": ABOVE_ZERO,
    },
    # ---------------------------------------------------------------- probe
    "lvdtool.stages.probe.ProbeConfig": {
        "arch": ARCH, "resolution": POSITIVE_INT, "resize": POSITIVE_INT, "batch_size": POSITIVE_INT, "workers": NON_NEGATIVE,
        "device": TORCH_DEVICE, "protocol": Choice(("cached", "official")), "pca_images": NON_NEGATIVE, "seed": NON_NEGATIVE,
    },
    "lvdtool.stages.probe.KnnConfig": {"ks": POSITIVE_INT, "temperature": ABOVE_ZERO},
    "lvdtool.stages.probe.LinearConfig": {
        "lrs": ABOVE_ZERO, "epochs": ABOVE_ZERO, "batch_size": POSITIVE_INT, "iterations": POSITIVE_INT,
        "official_batch_size": POSITIVE_INT,
    },
    # ---------------------------------------------------------------- dedup
    "lvdtool.stages.dedup.DedupConfig": {
        "k": POSITIVE_INT, "threshold": COSINE, "against_threshold": COSINE, "representative": Choice(_representatives),
        "block_rows": POSITIVE_INT, "engine": ENGINE, "device": INDEX_DEVICE, "precision": PRECISION,
    },
    "lvdtool.stages.dedup.CalibrationConfig": {"pairs": NON_NEGATIVE, "band": Range(0, 2), "cell": POSITIVE_INT},
    "lvdtool.curation.search.SearchConfig": {
        "nprobe": POSITIVE_INT, "train_sample": POSITIVE_INT, "chunk_rows": POSITIVE_INT, "seed": NON_NEGATIVE,
        "merge": Choice(("memory", "disk")),
    },
    # ---------------------------------------------------------------- curate
    "lvdtool.stages.curate.CurateConfig": {
        "method": Choice(("retrieval", "hkmeans")), "engine": ENGINE, "device": INDEX_DEVICE, "precision": PRECISION,
        "random_seed": NON_NEGATIVE, "dry_run_vectors": POSITIVE_INT, "dry_run_dim": POSITIVE_INT, "dry_run_flops": ABOVE_ZERO,
    },
    "lvdtool.curation.seed_sets.SeedSetConfig": {
        "mode": Choice(("auto", "sample", "cluster")), "k": POSITIVE_INT, "cap": POSITIVE_INT, "per_cluster": POSITIVE_INT,
        "min_seed_images": NON_NEGATIVE, "expected_size": NON_NEGATIVE,
    },
    "lvdtool.curation.seed_sets.RetrievalDefaults": {
        "large_seed_threshold": NON_NEGATIVE, "k": POSITIVE_INT, "cap": POSITIVE_INT, "pool_clusters": POSITIVE_INT,
        "per_cluster": POSITIVE_INT, "min_seed_images": NON_NEGATIVE,
    },
    "lvdtool.curation.clustering.HKMeansConfig": {
        "target": POSITIVE_INT, "strategy": Choice(("random", "closest")), "split_batch_rows": POSITIVE_INT,
    },
    "lvdtool.curation.clustering.LevelConfig": {
        "n_clusters": POSITIVE_INT, "n_resampling_steps": NON_NEGATIVE, "sample_size": POSITIVE_INT,
        "sampling": Choice(("closest", "random")), "n_splits": POSITIVE_INT,
    },
    "lvdtool.curation.clustering.KMeansOptions": {
        "n_iter": POSITIVE_INT, "init": Choice(_kmeans_inits), "fit_sample": POSITIVE_INT, "seed": NON_NEGATIVE,
        "accumulate": Choice(("exact", "float32", "float64")), "memory_limit_gb": NON_NEGATIVE,
        "checkpoint_every": POSITIVE_INT, "engine": ENGINE,
    },
    "lvdtool.stages.curate.ReportConfig": {
        "clusters": NON_NEGATIVE, "images_per_cluster": POSITIVE_INT, "examples": NON_NEGATIVE, "neighbours": NON_NEGATIVE,
        "cell": POSITIVE_INT,
    },
    # ---------------------------------------------------------------- pretrain, hires-adapt, distill
    "lvdtool.train.config.PretrainConfig": {
        "stage": Choice(("pretrain", "hires-adapt", "distill")), "init_centers": Choice(("reset", "carry")),
    },
    "lvdtool.train.config.DistillSection": {"students": ARCH},
    "lvdtool.train.config.ModelSection": {
        "arch": ARCH, "drop_path_rate": Range(0, 1, hi_open=True), "ffn": Choice(("mlp", "swiglu")),
        "patch_size": POSITIVE_INT, "img_size": POSITIVE_INT, "embed_dim": POSITIVE_INT, "depth": POSITIVE_INT,
        "num_heads": POSITIVE_INT, "layerscale_init": NON_NEGATIVE, "pos_embed_init_std": NON_NEGATIVE,
    },
    "lvdtool.train.config.HeadSection": {
        "prototypes": POSITIVE_INT, "hidden_dim": POSITIVE_INT, "bottleneck_dim": POSITIVE_INT, "nlayers": POSITIVE_INT,
        "prototype_gain": Choice(("trainable", "fixed")), "prototype_init": Choice(("default", "trunc_normal")),
        "prototype_layer": Choice(("normalized", "plain")),
    },
    "lvdtool.train.config.DinoSection": {
        "loss_weight": NON_NEGATIVE, "koleo_weight": NON_NEGATIVE, "centering": Choice(("softmax", "sinkhorn_knopp")),
        "center_momentum": PROBABILITY, "center_init": Choice(("zeros", "first_batch")), "sinkhorn_iterations": POSITIVE_INT,
        "student_temp": ABOVE_ZERO, "local_weight": NON_NEGATIVE, "koleo_group_size": Range(2),
    },
    "lvdtool.train.config.IbotSection": {"loss_weight": NON_NEGATIVE, "mask_prob": PROBABILITY, "mask_ratio": PROBABILITY},
    "lvdtool.train.config.TeacherSection": {
        "momentum": PROBABILITY, "final_momentum": PROBABILITY, "warmup_temp": ABOVE_ZERO, "temp": ABOVE_ZERO,
        "warmup_temp_epochs": NON_NEGATIVE, "warmup_temp_min_iterations": NON_NEGATIVE,
    },
    "lvdtool.train.config.OptimSection": {
        "base_lr": ABOVE_ZERO, "reference_batch": POSITIVE_INT, "min_lr": NON_NEGATIVE, "warmup_epochs": NON_NEGATIVE,
        "warmup_min_iterations": NON_NEGATIVE, "lr_shape": Choice(("warmup_cosine", "ramp_constant", "warmup_constant")),
        "weight_decay": NON_NEGATIVE, "weight_decay_end": NON_NEGATIVE, "layerwise_decay": FRACTION,
        "patch_embed_lr_mult": NON_NEGATIVE, "clip_grad": NON_NEGATIVE, "freeze_last_layer_epochs": NON_NEGATIVE,
        "freeze_last_layer_iterations": NON_NEGATIVE, "betas": Range(0, 1, hi_open=True),
    },
    "lvdtool.train.config.ResolutionSpec": {
        "global_size": POSITIVE_INT, "local_size": POSITIVE_INT, "p": ABOVE_ZERO, "gram_size": POSITIVE_INT,
    },
    "lvdtool.train.config.CropsSection": {
        "global_crops_size": POSITIVE_INT, "local_crops_size": POSITIVE_INT, "n_local_crops": NON_NEGATIVE,
        "global_crops_scale": FRACTION, "local_crops_scale": FRACTION, "blur_probs": PROBABILITY, "flip_prob": PROBABILITY,
        "solarize_prob": PROBABILITY, "color_jitter_prob": PROBABILITY,
    },
    "lvdtool.train.config.DataSection": {
        "workers": NON_NEGATIVE, "decode_min_side": POSITIVE_INT, "verify": SIZE_OR_FULL,
        "augment_backend": Choice(("auto", "torch", "numba")),
    },
    "lvdtool.train.config.TrainSection": {
        "batch_size_per_gpu": POSITIVE_INT, "epochs": NON_NEGATIVE, "iterations": POSITIVE_INT, "epoch_length": POSITIVE_INT,
        "seed": NON_NEGATIVE, "log_every": POSITIVE_INT, "collapse_window": POSITIVE_INT,
        "collapse_tolerance": Range(0, 1, lo_open=True, hi_open=True), "tensorboard": Choice(("auto", "on", "off")),
    },
    "lvdtool.train.config.ParallelSection": {
        "device": Choice(("auto", "cpu", "cuda")), "precision": PRECISION, "peak_tflops": ABOVE_ZERO,
    },
    "lvdtool.train.config.CheckpointSection": {"every": POSITIVE_INT, "keep": POSITIVE_INT},
    "lvdtool.train.config.GramSection": {
        "weight": NON_NEGATIVE, "ramp_start": NON_NEGATIVE, "ramp_iterations": NON_NEGATIVE, "crop_factor": Range(1),
        "crop_size": POSITIVE_INT, "load_ema_iteration": NON_NEGATIVE, "refresh_every": NON_NEGATIVE,
        "first_refresh": NON_NEGATIVE, "max_refreshes": NON_NEGATIVE,
    },
    "lvdtool.train.config.PresetSection": {"kind": Choice(("paper", "lvd", "test", "custom"))},
}


def schema_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def rules_of(cls: type) -> dict[str, Rule]:
    """The rules of a schema, its bases' included (a subclass's own win)."""
    out: dict[str, Rule] = {}
    for base in reversed(cls.__mro__):
        out.update(RULES.get(schema_name(base), {}))
    return out


RulesOf = Callable[[type], dict[str, Rule]]

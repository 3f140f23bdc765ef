"""Typed configuration of `lvd pretrain` (the Hydra schema of configs/pretrain.yaml).

Recipe presets per architecture live in configs/recipe/*.yaml and set these fields; every field
can be overridden as `section.key=value`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from lvdtool.errors import ConfigError
from lvdtool.ssl.loss_weights import SSLLossWeights
from lvdtool.ssl.meta_arch import HeadConfig, MetaArchConfig


@dataclass
class ModelSection:
    arch: str = "vit_s14"  # a registered architecture (lvdtool.models.list_archs())
    drop_path_rate: float = 0.1
    # Structural overrides of the registered arch; null keeps the arch's value.
    ffn: str | None = None  # mlp | swiglu
    patch_size: int | None = None
    img_size: int | None = None  # side the stored position embedding covers
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    layerscale_init: float | None = None  # LayerScale init (arch default 1e-5)
    pos_embed_init_std: float | None = None  # position-embedding init std (arch default 0.02)

    def backbone_overrides(self) -> dict[str, Any]:
        fields = ("ffn", "patch_size", "img_size", "embed_dim", "depth", "num_heads", "layerscale_init",
                  "pos_embed_init_std")
        out: dict[str, Any] = {k: getattr(self, k) for k in fields if getattr(self, k) is not None}
        out["drop_path_rate"] = self.drop_path_rate
        return out


@dataclass
class HeadSection:
    prototypes: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    nlayers: int = 3
    prototype_gain: str = "trainable"  # trainable (DINOv2: weight_g trains, weight-decayed) | fixed (DINO v1)
    prototype_init: str = "default"  # default (nn.Linear's init, DINOv2) | trunc_normal (std 0.02)
    # normalized (DINOv2: weight-normalised, keys weight_v/weight_g) | plain (DINOv3: nn.Linear
    # without bias or weight norm, key last_layer.weight; prototype_gain does not apply)
    prototype_layer: str = "normalized"

    def head_config(self) -> HeadConfig:
        return HeadConfig(self.prototypes, self.hidden_dim, self.bottleneck_dim, self.nlayers,
                          self.prototype_gain, self.prototype_init, self.prototype_layer)


@dataclass
class DinoSection(HeadSection):
    loss_weight: float = 1.0
    koleo_weight: float = 0.1
    centering: str = "softmax"  # softmax | sinkhorn_knopp (used for both objectives)
    center_momentum: float = 0.9
    center_init: str = "zeros"  # zeros (official) | first_batch: the centre starts at the first batch's mean
    sinkhorn_iterations: int = 3
    student_temp: float = 0.1
    # DINOv3's local-crop reweighting: the local crops' pairs x local_weight (1: DINOv2's average
    # over all pairs). local_weight_ramp: go from 1 to local_weight along the Gram weight's ramp
    # (gram.ramp_start, gram.ramp_iterations), as DINOv3's Gram stage does (1 -> 0.5).
    local_weight: float = 1.0
    local_weight_ramp: bool = False
    # Distributed KoLeo (DINOv3 high-res adaptation: 16): neighbours within groups of this many
    # samples of the global batch (a multiple of the per-rank batch dividing the global batch).
    # null: the plain per-rank KoLeo.
    koleo_group_size: int | None = None


@dataclass
class IbotSection(HeadSection):
    loss_weight: float = 1.0
    separate_head: bool = False  # false: the DINO head also serves iBOT (tied)
    mask_prob: float = 0.5  # fraction of global crops that get masked
    mask_ratio: list[float] = field(default_factory=lambda: [0.1, 0.5])


@dataclass
class TeacherSection:
    momentum: float = 0.992
    final_momentum: float = 1.0
    warmup_temp: float = 0.04
    temp: float = 0.07
    warmup_temp_epochs: float = 30.0
    # Floors in iterations (0: none). A warm-up given in epochs shrinks to a few iterations on a
    # small dataset; the floor keeps its shape (capped at half the run).
    warmup_temp_min_iterations: int = 0


@dataclass
class OptimSection:
    base_lr: float = 0.004  # at a total batch of reference_batch; sqrt scaling
    reference_batch: int = 1024
    min_lr: float = 1e-6
    warmup_epochs: float = 10.0
    warmup_min_iterations: int = 0  # floor of the lr warm-up in iterations (capped at half the run)
    # warmup_cosine (DINOv2): linear warm-up to the peak, then a half cosine down to min_lr.
    # ramp_constant (DINOv3 high-res adaptation and distillation): a half-cosine ramp from 0 up to
    # the peak over the warm-up length, then constant (min_lr unused).
    # warmup_constant (DINOv3 pretraining and Gram stage, "schedules v2"): linear warm-up from 0 to
    # the peak, then constant (min_lr unused).
    lr_shape: str = "warmup_cosine"
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    layerwise_decay: float = 0.9
    patch_embed_lr_mult: float = 0.2
    clip_grad: float = 3.0  # max total gradient norm; 0 disables clipping
    token_weight_decay: bool = True  # decay CLS/register/mask tokens and pos_embed (true: the official rule)
    freeze_last_layer_epochs: float = 1.0
    freeze_last_layer_iterations: int | None = None  # the freeze in iterations (DINOv3: 5000); overrides the epochs
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class ResolutionSpec:
    """One (global, local) crop-size pair of a mixed-resolution phase and its probability."""

    global_size: int = 224
    local_size: int = 98
    p: float = 1.0
    gram_size: int | None = None  # Gram-teacher crop (DINOv3: 768 for 512, 1152 for 768); null: gram.crop_factor


@dataclass
class CropsSection:
    global_crops_size: int = 224
    local_crops_size: int = 98
    n_local_crops: int = 8
    global_crops_scale: list[float] = field(default_factory=lambda: [0.32, 1.0])
    local_crops_scale: list[float] = field(default_factory=lambda: [0.05, 0.32])
    blur_as_trained: bool = False  # true: the blur probabilities the released models had
    blur_probs: list[float] = field(default_factory=lambda: [1.0, 0.1, 0.5])  # global 1, global 2, local
    flip_prob: float = 0.5  # horizontal flip (0 for data that is not mirror-invariant: text, digits)
    solarize_prob: float = 0.2  # second global crop only
    color_jitter_prob: float = 0.8
    # Mixed resolution (DINOv3 high-res adaptation): each iteration draws one pair, with these
    # probabilities, from a generator seeded by (train.seed, iteration): the same pair on every
    # rank, the same after a resume. Empty: always (global_crops_size, local_crops_size).
    resolutions: list[ResolutionSpec] = field(default_factory=list)


@dataclass
class DataSection:
    images: str = MISSING  # images artifact
    selection: str | None = None  # selection artifact: train on its keys only
    workers: int = 8  # DataLoader decode/augment processes per rank
    decode_min_side: int | None = None  # JPEG draft decoding target; null: 2 x global crop size
    verify: str = "size"  # inputs checked at start: size (sizes, row counts) or full (+ sha256; reads every tar)
    # CPU multi-crop: auto (numba where installed, else torch) | torch | numba (data/augment/backend.py).
    # A run stores what auto resolved to; a resume that would resolve otherwise is refused.
    augment_backend: str = "auto"


@dataclass
class TrainSection:
    batch_size_per_gpu: int = 64
    epochs: float = 100.0  # passes over the dataset (see epoch_length); ignored if iterations is set
    iterations: int | None = None
    epoch_length: int | None = None  # iterations per epoch; null: images // global batch (1250: paper)
    seed: int = 0
    log_every: int = 10
    tensorboard: str = "auto"  # auto | on | off: event files in <run>/tensorboard/ (train/tensorboard_log.py)
    # The collapse guard (lvdtool.train.collapse_guard): warn when, for collapse_window iterations,
    # the DINO loss stays within collapse_tolerance of ln K or the teacher targets carry no image
    # information; stop_on_collapse raises instead of only warning.
    stop_on_collapse: bool = False
    collapse_window: int | None = None  # iterations; null: 10% of the run, within [100, 2000]
    collapse_tolerance: float = 0.01


@dataclass
class ParallelSection:
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 on cuda, fp32 on cpu) | fp32 | bf16
    activation_checkpointing: bool = False
    compile: bool = False  # torch.compile each block
    peak_tflops: float | None = None  # accelerator peak for MFU; null: known GPUs only


@dataclass
class CheckpointSection:
    every: int = 2500  # iterations between checkpoints (and one at the end)
    keep: int = 3  # complete checkpoints kept


@dataclass
class GramSection:
    """Gram anchoring (DINOv3): the student's patch-similarity (Gram) matrices of its global crops
    are pulled towards those of a frozen Gram teacher that sees the same crops at a higher
    resolution, without photometric distortion. Iterations are the run's own (0-based)."""

    enabled: bool = False
    weight: float = 1.0  # the weight after the ramp (DINOv3: 2.0 in the Gram stage, 1.5 in high-res adaptation)
    ramp_start: int = 0  # weight 0 before this iteration
    ramp_iterations: int = 0  # cosine ramp 0 -> weight (0: the full weight from ramp_start)
    crop_factor: float = 2.0  # Gram crop = factor x the global crop, rounded to the patch size
    crop_size: int | None = None  # an explicit Gram crop size (single resolution only); overrides the factor
    # Where the Gram teacher starts: null = the run's own teacher as it starts (the --from teacher
    # in hires-adapt), or a run directory / backbone file (DINOv3's gram.ckpt).
    teacher: str | None = None
    load_ema_iteration: int | None = None  # copy the EMA teacher in before this iteration (DINOv3 it_load_ema_teacher)
    # Refreshes: after iteration it, copy the EMA teacher when (it+1) >= first_refresh,
    # (it+1) % refresh_every == 0 and fewer than max_refreshes happened (refresh_every 0: never).
    refresh_every: int = 0
    first_refresh: int = 0
    max_refreshes: int | None = None  # null: no limit


@dataclass
class PresetSection:
    """Which recipe preset the config came from (set by configs/recipe/*.yaml), for the start-up
    line and the manifest: `paper` presets train as the paper does, `lvd` presets are lvd's own."""

    name: str = "custom"
    kind: str = "custom"  # paper | lvd | test | custom
    note: str = ""


@dataclass
class DistillSection:
    """`lvd distill`: a frozen teacher and the students trained from it (the model section then
    describes the students: drop path, overrides)."""

    teacher: str | None = None  # run directory (teacher backbone + heads) or backbone file
    students: list[str] = field(default_factory=list)  # registered archs, each trained on the same batches


STAGES = ("pretrain", "hires-adapt", "distill")
LR_SHAPES = ("warmup_cosine", "ramp_constant", "warmup_constant")


@dataclass
class PretrainConfig:
    out: str = MISSING  # run directory (a `checkpoint` artifact)
    stage: str = "pretrain"  # pretrain | hires-adapt | distill (set by each stage's YAML)
    init: str | None = None  # backbone weights for continued pretraining (heads start fresh)
    # A run directory whose newest checkpoint's teacher (backbone and heads) starts student and
    # teacher (hires-adapt), or a backbone file (heads fresh). Optimizer state is never carried.
    from_run: str | None = None
    init_centers: str = "reset"  # reset | carry: the source teacher's softmax centres
    distill: DistillSection = field(default_factory=DistillSection)
    model: ModelSection = field(default_factory=ModelSection)
    dino: DinoSection = field(default_factory=DinoSection)
    ibot: IbotSection = field(default_factory=IbotSection)
    teacher: TeacherSection = field(default_factory=TeacherSection)
    optim: OptimSection = field(default_factory=OptimSection)
    crops: CropsSection = field(default_factory=CropsSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    gram: GramSection = field(default_factory=GramSection)
    preset: PresetSection = field(default_factory=PresetSection)

    def meta_arch_config(self) -> MetaArchConfig:
        return MetaArchConfig(
            dino_head=self.dino.head_config(),
            ibot_head=self.ibot.head_config() if self.ibot.separate_head else None,
            centering=self.dino.centering,  # type: ignore[arg-type]
            center_momentum=self.dino.center_momentum,
            center_init=self.dino.center_init,
            sinkhorn_iterations=self.dino.sinkhorn_iterations,
            student_temp=self.dino.student_temp,
            weights=SSLLossWeights(self.dino.loss_weight, self.ibot.loss_weight, self.dino.koleo_weight),
            koleo_group_size=self.dino.koleo_group_size,
        )

    def validate(self) -> None:
        def bad(key: str, value: Any, why: str) -> ConfigError:
            return ConfigError(f"pretrain config {key}={value!r}: {why}")

        if self.train.batch_size_per_gpu < 1:
            raise bad("train.batch_size_per_gpu", self.train.batch_size_per_gpu, "must be >= 1")
        if self.train.iterations is not None and self.train.iterations < 1:
            raise bad("train.iterations", self.train.iterations, "must be >= 1")
        if self.train.iterations is None and self.train.epochs <= 0:
            raise bad("train.epochs", self.train.epochs, "must be > 0")
        if self.train.epoch_length is not None and self.train.epoch_length < 1:
            raise bad("train.epoch_length", self.train.epoch_length, "must be >= 1")
        if self.train.collapse_window is not None and self.train.collapse_window < 1:
            raise bad("train.collapse_window", self.train.collapse_window, "must be >= 1 (or null)")
        if not 0 < self.train.collapse_tolerance < 1:
            raise bad("train.collapse_tolerance", self.train.collapse_tolerance, "must be in (0, 1)")
        if self.dino.center_init not in ("zeros", "first_batch"):
            raise bad("dino.center_init", self.dino.center_init, "expected zeros or first_batch")
        for key in ("dino", "ibot"):
            head = getattr(self, key)
            if head.prototype_gain not in ("trainable", "fixed"):
                raise bad(f"{key}.prototype_gain", head.prototype_gain, "expected trainable or fixed")
            if head.prototype_init not in ("default", "trunc_normal"):
                raise bad(f"{key}.prototype_init", head.prototype_init, "expected default or trunc_normal")
            if head.prototype_layer not in ("normalized", "plain"):
                raise bad(f"{key}.prototype_layer", head.prototype_layer, "expected normalized or plain")
        for key in ("optim.warmup_min_iterations", "teacher.warmup_temp_min_iterations"):
            section, name = key.split(".")
            if getattr(getattr(self, section), name) < 0:
                raise bad(key, getattr(getattr(self, section), name), "must be >= 0")
        if self.train.log_every < 1:
            raise bad("train.log_every", self.train.log_every, "must be >= 1")
        if self.checkpoint.every < 1 or self.checkpoint.keep < 1:
            raise bad("checkpoint.every/keep", (self.checkpoint.every, self.checkpoint.keep), "must be >= 1")
        if self.parallel.precision not in ("auto", "fp32", "bf16"):
            raise bad("parallel.precision", self.parallel.precision, "expected auto, fp32 or bf16")
        if self.parallel.device not in ("auto", "cpu", "cuda"):
            raise bad("parallel.device", self.parallel.device, "expected auto, cpu or cuda")
        if self.data.workers < 0:
            raise bad("data.workers", self.data.workers, "must be >= 0")
        if len(self.ibot.mask_ratio) != 2 or len(self.optim.betas) != 2:
            raise bad("ibot.mask_ratio/optim.betas", (self.ibot.mask_ratio, self.optim.betas), "need 2 values each")
        if self.dino.centering not in ("softmax", "sinkhorn_knopp"):
            raise bad("dino.centering", self.dino.centering, "expected softmax or sinkhorn_knopp")
        if self.stage not in STAGES:
            raise bad("stage", self.stage, f"expected one of {', '.join(STAGES)}")
        if self.optim.lr_shape not in LR_SHAPES:
            raise bad("optim.lr_shape", self.optim.lr_shape, f"expected one of {', '.join(LR_SHAPES)}")
        freeze = self.optim.freeze_last_layer_iterations
        if freeze is not None and freeze < 0:
            raise bad("optim.freeze_last_layer_iterations", freeze, "must be >= 0 (or null: use the epochs)")
        if self.optim.freeze_last_layer_epochs < 0:
            raise bad("optim.freeze_last_layer_epochs", self.optim.freeze_last_layer_epochs, "must be >= 0")
        for key in ("optim.weight_decay", "optim.weight_decay_end"):
            if getattr(self.optim, key.split(".")[1]) < 0:
                raise bad(key, getattr(self.optim, key.split(".")[1]), "must be >= 0")
        for key in ("teacher.momentum", "teacher.final_momentum"):
            if not 0 <= getattr(self.teacher, key.split(".")[1]) <= 1:
                raise bad(key, getattr(self.teacher, key.split(".")[1]), "must be in [0, 1] (equal values: constant)")
        if self.init_centers not in ("reset", "carry"):
            raise bad("init_centers", self.init_centers, "expected reset or carry")
        if self.init and self.from_run:
            raise bad("init", self.init, "give init (backbone only) or from_run (backbone and heads), not both")
        for k, res in enumerate(self.crops.resolutions):
            if res.global_size < 1 or res.local_size < 1 or not res.p > 0:
                raise bad(f"crops.resolutions[{k}]", res, "needs global_size, local_size >= 1 and p > 0")
        self._validate_dinov3(bad)
        if self.stage == "distill":
            if not self.distill.teacher:
                raise bad("distill.teacher", self.distill.teacher, "distill needs a teacher run (--teacher)")
            if not self.distill.students:
                raise bad("distill.students", self.distill.students, "distill needs at least one student (--arch)")
            if len(set(self.distill.students)) != len(self.distill.students):
                raise bad("distill.students", self.distill.students, "a student arch is named twice")


    def _validate_dinov3(self, bad: Any) -> None:
        """Local DINO weight, distributed KoLeo and Gram anchoring keys."""
        dino, gram = self.dino, self.gram
        if dino.local_weight < 0:
            raise bad("dino.local_weight", dino.local_weight, "must be >= 0")
        if dino.local_weight_ramp and not gram.enabled:
            raise bad("dino.local_weight_ramp", True, "follows the Gram weight's ramp: needs gram.enabled=true")
        group = dino.koleo_group_size
        if group is not None and (group < 2 or group % self.train.batch_size_per_gpu):
            raise bad("dino.koleo_group_size", group, f"must be >= 2 and a multiple of train.batch_size_per_gpu="
                      f"{self.train.batch_size_per_gpu} (or null: per-rank KoLeo)")
        if not gram.enabled:
            return
        if self.stage == "distill":
            raise bad("gram.enabled", True, "Gram anchoring trains a pretrain or hires-adapt run, not distill")
        if gram.weight < 0:
            raise bad("gram.weight", gram.weight, "must be >= 0")
        for key in ("ramp_start", "ramp_iterations", "refresh_every", "first_refresh"):
            if getattr(gram, key) < 0:
                raise bad(f"gram.{key}", getattr(gram, key), "must be >= 0")
        if gram.max_refreshes is not None and gram.max_refreshes < 0:
            raise bad("gram.max_refreshes", gram.max_refreshes, "must be >= 0 (or null: no limit)")
        if gram.load_ema_iteration is not None and gram.load_ema_iteration < 0:
            raise bad("gram.load_ema_iteration", gram.load_ema_iteration, "must be >= 0 (or null)")
        if not gram.crop_factor >= 1:
            raise bad("gram.crop_factor", gram.crop_factor, "must be >= 1 (the Gram crop is at least the global crop)")
        if gram.crop_size is not None:
            if self.crops.resolutions:
                raise bad("gram.crop_size", gram.crop_size, "with crops.resolutions give each entry a gram_size "
                          "(or use gram.crop_factor)")
            if gram.crop_size < self.crops.global_crops_size:
                raise bad("gram.crop_size", gram.crop_size, f"is smaller than the global crop {self.crops.global_crops_size}")


# Keys that may change between a run and its resume (speed, logging, bookkeeping only).
RESUME_IGNORES = (
    "out",  # a run directory may be moved
    "data.workers",
    "data.verify",
    "train.log_every",
    "train.tensorboard",
    "train.stop_on_collapse",
    "train.collapse_window",
    "train.collapse_tolerance",
    "checkpoint.every",
    "checkpoint.keep",
    "parallel.device",
    "parallel.precision",
    "parallel.activation_checkpointing",
    "parallel.compile",
    "parallel.peak_tflops",
)

# Keys added after runs existed whose manifests lack them, and what those runs trained with: a
# manifest without the key reads as this value when a resume is compared (not as the new default).
LEGACY_VALUES = {
    "data.augment_backend": "torch",  # every run before the numba backend rendered its crops with torch
}

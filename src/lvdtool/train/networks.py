"""The networks of a training stage, built from its config, and where their weights start.

- pretrain: student and teacher at random init (train.seed), or a backbone file (`init`).
- hires-adapt: `from_run`, another run's teacher (backbone and heads) in student and teacher;
  the stored position-embedding grid is resized once when it is smaller than the new crop.
- distill: a frozen teacher rebuilt from its run's config and checkpoint, and the students
  (random init), all with the teacher's head sizes.
Every builder returns the start-up lines that say what was initialised from where.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from lvdtool.artifacts.manifest import InputRef
from lvdtool.errors import ConfigError
from lvdtool.models import build_backbone, load_backbone
from lvdtool.models.pos_embed import interpolate_pos_embed
from lvdtool.ssl.distill_arch import DistillMetaArch
from lvdtool.ssl.meta_arch import SSLMetaArch, SSLNetwork
from lvdtool.train.build import build_meta_arch, load_init_weights
from lvdtool.train.config import DinoSection, IbotSection, ModelSection, PretrainConfig
from lvdtool.train.source_run import HEADLESS_CAVEAT, SourceRun, open_source

INIT_CAVEAT = (
    "init: backbone weights loaded into student and teacher; the DINO/iBOT heads start from random "
    "init, and fresh heads on a trained backbone can collapse early (see docs/pretrain.md)"
)


@dataclass
class Networks:
    meta: SSLMetaArch | DistillMetaArch
    inputs: list[InputRef] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # start-up lines: what starts from where
    caveats: list[str] = field(default_factory=list)


def _typed(section: type, values: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(section)}
    return section(**{k: v for k, v in values.items() if k in names})


def fit_pos_embed(state: dict[str, torch.Tensor], network: SSLNetwork, source: str) -> tuple[dict[str, torch.Tensor], str | None]:
    """Resize a stored position-embedding grid smaller than the network's, once, with the rule the
    official checkpoints use (bicubic, the backbone's offset / antialias convention)."""
    key = "backbone.pos_embed"
    if key not in state:
        return state, None
    stored, own = state[key], network.backbone.pos_embed
    if stored.shape == own.shape:
        return state, None
    prefix = 1
    old, new = math.isqrt(stored.shape[1] - prefix), math.isqrt(own.shape[1] - prefix)
    if old > new or stored.shape[-1] != own.shape[-1]:
        raise ConfigError(f"{source}: position embedding {tuple(stored.shape)} does not fit the model's {tuple(own.shape)}")
    config = network.backbone.config
    resized = interpolate_pos_embed(stored, new, new, config.interpolate_offset, config.interpolate_antialias, prefix)
    return {**state, key: resized}, f"position embedding resized once from a {old}x{old} to a {new}x{new} grid"


def _load_strict(target: Any, state: dict[str, torch.Tensor], what: str, source: SourceRun) -> None:
    try:
        target(state)
    except RuntimeError as exc:
        first = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3])[:300]
        raise ConfigError(f"{source.path}: its {what} does not fit this run's networks ({first}); the model, "
                          "dino and ibot head settings come from the source run and must not be overridden") from None


def pretrain_networks(cfg: PretrainConfig, resuming: bool, previous_inputs: list[InputRef]) -> Networks:
    """pretrain and hires-adapt: one student/teacher pair (and the Gram teacher with
    gram.enabled). Weights from `init` / `from_run` / `gram.teacher` are read only on a fresh
    start; a resume takes everything from its own checkpoint."""
    built = _student_teacher(cfg, resuming, previous_inputs)
    if cfg.gram.enabled:
        _start_gram_teacher(cfg, built, resuming, previous_inputs)
    return built


def _start_gram_teacher(cfg: PretrainConfig, built: Networks, resuming: bool, previous_inputs: list[InputRef]) -> None:
    """The Gram teacher starts as the run's starting teacher, or as `gram.teacher`'s teacher backbone."""
    meta = built.meta
    if resuming:
        built.inputs += [ref for ref in previous_inputs if ref.role == "gram_teacher"]
        return
    if not cfg.gram.teacher:
        meta.load_gram_teacher_from_ema(refresh=False)
        where = "the run's starting teacher"
    else:
        source = open_source(cfg.gram.teacher, role="gram_teacher")
        built.inputs.append(source.ref)
        state, _ = fit_pos_embed(source.teacher_state(), meta.student, str(source.path))
        backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        _load_strict(lambda s: meta.gram_teacher.backbone.load_state_dict(s, strict=True), backbone,
                     "teacher backbone (gram.teacher)", source)
        where = source.describe()
    gram = cfg.gram
    refresh = (f"refreshed from the EMA teacher every {gram.refresh_every} iterations from {gram.first_refresh}"
               + (f", {gram.max_refreshes} refreshes at most" if gram.max_refreshes is not None else "")
               if gram.refresh_every else "never refreshed")
    load = f"; the EMA teacher copied in before iteration {gram.load_ema_iteration}" if gram.load_ema_iteration is not None else ""
    built.lines.append(f"gram: Gram teacher <- {where}{load}; {refresh}")


def _student_teacher(cfg: PretrainConfig, resuming: bool, previous_inputs: list[InputRef]) -> Networks:
    meta = build_meta_arch(cfg)
    built = Networks(meta)
    if cfg.init:
        built.inputs.append(load_init_weights(meta, cfg.init))
        if not resuming:
            built.caveats.append(INIT_CAVEAT)
    if not cfg.from_run:
        return built
    if resuming:
        built.inputs += [ref for ref in previous_inputs if ref.role == "from"]
        return built
    source = open_source(cfg.from_run, role="from")
    built.inputs.append(source.ref)
    carry = cfg.init_centers == "carry"
    state, resized = fit_pos_embed(source.teacher_state(with_centres=carry), meta.student, str(source.path))
    if source.has_heads:
        _load_strict(meta.load_network_state, state, "teacher", source)
        what = "backbone and heads" + (", centres carried" if carry else ", centres reset")
    else:
        backbone = {k.removeprefix("backbone."): v for k, v in state.items()}
        _load_strict(meta.load_backbone_weights, backbone, "backbone", source)
        what = "backbone only"
        built.caveats.append(HEADLESS_CAVEAT)
    built.lines.append(f"init: student and teacher <- {source.describe()}: {what}; optimizer fresh"
                       + (f"; {resized}" if resized else ""))
    return built


def distill_networks(cfg: PretrainConfig, resuming: bool) -> Networks:
    """The frozen teacher (its run's architecture and heads, or a backbone file with fresh heads)
    and one student per `distill.students` arch, with the teacher's head sizes and patch size."""
    source = open_source(cfg.distill.teacher, role="teacher")
    meta_config = cfg.meta_arch_config()
    caveats = []
    if source.has_heads:
        sections = source.network_config()
        model = _typed(ModelSection, sections["model"])
        dino, ibot = _typed(DinoSection, sections["dino"]), _typed(IbotSection, sections["ibot"])
        backbone = build_backbone(model.arch, **model.backbone_overrides())
        heads = (dino.head_config().build(backbone.embed_dim),
                 ibot.head_config().build(backbone.embed_dim) if ibot.separate_head else None)
        teacher = SSLNetwork(backbone, *heads)
        _load_strict(lambda s: teacher.load_state_dict(s, strict=True), source.teacher_state(), "teacher", source)
        arch = model.arch
    else:
        backbone = load_backbone(source.path)
        ibot_head = meta_config.ibot_head.build(backbone.embed_dim) if meta_config.ibot_head else None
        teacher = SSLNetwork(backbone, meta_config.dino_head.build(backbone.embed_dim), ibot_head)
        arch = backbone.config.arch
        caveats.append("distill: " + HEADLESS_CAVEAT.replace("they start from random init", "the teacher's heads are random projections (seeded by train.seed)"))
    teacher.eval()
    torch.manual_seed(cfg.train.seed)
    students = {}
    for name in cfg.distill.students:
        student_backbone = build_backbone(name, **cfg.model.backbone_overrides())
        if student_backbone.config.patch_size != backbone.config.patch_size:
            raise ConfigError(f"distill: student {name} has patch size {student_backbone.config.patch_size}, the teacher "
                              f"{backbone.config.patch_size}; students must share the teacher's patch size")
        dim = student_backbone.embed_dim
        ibot_head = meta_config.ibot_head.build(dim) if meta_config.ibot_head else None
        students[name] = SSLNetwork(student_backbone, meta_config.dino_head.build(dim), ibot_head)
    meta = DistillMetaArch(teacher, students, meta_config)
    inputs = [source.ref]
    start = "resumed from their checkpoints" if resuming else f"random init (train.seed={cfg.train.seed})"
    lines = [f"distill: frozen teacher {arch} <- {source.describe()}; students {', '.join(students)}: {start}, "
             f"{cfg.dino.prototypes} prototypes (the teacher's), no masking, drop path {cfg.model.drop_path_rate:g}; "
             "the exported backbone.pth of each student is its EMA"]
    return Networks(meta, inputs, lines, caveats)

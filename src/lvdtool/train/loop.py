"""The DINOv2 pretraining loop: setup, resume, steps, logging, checkpoints.

One iteration: set lr / wd from the schedules, load this rank's batch, seed the model RNG from
(seed, iteration, rank), forward student and teacher, check that the losses (averaged over ranks)
are finite, backward, clip, AdamW step, teacher EMA. Every random draw is a function of the seed
and the position, so a resumed run repeats an uninterrupted one (bitwise on CPU).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lvdtool.console import console, progress
from lvdtool.data.augment.backend import resolve_backend
from lvdtool.data.pretrain_loader import build_pretrain_loader
from lvdtool.data.sampler import STREAM_MODEL, DataCursor, derive_seed
from lvdtool.errors import TrainingError
from lvdtool.models import describe_backbone
from lvdtool.ssl.gram import GramRefresh
from lvdtool.ssl.meta_arch import LOSS_NAMES
from lvdtool.artifacts.manifest import MANIFEST_NAME, InputRef, read_manifest
from lvdtool.train.build import build_training_data, step_shape
from lvdtool.train.checkpoint import BACKBONE_NAME, CheckpointStore, checkpoint_name
from lvdtool.train.collapse_guard import CollapseGuard, default_window, teacher_information
from lvdtool.train.config import PretrainConfig
from lvdtool.train.distributed import DistEnv, init_distributed
from lvdtool.train.flops import device_peak_flops, pretrain_flops_per_image
from lvdtool.train.metrics import METRICS_NAME, MetricsLog, Throughput
from lvdtool.train.networks import distill_networks, pretrain_networks
from lvdtool.train.optim import build_optimizer
from lvdtool.train.parallelize import ParallelPlan, parallelize, resolve_precision
from lvdtool.train.plan import TrainPlan, build_run_schedules, check_koleo_group, make_plan
from lvdtool.train.run_dir import prepare_run_dir, release_run_dir, write_run_manifest
from lvdtool.train.step import batch_to_device, train_step
from lvdtool.train.tensorboard_log import open_tensorboard

@dataclass
class RunSummary:
    out: str
    iterations: int
    start_iteration: int
    resumed_from: str | None
    images_per_s: float = 0.0
    seconds: float = 0.0
    last: dict[str, float] = field(default_factory=dict)
    backbone: str | None = None
    complete: bool = False

    def as_rows(self) -> dict[str, Any]:
        rows: dict[str, Any] = {
            "iterations": f"{self.start_iteration} -> {self.iterations}",
            "resumed from": self.resumed_from or "-",
            "seconds": round(self.seconds, 1),
            "images/s": round(self.images_per_s, 1),
        }
        rows.update({f"last.{k}": v for k, v in self.last.items()})
        rows["backbone"] = self.backbone or "-"
        return rows


PRESET_KINDS = {
    "paper": "the paper's recipe, unchanged",
    "lvd": "lvd's preset, not the paper's",
    "test": "a test preset",
    "custom": "no named preset",
}


@dataclass
class Trainee:
    """One trained network with its own optimizer and checkpoint artifact: the student of a
    pretrain / hires-adapt run (the run directory itself), or one distilled student (out/<arch>)."""

    name: str
    module: nn.Module  # what its checkpoints hold: the meta-arch, or a distilled StudentPair
    network: nn.Module  # the network that trains
    store: CheckpointStore
    optimizer: torch.optim.Optimizer | None = None

    @property
    def run_dir(self) -> Path:
        return self.store.run_dir


class Pretrainer:
    """The one training loop of pretrain, hires-adapt and distill (`cfg.stage`)."""

    def __init__(self, cfg: PretrainConfig, resolved: dict[str, Any], env: DistEnv, overwrite: bool = False) -> None:
        cfg.validate()
        # The CPU augmentation backend is part of the run's identity (its crops differ from the
        # other backend's by float rounding): "auto" is stored as what it resolved to.
        cfg.data.augment_backend = resolve_backend(cfg.data.augment_backend)
        resolved.setdefault("data", {})["augment_backend"] = cfg.data.augment_backend
        self.cfg, self.resolved, self.env = cfg, resolved, env
        self.out = Path(cfg.out)
        self.distilling = cfg.stage == "distill"
        self.say = console.print if env.is_main else (lambda *a, **k: None)
        own = tuple(cfg.distill.students) if self.distilling else ()
        env.run_on_main(lambda: prepare_run_dir(self.out, resolved, overwrite, cfg.stage, own))
        self._stores = {name: CheckpointStore(self.out / name if name else self.out, env, cfg.checkpoint.keep)
                        for name in (own or ("",))}
        for store in self._stores.values():
            store.remove_partial()
        env.barrier()
        self.previous_inputs = self._previous_inputs()
        self._setup()

    def _previous_inputs(self) -> list[InputRef]:
        """The inputs recorded by an earlier start of this run (a resume keeps its source's record)."""
        if not (self.out / MANIFEST_NAME).is_file():
            return []  # a fresh run
        return list(read_manifest(self.out).inputs)

    # ---- setup ----------------------------------------------------------------------------------

    def _resume_point(self) -> int | None:
        """The newest iteration with a complete checkpoint in every trainee's store (students are
        saved together and pruned only after all are saved, so a kill between two students'
        saves leaves a common older one)."""
        common: set[int] | None = None
        for store in self._stores.values():
            done = {it for it, _ in store.complete()}
            common = done if common is None else common & done
        return max(common) if common else None

    def _setup(self) -> None:
        cfg, env = self.cfg, self.env
        resume_at = self._resume_point()
        self.resume_path = (next(iter(self._stores.values())).dir / checkpoint_name(resume_at)
                            if resume_at is not None else None)
        resume_state = CheckpointStore.read_state(self.resume_path) if self.resume_path else None
        if self.distilling:
            built = distill_networks(cfg, resuming=resume_state is not None)
        else:
            built = pretrain_networks(cfg, resuming=resume_state is not None, previous_inputs=self.previous_inputs)
        self.meta = built.meta
        networks = self.meta.trained_networks()
        self.backbone_cfg = backbone_cfg = networks[0].backbone.config
        self.data = build_training_data(cfg, backbone_cfg.patch_size, self.out, env)
        self.inputs = list(self.data.inputs) + built.inputs
        n_images = len(self.data.table)
        self.plan = TrainPlan.from_dict(resume_state["plan"]) if resume_state else make_plan(cfg, n_images, env.world_size)
        check_koleo_group(cfg, env.world_size)
        self.param_dtype = resolve_precision(cfg.parallel.precision, env.device)
        plan = ParallelPlan(env.device, env.world_size, self.param_dtype,
                            cfg.parallel.activation_checkpointing, cfg.parallel.compile)
        parallelize(self.meta, plan)
        if self.distilling:
            pairs = [(name, self.meta.pairs[name]) for name in self.meta.names]
            self.trainees = [Trainee(name, pair, pair.student, self._stores[name]) for name, pair in pairs]
        else:
            self.trainees = [Trainee("", self.meta, self.meta.student, self._stores[""])]
        for trainee in self.trainees:
            trainee.optimizer = build_optimizer(trainee.network, trainee.network.backbone.config.depth, cfg.optim)
        self.optimizers = [t.optimizer for t in self.trainees]
        self.store = self.trainees[0].store
        self.start = DataCursor()
        if self.resume_path is not None:
            for trainee in self.trainees:
                trainee.store.load(trainee.store.dir / self.resume_path.name, trainee.module, trainee.optimizer)
            self.start = DataCursor.from_dict(resume_state["data"])
        self.schedules = build_run_schedules(self.plan, cfg)
        gram = cfg.gram
        self.gram_refresh = GramRefresh(gram.refresh_every, gram.first_refresh, gram.max_refreshes) if gram.enabled else None
        lr = self.schedules.lr
        self.lr_ramp = lr.cosine_iters if cfg.optim.lr_shape == "ramp_constant" else lr.warmup_iters
        self.guard = CollapseGuard(cfg.dino.prototypes, cfg.train.collapse_window or default_window(self.plan.total_iters),
                                   cfg.train.collapse_tolerance, grace=self.lr_ramp or 0)
        self.batch = cfg.train.batch_size_per_gpu
        self.global_batch = self.batch * env.world_size
        self.loader, self.sampler = build_pretrain_loader(
            self.data.dataset, self.batch, env.rank, env.world_size, self.start, cfg.data.workers,
            pin_memory=env.device.type == "cuda",
        )
        self.metrics = MetricsLog(self.out / METRICS_NAME, env.is_main,
                                  open_tensorboard(cfg.train.tensorboard, self.out, env.is_main, self.start.iteration))
        self.metrics.truncate_from(self.start.iteration)
        # MFU counts the pretraining step (student fwd+bwd on all crops, teacher fwd on the global
        # crops); a distillation step has another teacher, so no MFU is reported for it.
        self.flops_per_image = None if self.distilling else pretrain_flops_per_image(
            backbone_cfg, step_shape(cfg), cfg.dino.head_config(),
            cfg.ibot.head_config() if cfg.ibot.separate_head else None,
        )
        device_name = torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else "cpu"
        on_gpu = env.device.type == "cuda" and self.flops_per_image
        self.peak_flops = device_peak_flops(device_name, cfg.parallel.peak_tflops) if on_gpu else None
        self._announce(n_images)
        for line in built.lines if resume_state is None else []:
            self.say(line, soft_wrap=True)
        for caveat in built.caveats:
            self.say(f"[yellow]{caveat}[/yellow]", soft_wrap=True)
        if self.data.warning:
            self.say(f"[yellow]warning: {self.data.warning}[/yellow]", soft_wrap=True)
        self._write_manifest(self.start.iteration, complete=False)

    def _announce(self, n_images: int) -> None:
        per_data_epoch = n_images // self.global_batch
        archs = ", ".join(self.cfg.distill.students) if self.distilling else self.cfg.model.arch
        sizes = sorted({v.global_size for v in self.data.dataset.variants})
        crop = f"global crops {'/'.join(map(str, sizes))} px"
        self.say(
            f"{self.cfg.stage}: {archs} on {self.env.world_size} x {self.env.device.type} "
            f"({str(self.param_dtype).replace('torch.', '')}); {n_images} images, global batch {self.global_batch}: "
            f"{per_data_epoch} iterations per pass over the data; schedule epoch = {self.plan.epoch_length} "
            f"iterations; {self.plan.total_iters} iterations in total, peak lr {self.plan.peak_lr:.3g}; {crop}"
        )
        self.say(self._recipe_line())
        if self.resume_path is not None:
            self.say(f"resuming from {self.resume_path.name}: iteration {self.start.iteration}, data epoch "
                     f"{self.start.epoch}, {self.start.offset} images of it consumed")

    def _recipe_line(self) -> str:
        """Which preset is in force and the schedule it gives this run, in iterations."""
        cfg, sched = self.cfg, self.schedules
        lr_words = {"ramp_constant": "lr cosine ramp from 0, then constant, over",
                    "warmup_constant": "lr linear warm-up, then constant, over"}.get(cfg.optim.lr_shape, "lr warm-up")
        ema = "student EMA momentum" if self.distilling else "teacher momentum"
        kind = PRESET_KINDS.get(cfg.preset.kind, cfg.preset.kind)
        note = f": {cfg.preset.note}" if cfg.preset.note else ""
        return (
            f"recipe {cfg.preset.name} ({kind}){note}. This run: {lr_words} {self.lr_ramp} iterations; "
            f"teacher temperature {cfg.teacher.warmup_temp:g} -> {cfg.teacher.temp:g} over "
            f"{sched.teacher_temp.warmup_iters}; {ema} {cfg.teacher.momentum:g} -> "
            f"{cfg.teacher.final_momentum:g}; centre init {cfg.dino.center_init}; "
            f"{cfg.dino.prototypes} prototypes" + self._gram_words()
        )

    def _gram_words(self) -> str:
        cfg = self.cfg
        local = self.schedules.dino_local_weight
        words = ""
        if local is not None:
            change = f"{local.before:g} -> {local.after:g}" if local.before != local.after else f"{local.after:g}"
            words = f"; DINO local weight {change}"
        if not cfg.gram.enabled:
            return words
        sizes = "/".join(str(s) for s in sorted({v.augment.config.gram_crops_size for v in self.data.dataset.variants}))
        ramp = (f" from iteration {cfg.gram.ramp_start}, ramped over {cfg.gram.ramp_iterations}"
                if cfg.gram.ramp_start or cfg.gram.ramp_iterations else " constant")
        return f"{words}; Gram anchoring weight {cfg.gram.weight:g}{ramp}, Gram crops {sizes} px"

    def _extra(self, iteration: int, trainee: Trainee) -> dict[str, Any]:
        latest = trainee.store.latest()
        backbone = trainee.module.teacher.backbone  # the exported network: the teacher, or a student's EMA
        return {
            "iteration": iteration,
            "plan": self.plan.to_dict(),
            "latest_checkpoint": latest.name if latest else None,
            "model": {k: v for k, v in describe_backbone(backbone).items() if k != "config"},
            "flops_per_image": self.flops_per_image,
        }

    def _write_manifest(self, iteration: int, complete: bool) -> None:
        if not self.env.is_main:
            return
        if not self.distilling:
            trainee = self.trainees[0]
            backbone = self.out / BACKBONE_NAME if complete else None
            write_run_manifest(self.out, self.resolved, self.inputs, self._extra(iteration, trainee), complete,
                               backbone, stage=self.cfg.stage)
            return
        # distill: one checkpoint artifact per student (its config names its arch), and the run's
        # own manifest listing the students' backbones
        backbones = []
        for trainee in self.trainees:
            trainee.run_dir.mkdir(parents=True, exist_ok=True)
            resolved = {**self.resolved, "out": str(trainee.run_dir),
                        "model": {**self.resolved.get("model", {}), "arch": trainee.name}}
            backbone = trainee.run_dir / BACKBONE_NAME if complete else None
            write_run_manifest(trainee.run_dir, resolved, self.inputs, self._extra(iteration, trainee), complete,
                               backbone, stage=self.cfg.stage)
            backbones.append(Path(trainee.name) / BACKBONE_NAME)
        extra = {"iteration": iteration, "plan": self.plan.to_dict(), "students": [t.name for t in self.trainees]}
        write_run_manifest(self.out, self.resolved, self.inputs, extra, complete,
                           backbones if complete else None, stage=self.cfg.stage)

    # ---- steps ----------------------------------------------------------------------------------

    def _check_finite(self, iteration: int, values: dict[str, float]) -> None:
        """`values`: labelled scalars; components are listed before the total, so the message
        names the term that broke."""
        bad = [k for k in values if not math.isfinite(values[k])]
        if bad:
            latest = self.store.latest()
            kept = f"the last good checkpoint is {latest}" if latest else "no checkpoint was written"
            raise TrainingError(
                f"iteration {iteration}: the {bad[0]} is not finite ({values[bad[0]]}); stopped without "
                f"saving, {kept} (lower optim.base_lr, or check the data)"
            )

    def step(self, iteration: int, batch: dict[str, Any]) -> dict[str, float]:
        torch.manual_seed(derive_seed(self.cfg.train.seed, STREAM_MODEL, iteration, self.env.rank))
        if self.gram_refresh is not None and iteration == self.cfg.gram.load_ema_iteration:
            self.meta.load_gram_teacher_from_ema(refresh=False)  # DINOv3 it_load_ema_teacher: before the step
        logged = train_step(
            self.meta, self.optimizers, batch_to_device(batch, self.env.device), self.schedules.at(iteration),
            self.cfg.optim.clip_grad, lambda values: self._check_finite(iteration, values),
        )
        if self.gram_refresh is not None:
            if self.gram_refresh.after(iteration):  # after the step and its EMA update
                self.meta.load_gram_teacher_from_ema()
            logged["gram_refreshes"] = int(self.meta.gram_teacher.refreshes)
        logged["teacher_mi"] = teacher_information(logged)
        self._watch_collapse(iteration, logged)
        return logged

    def _watch_collapse(self, iteration: int, logged: dict[str, float]) -> None:
        # Every rank sees the same rank-averaged values, so every rank decides the same way.
        warning = self.guard.observe(iteration, logged)
        if warning is None:
            return
        if self.cfg.train.stop_on_collapse:
            latest = self.store.latest()
            kept = f"the last checkpoint is {latest}" if latest else "no checkpoint was written"
            raise TrainingError(f"{warning}. Stopped (train.stop_on_collapse=true); {kept}")
        self.say(f"[yellow]warning: {warning}[/yellow]", soft_wrap=True)

    def _save(self, iteration: int) -> None:
        cursor = self.sampler.order.cursor_at(iteration)
        state = {"data": cursor.to_dict(), "plan": self.plan.to_dict(), "seed": self.cfg.train.seed}
        for trainee in self.trainees:
            trainee.store.save(iteration, trainee.module, trainee.optimizer, state, prune=False)
        for trainee in self.trainees:  # pruned only once every trainee holds the new checkpoint
            trainee.store.prune()
        self.metrics.flush()
        self._write_manifest(iteration, complete=False)

    def run(self) -> RunSummary:
        total, start = self.plan.total_iters, self.start.iteration
        summary = RunSummary(str(self.out), total, start, self.resume_path.name if self.resume_path else None)
        self.meta.train()
        meter, started, images = Throughput(), time.perf_counter(), 0
        log_every, every = self.cfg.train.log_every, self.cfg.checkpoint.every
        batches = iter(self.loader)
        try:
            with progress() if self.env.is_main else _SilentBar() as bar:
                # plain lines (no terminal) come from _log, every log_every iterations, never by time
                task = bar.add_task(self.cfg.stage, total=total, completed=start, line_every_s=0)
                for iteration in range(start, total):
                    batch = next(batches)
                    logged = self.step(iteration, batch)
                    meter.step(self.global_batch)
                    images += self.global_batch
                    last = iteration + 1 == total
                    bar.advance(task)  # first, so that the line of iteration i reads (i + 1)/total
                    if iteration % log_every == 0 or last:
                        self._log(iteration, batch["epoch"], logged, meter, bar, task)
                        summary.last = {k: logged[k] for k in (*LOSS_NAMES, "gram") if k in logged}
                    if (iteration + 1) % every == 0 or last:
                        self._save(iteration + 1)
        finally:
            del batches  # stops the DataLoader workers
            self.metrics.close()
        summary.seconds = time.perf_counter() - started
        summary.images_per_s = images / summary.seconds if images else 0.0
        self._write_manifest(total, complete=True)
        summary.backbone = ", ".join(str(t.run_dir / BACKBONE_NAME) for t in self.trainees)
        summary.complete = True
        return summary

    def _log(self, iteration: int, epoch: int, logged: dict[str, float], meter: Throughput, bar: Any, task: Any) -> None:
        rate, step_s = meter.read()
        record: dict[str, Any] = {"iteration": iteration, "epoch": epoch, **logged,
                                  "images_per_s": rate, "step_s": step_s}
        if self.peak_flops:
            record["mfu"] = self.flops_per_image * rate / self.env.world_size / self.peak_flops
        self.metrics.write(record)
        mfu = f" mfu {record['mfu']:.1%}" if "mfu" in record else ""
        gram = f" gram {logged['gram']:.4f} x {logged['gram_weight']:.3g}" if "gram" in logged else ""
        description = (
            f"loss {logged['loss']:.3f} (dino {logged['dino']:.3f} ibot {logged['ibot']:.3f} "
            f"koleo {logged['koleo']:.3f}{gram}) lr {logged['lr']:.2e} m {logged['momentum']:.4f} "
            f"T {logged['teacher_temp']:.3f} | teacher H {logged['teacher_entropy']:.2f}/{self.guard.ln_k:.2f} "
            f"info {logged['teacher_mi']:.2f} cos {logged['teacher_cos']:.3f} spread {logged['cls_spread']:.2f} "
            f"| {rate:.1f} img/s{mfu}"
        )
        # a terminal shows it under the bar; without one, a plain line with the bar's numbers
        # (iteration/total, it/s, elapsed, ETA) and this
        bar.update(task, detail=description, line=True)


class _SilentBar:
    """Progress stand-in for ranks other than 0."""

    def __enter__(self) -> _SilentBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def advance(self, *args: Any, **kwargs: Any) -> None:
        return None

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None


def run_pretraining(cfg: PretrainConfig, resolved: dict[str, Any], overwrite: bool = False) -> RunSummary:
    """Train (or resume) the run in `cfg.out`; joins or creates the process group."""
    env = init_distributed(cfg.parallel.device)
    try:
        return Pretrainer(cfg, resolved, env, overwrite).run()
    finally:
        release_run_dir(Path(cfg.out))  # the run directory's lock (taken on rank 0 by prepare_run_dir)
        env.close()

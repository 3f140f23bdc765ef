"""Linear probing on cached frozen features: a grid of classifiers trained at once.

The fast variant of DINOv2's linear evaluation: for every (feature set, learning rate) one
linear classifier, all trained together on the same batches (one forward and one backward
per feature set per batch), SGD momentum 0.9, no weight decay, lr x batch / 256, cosine to
0. No feature standardisation (DINOv2 features are already layer-normed). The augmented
protocol of the paper reuses `LinearGridHead`, `grid_cross_entropy` and `GridSGD` on
features from a live backbone forward (see `probe_protocol`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from lvdtool.errors import InputError, TrainingError
from lvdtool.eval.metrics import markdown_table, topk_counts
from lvdtool.eval.probe_batches import batch_indices
from lvdtool.eval.probe_head import LinearGridHead, grid_cross_entropy, grid_losses
from lvdtool.eval.probe_optim import GridSGD, cosine_lr_factor
from lvdtool.eval.probe_protocol import (
    CACHED_LINEAR_PROTOCOL,
    DINOV2_LINEAR_LRS,
    OFFICIAL_LINEAR_PROTOCOL,
    LinearProtocol,
    official_protocol_notes,
)

__all__ = [
    "CACHED_LINEAR_PROTOCOL",
    "DINOV2_LINEAR_LRS",
    "OFFICIAL_LINEAR_PROTOCOL",
    "GridSGD",
    "LinearGridHead",
    "LinearProbeResult",
    "LinearProtocol",
    "evaluate_linear_grid",
    "grid_cross_entropy",
    "grid_losses",
    "official_protocol_notes",
    "train_linear_grid",
]

SELECTION_NOTE = (
    "best = highest validation top-1 over the grid, as in DINOv2; the same validation set "
    "chooses and scores it, so the number is optimistic"
)


@dataclass
class LinearProbeResult:
    """One row per (feature set, lr): features, lr, lr_scaled, top1, top5 (val, %),
    train_loss (mean over the last tenth of training), diverged. `best` is the row with the
    highest val top-1 (see SELECTION_NOTE)."""

    table: list[dict[str, Any]]
    best: dict[str, Any]
    head: LinearGridHead
    iterations: int
    batch_size: int
    protocol: LinearProtocol
    selection_note: str = field(default=SELECTION_NOTE)

    def markdown(self) -> str:
        columns = ["features", "lr", "lr_scaled", "top1", "top5", "train_loss", "diverged"]
        formats = {"top1": ".2f", "top5": ".2f", "train_loss": ".4f", "lr": "g", "lr_scaled": ".3g"}
        return markdown_table(self.table, columns, formats)


def _check_sets(
    sets: Mapping[str, torch.Tensor], labels: torch.Tensor, num_classes: int, which: str
) -> int:
    if not sets:
        raise InputError(f"train_linear_grid: {which}_sets is empty")
    if labels.dim() != 1 or labels.is_floating_point():
        raise InputError(f"train_linear_grid: {which}_labels must be a 1-D integer tensor")
    rows = labels.shape[0]
    if rows == 0:
        raise InputError(f"train_linear_grid: {which}_labels is empty")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise InputError(
            f"train_linear_grid: {which}_labels must lie in [0, {num_classes}), got "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    for name, feats in sets.items():
        if feats.dim() != 2 or feats.shape[0] != rows:
            raise InputError(
                f"train_linear_grid: {which}_sets[{name!r}] must be [{rows}, D], got shape {tuple(feats.shape)}"
            )
    return rows


@torch.no_grad()
def evaluate_linear_grid(
    head: LinearGridHead,
    sets: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    chunk_size: int = 4096,
) -> dict[str, dict[int, torch.Tensor]]:
    """Top-1 and top-5 accuracy (%) of every classifier: {name: {1: [n_lrs], 5: [n_lrs]}}.

    Rows are fed in chunks of `chunk_size`, cast to float32 on the head's device. With a live
    backbone, accumulate `topk_counts(logits, labels)` per batch instead.
    """
    device = head.biases[head.feature_names[0]].device
    labels_on = labels.to(device, torch.int64)
    counts = {
        name: {k: torch.zeros(len(head.lrs), dtype=torch.int64, device=device) for k in (1, 5)}
        for name in head.feature_names
    }
    for start in range(0, labels.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        batch = {name: sets[name][rows].to(device, torch.float32) for name in head.feature_names}
        for name, logits in head(batch).items():
            for k, count in topk_counts(logits, labels_on[rows], (1, 5)).items():
                counts[name][k] += count
    return {
        name: {k: 100.0 * c.double().cpu() / labels.shape[0] for k, c in per_k.items()}
        for name, per_k in counts.items()
    }


def _pick_best(table: list[dict[str, Any]]) -> dict[str, Any]:
    finite = [row for row in table if not row["diverged"]]
    if not finite:
        raise TrainingError("train_linear_grid: every classifier of the grid diverged (non-finite weights)")
    # Ties: higher top-5, then the earlier row (feature-set order, then lr order).
    return max(enumerate(finite), key=lambda item: (item[1]["top1"], item[1]["top5"], -item[0]))[1]


def train_linear_grid(
    train_sets: Mapping[str, torch.Tensor],
    train_labels: torch.Tensor,
    val_sets: Mapping[str, torch.Tensor],
    val_labels: torch.Tensor,
    num_classes: int,
    lrs: Sequence[float] = DINOV2_LINEAR_LRS,
    epochs: float = 10.0,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str | None = None,
    iterations: int | None = None,
    momentum: float = 0.9,
    eval_chunk_size: int = 4096,
) -> LinearProbeResult:
    """Train one linear classifier per (feature set, lr) on cached features; score on val.

    train_sets / val_sets map a feature-set name to [N, D_name] (any float dtype, any device;
    batches are gathered where the features live and moved to `device` as float32, so a large
    cache may stay on the CPU). `device` defaults to the device of the first train set.
    Training runs `iterations` steps, by default ceil(epochs * N / batch_size): 10 epochs is
    about the number of passes of the paper's 12,500 x 1024 on ImageNet-1k. batch_size is
    clipped to N; each lr is multiplied by batch_size / 256. Deterministic for a seed.

    The best classifier is chosen by validation top-1, as in DINOv2; that is optimistic,
    since the same set selects and scores. Report the whole table with it.
    """
    if set(train_sets) != set(val_sets):
        raise InputError(
            f"train_linear_grid: train_sets has {sorted(train_sets)} but val_sets has {sorted(val_sets)}"
        )
    if num_classes < 1:
        raise InputError(f"train_linear_grid: num_classes must be >= 1, got {num_classes}")
    n_train = _check_sets(train_sets, train_labels, num_classes, "train")
    _check_sets(val_sets, val_labels, num_classes, "val")
    dims = {name: feats.shape[1] for name, feats in train_sets.items()}
    for name, feats in val_sets.items():
        if feats.shape[1] != dims[name]:
            raise InputError(
                f"train_linear_grid: val_sets[{name!r}] has dimension {feats.shape[1]}, train {dims[name]}"
            )
    if batch_size < 1:
        raise InputError(f"train_linear_grid: batch_size must be >= 1, got {batch_size}")
    batch_size = min(batch_size, n_train)
    if iterations is None:
        if not epochs > 0:
            raise InputError(f"train_linear_grid: epochs must be > 0, got {epochs}")
        iterations = math.ceil(epochs * n_train / batch_size)
    if iterations < 1:
        raise InputError(f"train_linear_grid: iterations must be >= 1, got {iterations}")

    device = torch.device(device) if device is not None else next(iter(train_sets.values())).device
    head = LinearGridHead(dims, num_classes, lrs, seed=seed).to(device)
    lr_scale = batch_size / 256.0
    optimizer = GridSGD(head.parameters(), [lr * lr_scale for lr in head.lrs], momentum=momentum)
    labels_src = train_labels.to(torch.int64)

    tail = max(1, iterations // 10)  # iterations whose loss the table reports
    tail_loss = {name: torch.zeros(len(head.lrs), device=device) for name in head.feature_names}
    for step, rows in enumerate(batch_indices(n_train, batch_size, iterations, seed)):
        optimizer.param_groups[0]["lr"] = cosine_lr_factor(step, iterations)
        batch = {
            name: feats[rows.to(feats.device)].to(device, torch.float32)
            for name, feats in train_sets.items()
        }
        labels = labels_src[rows.to(labels_src.device)].to(device)
        losses = grid_losses(head(batch), labels)
        loss = torch.stack([per_lr.sum() for per_lr in losses.values()]).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= iterations - tail:
            for name, per_lr in losses.items():
                tail_loss[name] += per_lr.detach()

    accuracy = evaluate_linear_grid(head, val_sets, val_labels, eval_chunk_size)
    diverged = head.diverged()
    table: list[dict[str, Any]] = []
    for name in head.feature_names:
        for i, lr in enumerate(head.lrs):
            bad = bool(diverged[name][i])
            table.append({
                "features": name,
                "lr": lr,
                "lr_scaled": lr * lr_scale,
                "top1": float("nan") if bad else float(accuracy[name][1][i]),
                "top5": float("nan") if bad else float(accuracy[name][5][i]),
                "train_loss": float(tail_loss[name][i]) / tail,
                "diverged": bad,
            })
    protocol = LinearProtocol(**{
        **CACHED_LINEAR_PROTOCOL.as_dict(),
        "learning_rates": head.lrs,
        "batch_size": batch_size,
        "iterations": iterations,
    })
    return LinearProbeResult(
        table=table,
        best=_pick_best(table),
        head=head,
        iterations=iterations,
        batch_size=batch_size,
        protocol=protocol,
    )

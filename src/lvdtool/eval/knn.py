"""Weighted k-NN classification on frozen features, as in DINO and DINOv2.

Features are L2-normalised and compared by cosine similarity. The max(k) nearest training
features of each test feature are found once; a neighbour's weight is exp(similarity / T).
For each k the score of a class is the summed weight of that class among the k nearest,
divided by the summed weight of all k, i.e. a softmax-weighted vote that sums to 1.
Dividing a row by a positive constant does not change its ranking, so the predictions
equal DINO's (raw exp sums) and DINOv2's (softmax over the top 200).

Test rows are processed in chunks so at most a [chunk_size, N_train] similarity matrix
exists at a time. Everything runs in float32 on the device of the training features (or
`device`); float16 inputs are accepted and upcast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from lvdtool.errors import InputError
from lvdtool.eval.metrics import topk_counts

DINOV2_KNN_KS: tuple[int, ...] = (10, 20, 100, 200)
DINOV2_KNN_TEMPERATURE = 0.07


@dataclass
class _KnnBank:
    """The normalised training set on the compute device, and the clipped k values."""

    feats: torch.Tensor  # [N_train, D] float32, unit rows
    labels: torch.Tensor  # [N_train] int64
    num_classes: int
    k_of: dict[int, int]  # requested k -> k clipped to N_train
    k_steps: list[int]  # distinct clipped k, ascending


def _check_features(feats: torch.Tensor, labels: torch.Tensor | None, name: str) -> None:
    if feats.dim() != 2:
        raise InputError(f"knn: {name}_feats must be [N, D], got shape {tuple(feats.shape)}")
    if feats.shape[0] == 0:
        raise InputError(f"knn: {name}_feats has no rows")
    if labels is None:
        return
    if labels.dim() != 1 or labels.shape[0] != feats.shape[0]:
        raise InputError(
            f"knn: {name}_labels must be [{feats.shape[0]}], got shape {tuple(labels.shape)}"
        )
    if labels.is_floating_point():
        raise InputError(f"knn: {name}_labels must be integers, got {labels.dtype}")
    if int(labels.min()) < 0:
        raise InputError(f"knn: {name}_labels has negative labels")


def _prepare_bank(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor | None,
    ks: Sequence[int],
    temperature: float,
    num_classes: int | None,
    chunk_size: int,
    device: torch.device | str | None,
) -> _KnnBank:
    _check_features(train_feats, train_labels, "train")
    _check_features(test_feats, test_labels, "test")
    if test_feats.shape[1] != train_feats.shape[1]:
        raise InputError(
            f"knn: test_feats has dimension {test_feats.shape[1]}, train_feats {train_feats.shape[1]}"
        )
    if not temperature > 0:
        raise InputError(f"knn: temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise InputError(f"knn: chunk_size must be >= 1, got {chunk_size}")
    if not ks or min(int(k) for k in ks) < 1:
        raise InputError(f"knn: ks must be positive integers, got {tuple(ks)}")
    largest = int(train_labels.max())
    if test_labels is not None:
        largest = max(largest, int(test_labels.max()))
    if num_classes is None:
        num_classes = largest + 1
    elif largest >= num_classes:
        raise InputError(f"knn: num_classes is {num_classes} but a label is {largest}")
    device = torch.device(device) if device is not None else train_feats.device
    n_train = train_feats.shape[0]
    k_of = {int(k): min(int(k), n_train) for k in ks}
    return _KnnBank(
        feats=F.normalize(train_feats.to(device, torch.float32), dim=1),
        labels=train_labels.to(device, torch.int64),
        num_classes=num_classes,
        k_of=k_of,
        k_steps=sorted(set(k_of.values())),
    )


def _chunk_scores(
    query: torch.Tensor, bank: _KnnBank, temperature: float
) -> dict[int, torch.Tensor]:
    """Class scores [b, C] of unit-norm queries [b, D] for each clipped k."""
    sims = query @ bank.feats.T  # [b, N_train], the memory bound of the whole computation
    top_sims, top_ids = sims.topk(bank.k_steps[-1], dim=1)  # sorted, most similar first
    # Subtracting the best similarity leaves every ratio unchanged and keeps exp finite
    # for any temperature.
    weights = torch.exp((top_sims - top_sims[:, :1]) / temperature)
    neighbour_labels = bank.labels[top_ids]
    votes = torch.zeros(query.shape[0], bank.num_classes, device=query.device)
    scores: dict[int, torch.Tensor] = {}
    done = 0
    for k in bank.k_steps:  # each k adds only its extra neighbours to the previous votes
        votes.scatter_add_(1, neighbour_labels[:, done:k], weights[:, done:k])
        scores[k] = votes / weights[:, :k].sum(dim=1, keepdim=True)
        done = k
    return scores


def _iter_chunks(
    test_feats: torch.Tensor, bank: _KnnBank, temperature: float, chunk_size: int
) -> Iterator[tuple[slice, dict[int, torch.Tensor]]]:
    for start in range(0, test_feats.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        query = F.normalize(test_feats[rows].to(bank.feats.device, torch.float32), dim=1)
        yield rows, _chunk_scores(query, bank, temperature)


def knn_class_scores(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    ks: Sequence[int] = DINOV2_KNN_KS,
    temperature: float = DINOV2_KNN_TEMPERATURE,
    num_classes: int | None = None,
    chunk_size: int = 1024,
    device: torch.device | str | None = None,
) -> dict[int, torch.Tensor]:
    """Per requested k, the class scores [N_test, C] (rows sum to 1); k is clipped to N_train.

    Holds all N_test x C scores per k: meant for tests and small sets. `knn_classify`
    keeps only the counts.
    """
    bank = _prepare_bank(
        train_feats, train_labels, test_feats, None, ks, temperature, num_classes, chunk_size, device
    )
    parts: dict[int, list[torch.Tensor]] = {k: [] for k in bank.k_steps}
    for _, scores in _iter_chunks(test_feats, bank, temperature, chunk_size):
        for k, chunk in scores.items():
            parts[k].append(chunk)
    merged = {k: torch.cat(chunks) for k, chunks in parts.items()}
    return {k: merged[clipped] for k, clipped in bank.k_of.items()}


def knn_classify(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    ks: Sequence[int] = DINOV2_KNN_KS,
    temperature: float = DINOV2_KNN_TEMPERATURE,
    num_classes: int | None = None,
    chunk_size: int = 1024,
    device: torch.device | str | None = None,
) -> dict[int, dict[str, float]]:
    """Weighted k-NN accuracy: {k: {"top1": percent, "top5": percent}} for each requested k.

    k is clipped to N_train (with 50 training rows, k = 100 and k = 200 both use all 50);
    top-5 with fewer than 5 classes is top-C. Labels are integers in [0, num_classes);
    num_classes defaults to the largest label + 1.
    """
    bank = _prepare_bank(
        train_feats, train_labels, test_feats, test_labels, ks, temperature, num_classes,
        chunk_size, device,
    )
    labels = test_labels.to(bank.feats.device, torch.int64)
    zero = torch.zeros((), dtype=torch.int64, device=bank.feats.device)
    top1 = {k: zero.clone() for k in bank.k_steps}
    top5 = {k: zero.clone() for k in bank.k_steps}
    for rows, scores in _iter_chunks(test_feats, bank, temperature, chunk_size):
        for k, chunk in scores.items():
            counts = topk_counts(chunk, labels[rows], (1, 5))
            top1[k] += counts[1]
            top5[k] += counts[5]
    n_test = test_feats.shape[0]
    return {
        k: {
            "top1": 100.0 * int(top1[clipped]) / n_test,
            "top5": 100.0 * int(top5[clipped]) / n_test,
        }
        for k, clipped in bank.k_of.items()
    }

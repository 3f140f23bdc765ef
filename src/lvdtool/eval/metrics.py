"""Top-k accuracy over class scores, and the Markdown table the evaluation reports print."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

from lvdtool.errors import InputError


def _check_ks(ks: Sequence[int], where: str) -> tuple[int, ...]:
    unique = tuple(dict.fromkeys(int(k) for k in ks))
    if not unique or min(unique) < 1:
        raise InputError(f"{where}: ks must be positive integers, got {tuple(ks)}")
    return unique


def _check_scores(scores: torch.Tensor, labels: torch.Tensor, where: str) -> None:
    if scores.dim() < 2:
        raise InputError(f"{where}: scores must be [..., N, C], got shape {tuple(scores.shape)}")
    if labels.dim() != 1 or labels.shape[0] != scores.shape[-2]:
        raise InputError(
            f"{where}: labels must be [N] with N = {scores.shape[-2]}, got shape {tuple(labels.shape)}"
        )
    if labels.is_floating_point():
        raise InputError(f"{where}: labels must be integers, got {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= scores.shape[-1]):
        raise InputError(
            f"{where}: labels must lie in [0, {scores.shape[-1]}), got "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )


def topk_hits(
    scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> dict[int, torch.Tensor]:
    """For each k, whether each row's label is among its k best classes: {k: bool [..., N]}.

    `scores` is [..., N, C] (leading dims, e.g. a grid of classifiers, share the labels [N]).
    A k larger than C is clipped to C (top-5 of 3 classes is top-3, always a hit).
    Ties go to the lower class index (a stable sort), so equal scores give the same answer
    on every device and for every batching.
    """
    ks = _check_ks(ks, "topk_hits")
    _check_scores(scores, labels, "topk_hits")
    num_classes = scores.shape[-1]
    kmax = min(max(ks), num_classes)
    ranked = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :kmax]
    match = ranked == labels.to(ranked.device)[:, None]
    return {k: match[..., : min(k, num_classes)].any(dim=-1) for k in ks}


def topk_counts(
    scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> dict[int, torch.Tensor]:
    """Number of rows whose label is in the top k: {k: int64 tensor [...]} (summed over N).

    Counts rather than percentages so that chunked evaluations can be added up.
    """
    return {k: hits.sum(dim=-1) for k, hits in topk_hits(scores, labels, ks).items()}


def topk_accuracy(
    scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> dict[int, float]:
    """Top-k accuracy in percent of scores [N, C] against labels [N]: {k: percent}."""
    if scores.dim() != 2:
        raise InputError(f"topk_accuracy: scores must be [N, C], got shape {tuple(scores.shape)}")
    if scores.shape[0] == 0:
        raise InputError("topk_accuracy: scores has no rows")
    counts = topk_counts(scores, labels, ks)
    return {k: 100.0 * int(count) / scores.shape[0] for k, count in counts.items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _format_cell(value: Any, spec: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    text = format(value, spec) if isinstance(value, float) else str(value)
    # a '|' inside a cell would end the cell in Markdown
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    formats: Mapping[str, str] | None = None,
    float_format: str = ".4g",
) -> str:
    """A GitHub-flavoured Markdown table of `rows` restricted to `columns`, in that order.

    Floats use `formats[column]` (a format spec such as ".2f") or `float_format`; missing
    keys give empty cells; all-numeric columns are right-aligned.
    """
    if not columns:
        raise InputError("markdown_table: columns is empty")
    formats = dict(formats or {})
    header = "| " + " | ".join(_format_cell(c, "") for c in columns) + " |"
    aligns = []
    for column in columns:
        values = [row[column] for row in rows if row.get(column) is not None]
        numeric = bool(values) and all(_is_number(v) for v in values)
        aligns.append("---:" if numeric else "---")
    lines = [header, "| " + " | ".join(aligns) + " |"]
    for row in rows:
        cells = [_format_cell(row.get(c), formats.get(c, float_format)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

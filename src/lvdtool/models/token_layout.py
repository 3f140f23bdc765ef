"""How a packed (rows, dim) token tensor splits into crop batches.

Multi-crop forwards concatenate the tokens of every crop batch (B_i images of N_i tokens each)
into one (sum B_i*N_i, D) tensor, so that token-wise layers run once. Attention alone needs the
per-image structure back; this layout says where each crop batch lives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AttentionSpan:
    """A contiguous row range holding `batch` sequences of `seq_len` tokens each."""

    start: int
    stop: int
    batch: int
    seq_len: int
    groups: tuple[int, ...] = ()  # indices of the crop batches in the span, in order


@dataclass(frozen=True)
class TokenLayout:
    """Crop batches in packing order, each as (batch size, tokens per image)."""

    groups: tuple[tuple[int, int], ...]

    @classmethod
    def single(cls, batch: int, seq_len: int) -> TokenLayout:
        return cls(((batch, seq_len),))

    @property
    def group_rows(self) -> list[int]:
        return [b * n for b, n in self.groups]

    @property
    def offsets(self) -> list[int]:
        out, start = [], 0
        for rows in self.group_rows:
            out.append(start)
            start += rows
        return out

    @property
    def total_rows(self) -> int:
        return sum(self.group_rows)

    def attention_spans(self) -> list[AttentionSpan]:
        """Row ranges for attention; adjacent groups with the same length share one call."""
        spans: list[AttentionSpan] = []
        start = 0
        for index, (batch, seq_len) in enumerate(self.groups):
            stop = start + batch * seq_len
            if batch == 0:
                continue
            if spans and spans[-1].seq_len == seq_len and spans[-1].stop == start:
                last = spans[-1]
                spans[-1] = AttentionSpan(last.start, stop, last.batch + batch, seq_len, (*last.groups, index))
            else:
                spans.append(AttentionSpan(start, stop, batch, seq_len, (index,)))
            start = stop
        return spans

    def split(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """Views (B_i, N_i, D) of each crop batch in `rows`."""
        parts = torch.split(rows, self.group_rows, dim=0)
        return [p.view(b, n, -1) for p, (b, n) in zip(parts, self.groups)]

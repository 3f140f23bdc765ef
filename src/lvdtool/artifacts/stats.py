"""Stage statistics: nested counters that merge across shards and ranks."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_stats(total: dict[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    """Add `part` into `total` in place: numbers are summed, dicts merged recursively, lists concatenated."""
    for key, value in part.items():
        if isinstance(value, Mapping):
            merge_stats(total.setdefault(key, {}), value)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, list):
                total.setdefault(key, []).extend(value)
            else:
                total[key] = value
        else:
            total[key] = total.get(key, 0) + value
    return total


def count(values) -> dict[str, int]:
    """A counter dict sorted by descending count then name (stable for manifests and tests)."""
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

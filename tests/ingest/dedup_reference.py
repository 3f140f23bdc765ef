"""The single-process rule the bucketed dedup must reproduce, written as it was before (dicts, one pass)."""
from __future__ import annotations

from lvdtool.ingest import PerceptualIndex


def reference_dedup(keys: list[int], content: list[str], phash: list[int], max_distance: int, exact: bool = True,
                    perceptual: bool = True) -> dict[int, tuple[int, int]]:
    """key -> (duplicate_of, distance; -1 for identical bytes), in key order, the first occurrence kept."""
    seen: dict[str, int] = {}
    index = PerceptualIndex(max_distance, expected_size=max(1, len(keys)))
    dup: dict[int, tuple[int, int]] = {}
    for key, h, p in sorted(zip(keys, content, phash)):
        if exact:
            first = seen.setdefault(h, key)
            if first != key:
                dup[key] = (first, -1)
                continue
        if perceptual:
            match = index.nearest(p)
            if match is not None:
                dup[key] = (match[0], match[1])
                continue
            index.add(key, p)
    return dup

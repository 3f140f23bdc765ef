"""Find all 64-bit hashes within a Hamming distance, without comparing every pair.

Multi-index hashing (Norouzi, Punjani and Fleet, 2012): the 64 bits are cut into m bands. If two
hashes differ in at most r bits, at least one band differs in at most floor(r / m) bits
(pigeonhole), so probing every band's table with all values within floor(r / m) of the query's band
finds every match. m = r + 1 gives exact band lookups; fewer, wider bands make buckets far more
selective at the price of more probes. The constructor picks m from a simple cost model (probes
plus expected candidates for `expected_size` stored hashes) unless `bands` is given.

Memory: Python dicts and lists, roughly 100 bytes per stored hash per band; meant for one shard
or one dedup group at a time, not for billions of hashes at once.
"""

from __future__ import annotations

from itertools import combinations
from math import comb
from typing import Hashable, Iterator

from lvdtool.errors import ConfigError

_BITS = 64
_MAX_PROBES = 200_000


def _band_layout(bands: int) -> list[tuple[int, int]]:
    """(shift, width) of each band, widths differing by at most one bit."""
    layout = []
    start = 0
    for index in range(bands):
        width = _BITS // bands + (1 if index < _BITS % bands else 0)
        layout.append((_BITS - start - width, width))
        start += width
    return layout


def _probe_count(width: int, radius: int) -> int:
    return sum(comb(width, d) for d in range(radius + 1))


def choose_band_count(max_distance: int, expected_size: int) -> int:
    """The band count with the lowest estimated cost per query for uniformly random hashes."""
    best, best_cost = max_distance + 1, float("inf")
    for bands in range(1, min(max_distance + 1, _BITS) + 1):
        radius = max_distance // bands
        width = _BITS // bands  # the narrowest band dominates the collision rate
        probes = bands * _probe_count(width, radius)
        cost = probes + expected_size * probes / 2.0**width
        if cost < best_cost:
            best, best_cost = bands, cost
    return best


class PerceptualIndex:
    """Stores (key, 64-bit hash) pairs; finds every stored hash within `max_distance` of a query."""

    def __init__(self, max_distance: int, expected_size: int = 1_000_000, bands: int | None = None) -> None:
        if not 0 <= max_distance < _BITS:
            raise ConfigError(f"max_distance must be in 0..{_BITS - 1}, got {max_distance}")
        bands = bands if bands is not None else choose_band_count(max_distance, expected_size)
        if not 1 <= bands <= min(max_distance + 1, _BITS):
            raise ConfigError(f"bands must be in 1..{min(max_distance + 1, _BITS)} for max_distance {max_distance}, got {bands}")
        self.max_distance = max_distance
        self.bands = bands
        self._radius = max_distance // bands
        self._layout = _band_layout(bands)
        probes = sum(_probe_count(width, self._radius) for _, width in self._layout)
        if probes > _MAX_PROBES:
            raise ConfigError(f"bands={bands} with max_distance={max_distance} needs {probes} probes per query; use more bands")
        # Per band: XOR masks of every value within the band radius, precomputed once.
        self._probe_masks = [
            [sum(1 << bit for bit in flipped) for d in range(self._radius + 1) for flipped in combinations(range(width), d)]
            for _, width in self._layout
        ]
        self._tables: list[dict[int, list[int]]] = [{} for _ in range(bands)]
        self._keys: list[Hashable] = []
        self._hashes: list[int] = []

    def __len__(self) -> int:
        return len(self._keys)

    def _band_values(self, value: int) -> Iterator[int]:
        for shift, width in self._layout:
            yield (value >> shift) & ((1 << width) - 1)

    def add(self, key: Hashable, value: int) -> None:
        if not 0 <= value < 1 << _BITS:
            raise ValueError(f"hash for key {key!r} is not an unsigned 64-bit integer")
        slot = len(self._keys)
        self._keys.append(key)
        self._hashes.append(value)
        for table, band in zip(self._tables, self._band_values(value)):
            table.setdefault(band, []).append(slot)

    def _candidates(self, value: int) -> set[int]:
        found: set[int] = set()
        for table, masks, band in zip(self._tables, self._probe_masks, self._band_values(value)):
            for mask in masks:
                slots = table.get(band ^ mask)
                if slots:
                    found.update(slots)
        return found

    def query(self, value: int) -> list[tuple[Hashable, int]]:
        """All stored (key, distance) within max_distance, nearest first, then in insertion order."""
        matches = []
        for slot in self._candidates(value):
            distance = (self._hashes[slot] ^ value).bit_count()
            if distance <= self.max_distance:
                matches.append((distance, slot))
        matches.sort()
        return [(self._keys[slot], distance) for distance, slot in matches]

    def nearest(self, value: int) -> tuple[Hashable, int] | None:
        matches = self.query(value)
        return matches[0] if matches else None

    def add_if_new(self, key: Hashable, value: int) -> tuple[Hashable, int] | None:
        """Streaming dedup: the nearest earlier (key, distance) if there is one, else store and return None."""
        match = self.nearest(value)
        if match is None:
            self.add(key, value)
        return match

    def pairs(self) -> Iterator[tuple[Hashable, Hashable, int]]:
        """Every stored pair (earlier key, later key, distance) within max_distance, each once."""
        for slot, value in enumerate(self._hashes):
            for other in sorted(self._candidates(value)):
                if other < slot:
                    distance = (self._hashes[other] ^ value).bit_count()
                    if distance <= self.max_distance:
                        yield self._keys[other], self._keys[slot], distance

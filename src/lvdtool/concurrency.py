"""Bounded, order-preserving parallel map: results come back in input order, at most `window` in flight."""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

A = TypeVar("A")
R = TypeVar("R")


def ordered_map(fn: Callable[[A], R], items: Iterable[A], workers: int, window: int | None = None) -> Iterator[R]:
    """Like `ThreadPoolExecutor.map`, but never holds more than `window` pending results in memory."""
    window = window or workers * 4
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

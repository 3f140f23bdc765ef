"""Suite-wide ordering: the files holding the few-CPU-minute learning runs (`@pytest.mark.slow`)
are collected first, so that under `make test`'s two xdist workers they start at once and overlap
the rest of the suite instead of being its tail. Within a file the order is unchanged."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: file and test order kept otherwise

"""Intermediate results of a global step, kept under `<out>/_work/` so a rerun after a kill reuses them.

Each result is one `.npz` of plain arrays (no pickle) written atomically: a reader sees either no
file or the complete one. Small metadata (counts, names) rides along as a JSON string. The stage's
manifest guarantees a rerun uses the same config and inputs, so a stored result is always valid.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lvdtool.artifacts.atomic import atomic_path
from lvdtool.artifacts.sharded_output import WORK_DIR

META_KEY = "__meta__"


class WorkState:
    """Named array bundles under `<out>/_work/`; `reused` lists what a run loaded instead of computing."""

    def __init__(self, out_dir: str | Path) -> None:
        self.dir = Path(out_dir) / WORK_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.reused: list[str] = []
        self.computed: list[str] = []

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.npz"

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def load(self, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """(arrays, meta) of a stored result, or None when absent or unreadable (then it is recomputed)."""
        p = self.path(name)
        if not p.exists():
            return None
        try:
            with np.load(p, allow_pickle=False) as bundle:
                arrays = {k: bundle[k] for k in bundle.files if k != META_KEY}
                meta = json.loads(str(bundle[META_KEY])) if META_KEY in bundle.files else {}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
            return None
        return arrays, meta

    def save(self, name: str, arrays: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> None:
        payload = dict(arrays)
        payload[META_KEY] = np.array(json.dumps(meta or {}, default=_json_default))
        with atomic_path(self.path(name)) as tmp:
            # a file handle, not a name: np.savez would append ".npz" to the temporary name
            with open(tmp, "wb") as fh:
                np.savez(fh, **payload)

    def cached(
        self, name: str, compute: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Load `name` if a previous run stored it, else compute, store and return it."""
        stored = self.load(name)
        if stored is not None:
            self.reused.append(name)
            return stored
        arrays, meta = compute()
        self.save(name, arrays, meta)
        self.computed.append(name)
        return arrays, meta


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in work metadata")

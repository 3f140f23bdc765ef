"""Path-valued config keys, made absolute so that a run's identity does not depend on the cwd.

A stage stores its resolved config in its output's manifest and a rerun compares it with the
stored one. A relative `--out`, or `--out` spelled absolutely, or the same command from another
directory would otherwise differ from the run it should resume (a SLURM requeue script resumes a
run started by hand). Only the keys listed here are paths: URLs, registered names (seed sets,
archs) and nulls are left as they are.
"""

from __future__ import annotations

import os
from typing import Any, Callable

_TRAINING = ("out", "init", "from_run", "distill.teacher", "data.images", "data.selection", "gram.teacher")

# stage (manifest name) -> dotted keys; `*` matches any key of a mapping; list values are
# lists of paths; a trailing `=` marks entries that may be NAME=PATH (dedup's `against`).
PATH_KEYS: dict[str, tuple[str, ...]] = {
    "crawl-ingest": ("out", "inputs.urls", "inputs.dirs", "fetch.ca_file"),
    "dedup": ("embeddings", "out", "against="),
    "embed": ("images", "out", "selection", "weights", "model.path"),
    "curate": ("pool", "out", "selection", "seed_paths", "seed_sets.*.path"),
    "probe": ("weights", "train", "val", "out"),
    "pretrain": _TRAINING,
    "hires-adapt": _TRAINING,
    "distill": _TRAINING,
}


def _is_local(value: Any) -> bool:
    return isinstance(value, str) and value != "" and "://" not in value


def _one(value: Any, fn: Callable[[str], str], named: bool) -> Any:
    if isinstance(value, list):
        return [_one(v, fn, named) for v in value]
    if not _is_local(value):
        return value
    name, sep, path = value.partition("=")
    if named and sep and name and "/" not in name and _is_local(path):
        return f"{name}={fn(os.path.expanduser(path))}"
    return fn(os.path.expanduser(value))


def _apply(node: Any, parts: list[str], fn: Callable[[str], str], named: bool) -> Any:
    if not isinstance(node, dict):
        return node
    head, rest = parts[0], parts[1:]
    keys = list(node) if head == "*" else [head] if head in node else []
    out = dict(node)
    for key in keys:
        out[key] = _apply(node[key], rest, fn, named) if rest else _one(node[key], fn, named)
    return out


def _map_paths(stage: str, config: dict[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
    for dotted in PATH_KEYS.get(stage, ()):
        named = dotted.endswith("=")
        config = _apply(config, dotted.rstrip("=").split("."), fn, named)
    return config


def absolute_paths(stage: str, config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` with its path keys absolute (relative to the cwd): what a manifest stores."""
    return _map_paths(stage, config, os.path.abspath)


def comparable_paths(stage: str, config: dict[str, Any]) -> dict[str, Any]:
    """A copy with its path keys fully resolved (symlinks too), for comparing a stored config with a
    new one: a manifest written before paths were stored absolute resumes when its relative paths
    resolve, from the cwd of the rerun, to the same places."""
    return _map_paths(stage, config, os.path.realpath)


def stage_of(config_name: str) -> str:
    """`crawl_ingest` (the packaged config's name) -> `crawl-ingest` (the stage's name)."""
    return config_name.replace("_", "-")

"""What an output folder (`--out`) may be, and what `--overwrite` may delete.

An output must be absent, empty, or an lvd artifact of the same kind and stage (a rerun resumes
it). Anything else (a folder holding other files, a file, another stage's artifact, a path that
cannot be created) is refused in one line saying what is there, before anything is written into
it. An output must also not be an input of the command, contain one or lie inside one, whatever
the flags. `--overwrite` deletes only an artifact of the stage itself (the lock files of the run
that deletes it stay) and prints one line saying what it deleted. The output's lock
(output_lock.py) is taken before anything is deleted, so a live run's output is never cleared.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from lvdtool.artifacts import output_lock
from lvdtool.artifacts.manifest import MANIFEST_NAME, InputRef, Manifest, read_manifest
from lvdtool.artifacts.output_lock import OutputLock, is_lock_entry
from lvdtool.config_paths import PATH_KEYS
from lvdtool.console import console
from lvdtool.errors import ArtifactError

LISTED = 3  # entries named in a refusal


def _never(name: str) -> bool:
    return False


@dataclass(frozen=True)
class OutputSpec:
    """One stage's output: where, what kind, and the entries the stage writes before its manifest
    (so that a run killed before it resumes with the same command)."""

    path: Path
    kind: str
    stage: str
    noun: str = "artifact"  # "run" for the training stages' run directories, "report" for probe
    early: Callable[[str], bool] = _never

    @property
    def what(self) -> str:
        return f"an lvd {self.stage} {self.noun}"


# ---- inputs ------------------------------------------------------------------------------------
def _values(node: Any, parts: list[str], named: bool) -> Iterable[str]:
    if not parts:
        for value in node if isinstance(node, list) else [node]:
            if isinstance(value, str) and value and "://" not in value:
                name, sep, path = value.partition("=")
                yield path if named and sep and name and "/" not in name else value
        return
    if isinstance(node, dict):
        for key in (list(node) if parts[0] == "*" else [parts[0]] if parts[0] in node else []):
            yield from _values(node[key], parts[1:], named)


def input_paths(stage: str, config: dict[str, Any], refs: Iterable[InputRef] = ()) -> list[tuple[str, str]]:
    """(label, path) of every existing path-valued input: the stage's path keys of `config` other
    than `out` (config_paths.PATH_KEYS), and the recorded inputs' paths."""
    found: list[tuple[str, str]] = []
    for dotted in PATH_KEYS.get(stage, ()):
        key = dotted.rstrip("=")
        if key == "out":
            continue
        found += [(key, os.path.expanduser(v)) for v in _values(config, key.split("."), dotted.endswith("="))]
    found += [(ref.role, ref.path) for ref in refs]
    return [(label, path) for label, path in found if os.path.lexists(path)]


def check_not_an_input(out: Path, inputs: Iterable[tuple[str, str]]) -> None:
    """Refuse an output that is an input, contains one or lies inside one (by resolved paths)."""
    mine = Path(os.path.realpath(out))
    for label, path in inputs:
        theirs = Path(os.path.realpath(path))
        if mine == theirs:
            how = "is"
        elif theirs.is_relative_to(mine):
            how = "contains"
        elif mine.is_relative_to(theirs):
            how = "lies inside"
        else:
            continue
        raise ArtifactError(f"{out}: {how} this command's input {label}={path}; "
                            "an --out must not be an input, contain one or lie inside one: choose another --out")


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The dotted keys at which two nested dicts differ (a missing key reads as '<unset>')."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += diff_keys(a.get(k, "<unset>"), b.get(k, "<unset>"), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


# ---- what is there -------------------------------------------------------------------------------
def _listing(entries: list[Path]) -> str:
    names = [p.name + ("/" if p.is_dir() else "") for p in entries[:LISTED]]
    return ", ".join(names + (["..."] if len(entries) > LISTED else []))


def inspect(spec: OutputSpec) -> Manifest | None:
    """The output's manifest (None for an absent or still empty output); refuses anything else."""
    out = spec.path
    if not out.exists():
        return None
    if not out.is_dir():
        raise ArtifactError(f"{out}: is a file, not a folder; choose an empty or new --out")
    if (out / MANIFEST_NAME).exists():
        manifest = read_manifest(out)
        if manifest.kind != spec.kind or manifest.stage != spec.stage:
            raise ArtifactError(f"{out}: holds a {manifest.kind!r} artifact from stage {manifest.stage!r}, "
                                f"not {spec.what}; choose an empty or new --out")
        return manifest
    foreign = sorted(p for p in out.iterdir() if not is_lock_entry(p.name) and not spec.early(p.name))
    if foreign:
        n = len(foreign)
        raise ArtifactError(f"{out}: exists and holds {n} {'entry that is' if n == 1 else 'entries that are'} "
                            f"not {spec.what} ({_listing(foreign)}); choose an empty or new --out")
    return None


def _files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if not p.is_dir() and not is_lock_entry(p.name)]


def describe(spec: OutputSpec, manifest: Manifest | None) -> str:
    """'an lvd embed artifact: complete, 4 shards, 9 files' - what --overwrite would delete."""
    state = "complete" if manifest is not None and manifest.complete else "unfinished"
    parts = [state] + ([f"{len(manifest.shards)} shards"] if manifest is not None and manifest.shards
                       and spec.noun == "artifact" else [])
    n = len(_files(spec.path)) if spec.path.is_dir() else 0
    return f"{spec.what}: {', '.join(parts + [f'{n} files'])}"


def make_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"{out}: cannot be created ({exc.strerror or exc}); choose another --out") from None


def _remove(path: Path, rel: str, keep: frozenset[str]) -> None:
    if rel in keep:
        return
    if path.is_dir() and not path.is_symlink():
        if any(k.startswith(rel + "/") for k in keep):
            for child in path.iterdir():
                _remove(child, f"{rel}/{child.name}", keep)
            return
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def clear_for_overwrite(spec: OutputSpec, manifest: Manifest | None, keep: Iterable[str] = ()) -> str | None:
    """Delete the output's contents but the lock's files and `keep` (paths relative to the output);
    print and return the line saying what went. None when there was nothing to delete."""
    out = spec.path
    entries = [p for p in out.iterdir() if not is_lock_entry(p.name)] if out.is_dir() else []
    if not entries:
        return None
    kept = frozenset(k for k in keep if (out / k).exists())
    what = describe(spec, manifest)
    for entry in entries:
        _remove(entry, entry.name, kept)
    line = f"{out}: --overwrite deleted {what}" + (f" (kept {len(kept)} reusable files)" if kept else "")
    console.print(line, soft_wrap=True, markup=False, highlight=False)
    return line


def claim_output(spec: OutputSpec, *, inputs: Iterable[tuple[str, str]], run_id: str, overwrite: bool = False,
                 keep: Iterable[str] = (), peer: str | None = None) -> tuple[OutputLock, Manifest | None]:
    """Check the output, create it, take its lock, then (with `overwrite`) clear it. Returns the lock
    (release it when the run ends) and the manifest found there (None when new or cleared)."""
    check_not_an_input(spec.path, inputs)
    inspect(spec)  # refuse a foreign folder before writing the lock into it
    make_dir(spec.path)
    lock = output_lock.acquire(spec.path, run_id, spec.stage, peer)
    try:
        manifest = inspect(spec)  # again under the lock: a run that held it may have written meanwhile
        if overwrite:
            clear_for_overwrite(spec, manifest, keep)
            manifest = None
    except BaseException:
        lock.release()
        raise
    return lock, manifest

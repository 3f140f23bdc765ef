"""The run directory of `lvd pretrain`: a `checkpoint` artifact with its manifest.

A rerun into the same directory resumes it; that is refused when the config differs in anything
but the keys of `RESUME_IGNORES` (workers, logging, checkpoint frequency, precision, ...). The run
holds the directory's lock from prepare_run_dir to release_run_dir (artifacts/output_lock.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lvdtool.artifacts.fingerprint import file_sha256
from lvdtool.artifacts.manifest import InputRef, Manifest
from lvdtool.artifacts.output_guard import OutputSpec, claim_output, describe, input_paths
from lvdtool.artifacts.output_lock import OutputLock
from lvdtool.artifacts.ranks import rank_info
from lvdtool.config_paths import comparable_paths
from lvdtool.errors import ConfigError
from lvdtool.train.config import LEGACY_VALUES, RESUME_IGNORES

STAGE = "pretrain"  # the default; hires-adapt and distill runs record their own stage name


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for key, child in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), child, out)
    else:
        out[prefix] = value
    return out


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys whose values differ, outside RESUME_IGNORES, as 'key: old -> new'. A key the old
    config lacks (a run started before lvd had it) counts only when the new value is not the
    key's default: such a run trained as the default says; or, for the keys of LEGACY_VALUES, when
    the new value is not what such runs trained with."""
    a, b = _flatten("", old, {}), _flatten("", new, {})
    a.update({k: v for k, v in LEGACY_VALUES.items() if k not in a})
    defaults = _schema_defaults()
    keys = sorted((set(a) | set(b)) - set(RESUME_IGNORES))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys
            if a.get(k) != b.get(k) and not (k not in a and k in defaults and defaults[k] == b.get(k))]


def _schema_defaults() -> dict[str, Any]:
    from omegaconf import OmegaConf

    from lvdtool.train.config import PretrainConfig

    return _flatten("", OmegaConf.to_container(OmegaConf.structured(PretrainConfig)), {})


# What a run writes before its first checkpoint (and so before its manifest): a run killed then is
# resumed by the same command, not refused as a foreign folder.
# (`tensorboard`: train.tensorboard's event files, opened with the metrics log)
_EARLY_ENTRIES = ("data_table", "checkpoints", "metrics.jsonl", "tensorboard")


def _own_entry(name: str, extra: tuple[str, ...] = ()) -> bool:
    return name in _EARLY_ENTRIES or name in extra or name.startswith(".data_table.")  # its temp dir and rank parts


def _spec(out: Path, stage: str, own_entries: tuple[str, ...]) -> OutputSpec:
    return OutputSpec(out, "checkpoint", stage, noun="run", early=lambda name: _own_entry(name, own_entries))


_LOCKS: dict[Path, OutputLock] = {}  # run dir -> this process's hold on its lock, until release_run_dir


def prepare_run_dir(out: Path, resolved: dict[str, Any], overwrite: bool, stage: str = STAGE,
                    own_entries: tuple[str, ...] = (), run_id: str | None = None) -> None:
    """Rank 0, before anything else: take the run directory's lock for the run (release_run_dir
    ends it), refuse a folder that is not this stage's run or is one of its inputs, then start
    fresh (--overwrite) or check that a resume uses the same config.
    `own_entries`: more names the run writes before its manifest (distilled students' folders)."""
    spec = _spec(out, stage, own_entries)
    lock, manifest = claim_output(spec, inputs=input_paths(stage, resolved), run_id=run_id or rank_info().run_id,
                                  overwrite=overwrite)
    try:
        if manifest is not None:
            diffs = config_differences(comparable_paths(stage, manifest.config), comparable_paths(stage, resolved))
            if diffs:
                raise ConfigError(
                    f"{out}: this run was started with another config ({'; '.join(diffs[:3])}); rerun with the "
                    f"same config to resume, choose another --out, or pass --overwrite to delete it "
                    f"({describe(spec, manifest)})"
                )
    except BaseException:
        lock.release()
        raise
    previous = _LOCKS.pop(out, None)
    _LOCKS[out] = lock
    if previous is not None:  # an earlier run of this process into the same folder that was not released
        previous.release()


def release_run_dir(out: Path) -> None:
    """The end of the run (also after an error): leave the run directory's lock."""
    lock = _LOCKS.pop(Path(out), None)
    if lock is not None:
        lock.release()


def write_run_manifest(
    out: Path,
    resolved: dict[str, Any],
    inputs: list[InputRef],
    extra: dict[str, Any],
    complete: bool = False,
    backbone: Path | list[Path] | None = None,
    stage: str = STAGE,
) -> Manifest:
    """The manifest of the run; complete runs list the final backbone.pth as their one shard
    (a distillation run: each student's, as paths relative to `out`)."""
    shards = []
    for path in [backbone] if isinstance(backbone, Path) else (backbone or []):
        full = path if path.is_absolute() or path.parent == out else out / path
        if full.exists():
            name = path.name if full.parent == out else str(path)
            shards.append({"name": name, "rows": int(extra.get("iteration", 0)),
                           "bytes": full.stat().st_size, "checksum": "sha256:" + file_sha256(full)})
    manifest = Manifest(kind="checkpoint", stage=stage, config=resolved, inputs=inputs, shards=shards,
                        extra=extra, complete=complete)
    manifest.write(out)
    return manifest

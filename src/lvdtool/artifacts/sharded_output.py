"""An output artifact written shard by shard: restart, rank split, atomic commit, one final manifest.

Layout of an output directory:
    manifest.json            written at start with complete=false, rewritten once with complete=true
    shards/<name>.<ext>      the shard's files, each renamed into place when fully written
    shards/<name>.done.json  the completion marker, written last: rows, files (bytes, sha256), stats
A rerun with the same command skips shards whose marker exists and whose files match it.
Opening one refuses an output that is not absent, empty or an artifact of this stage, and takes the
output's lock for the run (output_guard.py, output_lock.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lvdtool.artifacts import run_lock
from lvdtool.artifacts.atomic import TMP_MARK, atomic_write_json, remove_stale_temps
from lvdtool.artifacts.fingerprint import comparable_fingerprint, file_sha256
from lvdtool.config_paths import comparable_paths
from lvdtool.artifacts.manifest import MANIFEST_NAME, InputRef, Manifest, read_manifest
from lvdtool.artifacts.output_guard import OutputSpec, claim_output, describe, diff_keys, input_paths
from lvdtool.artifacts.ranks import RankInfo, rank_info
from lvdtool.artifacts.stats import merge_stats
from lvdtool.errors import ArtifactError, ConfigError

SHARD_DIR = "shards"
WORK_DIR = "_work"  # intermediate results of a stage, kept for restart
DONE_SUFFIX = ".done.json"


def _early_entry(name: str) -> bool:
    """The manifest is written first: before it, only its temporary file can be there."""
    return name.startswith(MANIFEST_NAME + TMP_MARK)


def shard_name(index: int) -> str:
    return f"shard-{index:06d}"


@dataclass
class ShardRecord:
    """What the completion marker of one shard says."""

    name: str
    rows: int
    files: dict[str, dict[str, Any]]  # path relative to the artifact -> {"bytes": int, "sha256": str}
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def checksum(self) -> str:
        h = hashlib.sha256()
        for fname in sorted(self.files):
            h.update(f"{fname}\0{self.files[fname]['sha256']}\n".encode())
        return h.hexdigest()[:32]

    def add_file(self, relpath: str, path: Path) -> None:
        """Record a file derived from this shard at finalisation (e.g. the deduplicated index)."""
        self.files[relpath] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows": self.rows,
            "bytes": sum(f["bytes"] for f in self.files.values()),
            "checksum": self.checksum,
            "files": sorted(f for f in self.files if not f.startswith(WORK_DIR + "/")),
        }


class ShardedOutput:
    """Owns one output artifact directory for one process (rank) of a stage."""

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        kind: str,
        stage: str,
        config: dict[str, Any],
        inputs: list[InputRef],
        overwrite: bool = False,
        ranks: RankInfo | None = None,
        resume_ignores: tuple[str, ...] = (),
        lock_timeout_s: float = run_lock.DEFAULT_TIMEOUT_S,
    ) -> None:
        self.lock_timeout_s = lock_timeout_s
        self.dir = Path(out_dir)
        self.shard_dir = self.dir / SHARD_DIR
        self.kind, self.stage, self.config, self.inputs = kind, stage, config, inputs
        self.ranks = ranks or rank_info()
        self.already_complete = False
        self._resume_ignores = resume_ignores
        self._begin(overwrite)

    # ----- start / resume -------------------------------------------------
    def _comparable(self, config: dict, inputs: list[dict]) -> dict:
        cfg = {k: v for k, v in comparable_paths(self.stage, config).items() if k not in self._resume_ignores}
        return {"config": cfg, "inputs": [(i["path"], comparable_fingerprint(i["fingerprint"])) for i in inputs]}

    def _begin(self, overwrite: bool) -> None:
        spec = OutputSpec(self.dir, self.kind, self.stage, early=_early_entry)
        # rank 0 clears (the others join what it started); every process holds the output's lock
        # ranks of one launch may not share a run id (one per node under multi-node torchrun): the
        # same command at the same world size counts as the same launch
        peer = None
        if self.ranks.world_size > 1:
            identity = json.dumps(self._comparable(self.config, [vars(i) for i in self.inputs]), sort_keys=True, default=str)
            peer = f"{self.ranks.world_size}:{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
        lock, old = claim_output(spec, inputs=input_paths(self.stage, self.config, self.inputs),
                                 run_id=self.ranks.run_id, overwrite=overwrite and self.ranks.rank == 0, peer=peer)
        # released at the end of the run: when the stage drops this object, on release(), or at exit
        self._release = weakref.finalize(self, lock.release)
        # the launch's run id as the lock has it (a rank that joined by command adopts the first one's),
        # so that every rank of the launch takes the same finalize lock and only one finalizes
        self._launch_id = lock.run_id
        try:
            self._resume_or_start(spec, old, overwrite)
        except BaseException:
            self._release()
            raise

    def _resume_or_start(self, spec: OutputSpec, old: Manifest | None, overwrite: bool) -> None:
        manifest_path = self.dir / MANIFEST_NAME
        if old is not None and not overwrite:
            new_inputs = [vars(i) for i in self.inputs]
            mine = self._comparable(self.config, new_inputs)
            theirs = self._comparable(old.config, [vars(i) for i in old.inputs])
            if mine != theirs:
                keys = diff_keys(theirs, mine)
                raise ConfigError(
                    f"{self.dir}: was started with a different config or inputs (differs at: "
                    f"{', '.join(keys[:5])}); rerun with the same command, choose another --out, "
                    f"or pass --overwrite to delete it ({describe(spec, old)})"
                )
            self.already_complete = old.complete
            self.manifest = old
        else:
            self.manifest = Manifest(kind=self.kind, stage=self.stage, config=self.config, inputs=self.inputs)
            if self.ranks.rank == 0 or not manifest_path.exists():
                self.manifest.write(self.dir)
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        (self.dir / WORK_DIR).mkdir(exist_ok=True)
        if self.ranks.world_size == 1:
            # Only a single process may sweep: other ranks' temp files could be in flight.
            remove_stale_temps(self.dir)

    def release(self) -> None:
        """Leave the output's lock now (also done when this object is dropped, and at exit)."""
        self._release()

    # ----- shards -----------------------------------------------------------
    def owns(self, index: int) -> bool:
        return self.ranks.owns(index)

    def marker_path(self, name: str) -> Path:
        return self.dir / WORK_DIR / f"{name}{DONE_SUFFIX}"

    def read_marker(self, name: str) -> ShardRecord | None:
        p = self.marker_path(name)
        if not p.exists():
            return None
        try:
            d = json.loads(p.read_text())
            return ShardRecord(name=d["name"], rows=d["rows"], files=d["files"], stats=d.get("stats", {}))
        except (json.JSONDecodeError, KeyError):
            return None

    def is_done(self, name: str, verify: str = "size") -> bool:
        """A shard is done when its marker exists and its files match it (by size, or `full` sha256)."""
        record = self.read_marker(name)
        if record is None:
            return False
        for fname, meta in record.files.items():
            p = self.dir / fname
            if not p.exists() or p.stat().st_size != meta["bytes"]:
                return False
            if verify == "full" and file_sha256(p) != meta["sha256"]:
                return False
        return True

    def temp(self, relpath: str) -> Path:
        """A temporary path for the file that will be committed as `relpath` (relative to the artifact)."""
        final = self.dir / relpath
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(f"{final.name}{TMP_MARK}{os.getpid()}")

    def commit(self, name: str, temp_files: dict[str, Path], rows: int, stats: dict[str, Any]) -> ShardRecord:
        """Rename each written temp file to its final name, then write the marker (the commit point).

        `temp_files` maps the final path relative to the artifact directory to the temp file written.
        """
        files = {}
        for final_name, tmp in temp_files.items():
            tmp = Path(tmp)
            if TMP_MARK not in tmp.name:
                raise ArtifactError(f"{tmp}: shard files must be written to a temporary name first")
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            files[final_name] = {"bytes": tmp.stat().st_size, "sha256": file_sha256(tmp)}
            os.replace(tmp, self.dir / final_name)
        record = ShardRecord(name=name, rows=rows, files=files, stats=stats)
        atomic_write_json(self.marker_path(name), {"name": name, "rows": rows, "files": files, "stats": stats})
        return record

    # ----- finalisation -------------------------------------------------------
    def all_done(self, names: list[str]) -> bool:
        return all(self.is_done(n) for n in names)

    def try_finalize(
        self,
        names: list[str],
        *,
        finalize: Callable[[list[ShardRecord]], dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> bool:
        """Write the complete manifest if every shard is done and no other rank of this launch is doing it.

        `finalize` gets the shard records and may do a global step (e.g. cross-shard dedup); it returns
        stats to merge. Returns True when this process wrote the manifest.
        """
        if not self.all_done(names):
            return False
        if (self.dir / MANIFEST_NAME).exists() and read_manifest(self.dir).complete:
            return False
        lock = self.dir / f".finalize-{self._launch_id}.lock"
        # A SLURM requeue repeats the run id: a lock left by a killed finalize is broken, not obeyed.
        if not run_lock.acquire(lock, self.lock_timeout_s):
            return False
        if (self.dir / MANIFEST_NAME).exists() and read_manifest(self.dir).complete:
            return False  # another rank finished between our check and our lock
        records = [self.read_marker(n) for n in names]
        stats: dict[str, Any] = {}
        for r in records:
            # keys starting with "_" are per-shard details (e.g. failed key lists), kept out of the manifest
            merge_stats(stats, {k: v for k, v in r.stats.items() if not k.startswith("_")})
        if finalize is not None:
            merge_stats(stats, finalize(records))
        manifest = Manifest(
            kind=self.kind,
            stage=self.stage,
            config=self.config,
            inputs=self.inputs,
            shards=[r.manifest_entry() for r in records],
            stats=stats,
            extra=extra or {},
            complete=True,
        )
        manifest.write(self.dir)
        self.manifest = manifest
        remove_stale_temps(self.dir)
        for old_lock in self.dir.glob(".finalize-*.lock"):
            if old_lock != lock:  # locks of earlier, killed launches
                old_lock.unlink(missing_ok=True)
        return True

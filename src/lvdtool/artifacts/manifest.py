"""The manifest: what an artifact is, how it was made, from what, and whether it is complete."""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lvdtool import __version__
from lvdtool.artifacts.atomic import atomic_write_json
from lvdtool.artifacts.fingerprint import shard_list_fingerprint
from lvdtool.errors import ArtifactError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
KINDS = ("images", "embeddings", "selection", "checkpoint", "report", "table")


@dataclass
class InputRef:
    path: str
    kind: str  # an artifact kind, or "file" / "directory" / "urls"
    fingerprint: str
    role: str = "input"

    @classmethod
    def from_dict(cls, d: dict) -> "InputRef":
        return cls(path=d["path"], kind=d["kind"], fingerprint=d["fingerprint"], role=d.get("role", "input"))


@dataclass
class Manifest:
    kind: str
    stage: str
    config: dict[str, Any]
    inputs: list[InputRef] = field(default_factory=list)
    shards: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # kind-specific facts (model identity, dim, ...)
    complete: bool = False
    format_version: int = FORMAT_VERSION
    lvd_version: str = __version__
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ArtifactError(f"unknown artifact kind {self.kind!r} (known: {', '.join(KINDS)})")

    @property
    def fingerprint(self) -> str:
        return shard_list_fingerprint(self.shards)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fingerprint"] = self.fingerprint if self.complete else None
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "manifest") -> "Manifest":
        try:
            return cls(
                kind=d["kind"],
                stage=d["stage"],
                config=d.get("config", {}),
                inputs=[InputRef.from_dict(i) for i in d.get("inputs", [])],
                shards=list(d.get("shards", [])),
                stats=dict(d.get("stats", {})),
                extra=dict(d.get("extra", {})),
                complete=bool(d.get("complete", False)),
                format_version=int(d.get("format_version", FORMAT_VERSION)),
                lvd_version=d.get("lvd_version", "?"),
                created=d.get("created", ""),
            )
        except KeyError as exc:
            raise ArtifactError(f"{source}: manifest lacks the key {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as exc:  # not an object, or a value of the wrong type
            raise ArtifactError(f"{source}: malformed manifest ({type(exc).__name__}: {exc})") from None

    def write(self, directory: str | Path) -> None:
        atomic_write_json(Path(directory) / MANIFEST_NAME, self.to_dict())


def read_manifest(directory: str | Path) -> Manifest:
    path = Path(directory) / MANIFEST_NAME
    if not Path(directory).exists():
        raise ArtifactError(f"{directory}: no such artifact directory")
    if not path.exists():
        raise ArtifactError(f"{directory}: not an lvd artifact (no {MANIFEST_NAME})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable manifest ({exc})") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: unreadable manifest ({exc.strerror or exc})") from None
    manifest = Manifest.from_dict(data, source=str(path))
    if manifest.format_version > FORMAT_VERSION:
        raise ArtifactError(f"{path}: format version {manifest.format_version} is newer than this lvd understands")
    return manifest


def open_input(directory: str | Path, expect_kind: str | tuple[str, ...]) -> Manifest:
    """Read an input artifact's manifest; refuse incomplete ones and ones of the wrong kind."""
    manifest = read_manifest(directory)
    kinds = (expect_kind,) if isinstance(expect_kind, str) else expect_kind
    if manifest.kind not in kinds:
        raise ArtifactError(f"{directory}: is a {manifest.kind!r} artifact, expected {' or '.join(kinds)}")
    if not manifest.complete:
        raise ArtifactError(f"{directory}: artifact is incomplete (its stage has not finished; rerun it)")
    return manifest


def input_ref(directory: str | Path, manifest: Manifest, role: str = "input") -> InputRef:
    return InputRef(path=str(Path(directory).resolve()), kind=manifest.kind, fingerprint=manifest.fingerprint, role=role)

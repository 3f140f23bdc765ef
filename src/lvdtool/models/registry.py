"""Architecture registry: a name -> `BackboneConfig` builder table filled by a decorator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from lvdtool.errors import ConfigError
from lvdtool.models.config import BackboneConfig

# preset: the DINOv2 names users type; dinov3: the released DINOv3 ViTs; base: official DINOv2
# builder names; lvd: lvd's own (no official hub model); test: tiny models.
ArchKind = Literal["preset", "dinov3", "base", "test", "lvd"]
KIND_ORDER = {"preset": 0, "dinov3": 1, "base": 2, "lvd": 3, "test": 4}  # who wins a structure tie
ConfigBuilder = Callable[[], BackboneConfig]


@dataclass(frozen=True)
class ArchEntry:
    name: str
    kind: ArchKind
    build_config: ConfigBuilder


_ARCHS: dict[str, ArchEntry] = {}


def register_arch(name: str, kind: ArchKind = "preset") -> Callable[[ConfigBuilder], ConfigBuilder]:
    """Decorator: register a zero-argument function returning the arch's `BackboneConfig`."""

    def decorate(builder: ConfigBuilder) -> ConfigBuilder:
        if name in _ARCHS:
            raise ConfigError(f"architecture '{name}' is registered twice")
        _ARCHS[name] = ArchEntry(name, kind, builder)
        return builder

    return decorate


def list_archs(kind: ArchKind | None = None) -> list[str]:
    """Registered names in registration order, optionally only one kind."""
    return [e.name for e in _ARCHS.values() if kind is None or e.kind == kind]


def arch_entries() -> list[ArchEntry]:
    return list(_ARCHS.values())


def get_arch_config(name: str, **overrides: Any) -> BackboneConfig:
    """The registered config of `name` with `overrides` applied (unknown fields: ConfigError)."""
    entry = _ARCHS.get(name)
    if entry is None:
        raise ConfigError(f"unknown architecture '{name}' (known: {', '.join(_ARCHS)})")
    return entry.build_config().replace(arch=name).replace(**overrides)


def build_backbone(name: str, **overrides: Any) -> Any:
    """Build the `VisionTransformer` registered as `name`, e.g. build_backbone("vit_l14", drop_path_rate=0.4)."""
    from lvdtool.models.vision_transformer import VisionTransformer  # registry stays import-light

    return VisionTransformer(get_arch_config(name, **overrides))


def match_arch(config: BackboneConfig) -> str | None:
    """Name of the first registered arch with the same structure (presets before base names)."""
    for entry in sorted(_ARCHS.values(), key=lambda e: KIND_ORDER[e.kind]):
        if entry.build_config().structure() == config.structure():
            return entry.name
    return None

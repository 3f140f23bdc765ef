"""Stage configs: Hydra composes the packaged YAML tree with `key=value` overrides; a dataclass types it."""
from __future__ import annotations

import dataclasses
from functools import lru_cache
from importlib.resources import files
from typing import Any, TypeVar

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lvdtool.config_checks import check_values, plain_appends
from lvdtool.config_paths import absolute_paths, stage_of
from lvdtool.config_rules import rules_of
from lvdtool.errors import ConfigError

T = TypeVar("T")


def _check_override(text: str) -> None:
    if "=" not in text or text.startswith("="):
        raise ConfigError(f"override {text!r} is not of the form key=value")


def _writable(node: DictConfig | ListConfig) -> None:
    OmegaConf.set_readonly(node, False)
    for key in list(node.keys()) if isinstance(node, DictConfig) else range(len(node)):
        child = node._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)):
            _writable(child)


@lru_cache(maxsize=1)
def config_groups() -> tuple[str, ...]:
    """The packaged config groups (recipe, preprocess, seed, ...): `+group=option` appends pass to Hydra."""
    return tuple(sorted(p.name for p in files("lvdtool.configs").iterdir() if p.is_dir() and not p.name.startswith("_")))


def compose_config(config_name: str, overrides: list[str], schema: type[T]) -> tuple[T, dict[str, Any]]:
    """Compose `configs/<config_name>.yaml` with overrides; validate against `schema` (a dataclass)
    and its value rules (config_rules), before the stage creates anything.

    Returns the typed config and the resolved plain dict stored in the output manifest (its path
    keys absolute: see config_paths).
    """
    stage = stage_of(config_name)
    for o in overrides:
        _check_override(o)
    overrides = plain_appends(stage, list(overrides), schema, config_groups())
    try:
        structured = OmegaConf.structured(schema)
        _writable(structured)  # frozen dataclasses become read-only nodes; overrides must still land
        # The YAML's defaults list starts with `<config_name>_schema`: every schema key is overridable
        # and typed, even where the YAML does not mention it.
        ConfigStore.instance().store(name=f"{config_name}_schema", node=structured)
        with initialize_config_module(config_module="lvdtool.configs", version_base="1.3"):
            merged = compose(config_name=config_name, overrides=list(overrides))
        resolved = OmegaConf.to_container(merged, resolve=True)
        typed = OmegaConf.to_object(merged)
    except (HydraException, OmegaConfBaseException) as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip() and not ln.strip().startswith(("full_key", "object_type", "reference_type"))]
        cause = exc.__cause__
        if cause is not None and str(cause).strip():
            lines.append(str(cause).strip().splitlines()[0])
        first = "; ".join(lines[:2]) if lines else type(exc).__name__
        key = getattr(exc, "full_key", None)
        where = f" (key {key})" if key else ""
        raise ConfigError(f"config {config_name}{where}: {first}") from None
    except (TypeError, dataclasses.FrozenInstanceError) as exc:
        # a value the dataclass cannot take (a `+key` is checked above; this is the backstop)
        text = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"config {stage}: {type(exc).__name__}: {text}") from None
    if not dataclasses.is_dataclass(typed):
        raise ConfigError(f"config {config_name}: did not produce a {schema.__name__}")
    check_values(stage, typed, rules_of)
    resolved = absolute_paths(stage, resolved)  # the run's identity, whatever the cwd
    return typed, resolved  # type: ignore[return-value]


def default_config_yaml(config_name: str, schema: type) -> str:
    """The stage's full default config (schema defaults merged with its YAML) as YAML text."""
    structured = OmegaConf.structured(schema)
    _writable(structured)
    ConfigStore.instance().store(name=f"{config_name}_schema", node=structured)
    try:
        with initialize_config_module(config_module="lvdtool.configs", version_base="1.3"):
            cfg = compose(config_name=config_name)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"config {config_name}: {exc}") from None
    return OmegaConf.to_yaml(cfg)

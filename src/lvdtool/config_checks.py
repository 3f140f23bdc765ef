"""One checker for every stage's typed config: ranges of numeric keys, choices of enumerated keys,
and `+key` appends that name no key. It runs in `compose_config`, before a stage touches `--out`,
so a bad value never leaves an output behind that the corrected command would then refuse.

The rules themselves are tables per schema in `config_rules`.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from lvdtool.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """lo <= value <= hi (either end None: unbounded; `*_open`: the end itself is excluded). A list
    value is checked element by element; None (a nullable key left unset) always passes."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def ok(self, value: float) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def describe(self) -> str:
        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)

        if self.hi is None:
            return f"must be {'>' if self.lo_open else '>='} {num(self.lo)}" if self.lo is not None else "any number"
        if self.lo is None:
            return f"must be {'<' if self.hi_open else '<='} {num(self.hi)}"
        return f"must be in {'(' if self.lo_open else '['}{num(self.lo)}, {num(self.hi)}{')' if self.hi_open else ']'}"


@dataclass(frozen=True)
class Choice:
    """One of `values` (a tuple, or a function giving them, for registries filled at import), or a
    string matching one of `patterns` (regex, shown as its `shown` form, e.g. cuda:N)."""

    values: tuple[str, ...] | Callable[[], Iterable[str]]
    patterns: tuple[tuple[str, str], ...] = ()  # (regex, shown)

    def choices(self) -> tuple[str, ...]:
        return tuple(self.values() if callable(self.values) else self.values)

    def ok(self, value: str) -> bool:
        return value in self.choices() or any(re.fullmatch(rx, value) for rx, _ in self.patterns)

    def describe(self) -> str:
        shown = [*self.choices(), *(s for _, s in self.patterns)]
        return f"expected one of {', '.join(shown)}"


Rule = typing.Union[Range, Choice]


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _problems(prefix: str, obj: Any, rules_of: Callable[[type], dict[str, Rule]]) -> Iterator[tuple[str, Any, str]]:
    """(dotted key, value, why) of every value of the config tree `obj` that breaks its rule."""
    if dataclasses.is_dataclass(obj):
        rules = rules_of(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            key = f"{prefix}{f.name}"
            rule = rules.get(f.name)
            if rule is not None:
                yield from _broken(key, value, rule)
            yield from _problems(f"{key}.", value, rules_of)
    elif isinstance(obj, dict):
        for name, value in obj.items():
            yield from _problems(f"{prefix}{name}.", value, rules_of)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _problems(f"{prefix[:-1]}[{i}].", value, rules_of)


def _broken(key: str, value: Any, rule: Rule) -> Iterator[tuple[str, Any, str]]:
    if value is None:
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _broken(f"{key}[{i}]", item, rule)
        return
    if isinstance(rule, Range):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or not rule.ok(value):
            yield key, value, rule.describe()
    elif not isinstance(value, str) or not rule.ok(value):
        yield key, value, rule.describe()


def check_values(stage: str, typed: Any, rules_of: Callable[[type], dict[str, Rule]]) -> None:
    """Raise a one-line ConfigError for the first key of `typed` that breaks its rule."""
    for key, value, why in _problems("", typed, rules_of):
        raise ConfigError(f"config {stage}: {key}={_show(value)}: {why}")


# ---------------------------------------------------------------- `+key` appends

def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap(tp: Any) -> Any:
    """`X | None` -> X."""
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return tp
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if len(args) == 1 else tp


def dotted_keys(schema: type, prefix: str = "") -> list[str]:
    """Every dotted key of a dataclass schema (for "did you mean")."""
    out = []
    for name, tp in _hints(schema).items():
        tp = _unwrap(tp)
        out.append(prefix + name)
        if dataclasses.is_dataclass(tp):
            out += dotted_keys(tp, f"{prefix}{name}.")
    return out


def _key_exists(schema: type, parts: list[str]) -> bool:
    """Whether `parts` names a key of the schema; under a mapping of sections (`seed_sets.NAME`) any
    entry name passes and the keys inside it are checked against the section's schema."""
    tp: Any = schema
    for part in parts:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            hints = _hints(tp)
            if part not in hints:
                return False
            tp = hints[part]
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        elif origin in (list, tuple) and part.isdigit():
            tp = typing.get_args(tp)[0]
        else:
            return False  # below a plain value
    return True


def plain_appends(stage: str, overrides: list[str], schema: type, groups: Iterable[str] = ()) -> list[str]:
    """`overrides` with each `+key=value` that names an existing schema key turned into the plain
    `key=value` (Hydra would refuse the append); a `+key` naming no key is refused by name, before
    Hydra would store it (or fail on a frozen section). Appends of config groups (`+recipe=...`) pass."""
    groups = set(groups)
    out = []
    for item in overrides:
        name, sep, value = item.partition("=")
        if not (sep and name.startswith("+") and not name.startswith("++")):
            out.append(item)
            continue
        key = name[1:]
        parts = key.split("@")[0].split(".")
        if parts[0] in groups:
            out.append(item)
            continue
        if _key_exists(schema, parts):
            out.append(f"{key}={value}")
        else:
            near = difflib.get_close_matches(key, dotted_keys(schema), n=1, cutoff=0.6)
            hint = f"did you mean {near[0]}?" if near else f"list the keys with: lvd config {stage}"
            raise ConfigError(f"config {stage}: +{key}: no such key ({hint})")
    return out

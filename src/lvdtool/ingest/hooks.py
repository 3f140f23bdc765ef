"""User filter hooks: `--filter module:function` (or `path/to/file.py:function`).

The function is called as fn(image, meta) with the processed RGB PIL image and a dict of the
record's metadata (source, sizes, extra columns, ...). It returns:
- True or None: keep;
- False (or anything falsy but None and ""): reject, reason `filter:<function name>`;
- a non-empty string: reject, with that string as the reason.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from lvdtool.errors import ConfigError

FilterFunction = Callable[[Image.Image, dict[str, Any]], Any]


@dataclass(frozen=True)
class FilterHook:
    spec: str
    name: str
    function: FilterFunction

    def __call__(self, image: Image.Image, meta: dict[str, Any]) -> str | None:
        """The rejection reason, or None to keep the image."""
        verdict = self.function(image, meta)
        if verdict is None or verdict is True:
            return None
        if isinstance(verdict, str):
            return verdict or f"filter:{self.name}"
        return None if verdict else f"filter:{self.name}"


def _load_module(module_part: str, spec: str) -> Any:
    if module_part.endswith(".py"):
        path = Path(module_part)
        if not path.is_file():
            raise ConfigError(f"filter hook '{spec}': file {path} not found")
        module_name = f"lvd_filter_hook_{abs(hash(str(path.resolve())))}"
        if module_name in sys.modules:
            return sys.modules[module_name]
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ConfigError(f"filter hook '{spec}': cannot load {path} as Python")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise ConfigError(f"filter hook '{spec}': importing {path} failed ({type(exc).__name__}: {exc})") from exc
        return module
    try:
        return importlib.import_module(module_part)
    except ImportError as exc:
        raise ConfigError(f"filter hook '{spec}': cannot import module '{module_part}' ({exc})") from exc


def load_filter_hook(spec: str) -> FilterHook:
    """Resolve 'module:function', 'module:Class.attribute' or 'file.py:function' to a FilterHook."""
    module_part, sep, attribute_path = spec.rpartition(":")
    if not sep or not module_part or not attribute_path:
        raise ConfigError(f"filter hook '{spec}': expected 'module:function' or 'path/to/file.py:function'")
    target: Any = _load_module(module_part, spec)
    for part in attribute_path.split("."):
        # A user-named attribute of a user module: this look-up is the whole point of a hook spec.
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise ConfigError(f"filter hook '{spec}': '{module_part}' has no attribute '{attribute_path}'") from exc
    if not callable(target):
        raise ConfigError(f"filter hook '{spec}': '{attribute_path}' is not callable")
    return FilterHook(spec=spec, name=attribute_path.rsplit(".", 1)[-1], function=target)

"""Which code renders the multi-crop on the CPU: "torch" (tensor ops) or "numba" (compiled
kernels, numba_kernels.py). numba is an optional accelerator (the `fast` extra), like xformers:
"auto" takes it where it is installed. A run records the backend it resolved, so a resume on a
machine without numba is refused rather than continued with crops that differ by float rounding."""

from __future__ import annotations

import importlib.util

from lvdtool.errors import ConfigError

BACKEND_CHOICES = ("auto", "torch", "numba")


def numba_available() -> bool:
    return importlib.util.find_spec("numba") is not None


def resolve_backend(name: str, key: str = "data.augment_backend") -> str:
    """"auto" -> "numba" where numba is installed, else "torch"; "numba" without numba is an error."""
    if name not in BACKEND_CHOICES:
        raise ConfigError(f"{key}: expected one of {', '.join(BACKEND_CHOICES)}, got {name!r}")
    if name == "auto":
        return "numba" if numba_available() else "torch"
    if name == "numba" and not numba_available():
        raise ConfigError(f"{key}=numba: numba is not installed here (pip install 'lvd[fast]' or numba), "
                          "or set {key}=torch".replace("{key}", key))
    return name

"""Typed errors. Each one reaches the user as a single line naming the file, shard or key."""


class LvdError(Exception):
    """Base class: anything the CLI prints as one line and exits non-zero for."""

    exit_code = 1


class ConfigError(LvdError):
    """A bad option, override or config key."""

    exit_code = 2


class InputError(LvdError):
    """A bad input file, record or path given by the user."""


class ArtifactError(LvdError):
    """An artifact directory that is missing, incomplete or inconsistent."""


class CheckpointError(LvdError):
    """A weights or checkpoint file that cannot be used."""


class DependencyError(LvdError):
    """An optional dependency (an extra) is needed but not installed."""


class TrainingError(LvdError):
    """A training run that cannot go on (non-finite loss, ...)."""


def one_line(exc: LvdError) -> str:
    """The user's line for an error: one raised in a DataLoader worker reaches the main process as
    the same type with the worker's whole traceback as its text, of which the last line is the error."""
    text = str(exc)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
        prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
        return last[len(prefix):] if last.startswith(prefix) else last
    return text

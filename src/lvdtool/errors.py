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

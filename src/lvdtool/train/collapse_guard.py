"""The collapse guard: notices when the DINO objective stops carrying image information.

It reads the per-step values the training step logs (losses and the statistics of
`lvdtool.ssl.collapse_stats`) and raises one clear warning when, for `window` consecutive
iterations,
- the DINO loss stays within `tolerance` (relative) of ln K: the student matches a uniform
  target (uniform collapse), or
- the teacher's targets are the same for every image: the information they carry about the
  image, H(batch-mean target) - mean H(target), stays below `tolerance` x ln K nats (this
  catches both the uniform and the one-hot collapse).
In either state the DINO and iBOT gradients carry no information about the image, so only
KoLeo trains the backbone and the features end up barely better than random.

The lr warm-up is not watched: a healthy run may pass through a short image-independent phase
there (measured: with the centre started from the first batch, every image gets the same
fairly sharp target around iterations 30-100 of a 125-iteration warm-up, and the targets become
image-dependent as the lr reaches its peak). Counting starts after it, and a collapse must then
last the whole window (10% of the run, at least 100 and at most 2,000 iterations).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from lvdtool.errors import ConfigError

KNOBS = (
    "teacher.momentum (lower it for short runs: the teacher must forget its initialisation), "
    "teacher.temp / teacher.warmup_temp (lower sharpens the targets), optim.base_lr and "
    "optim.warmup_epochs, dino.prototypes, model.layerscale_init; recipe=small_data applies "
    "lvd's rules for small runs (docs/pretrain.md, 'Small datasets and short runs')"
)


def default_window(total_iters: int) -> int:
    return max(100, min(2000, total_iters // 10))


def teacher_information(logged: dict[str, float]) -> float:
    """Mutual information (nats) between the image and its teacher target, per batch."""
    return logged["teacher_batch_entropy"] - logged["teacher_entropy"]


@dataclass
class CollapseGuard:
    n_prototypes: int
    window: int
    tolerance: float = 0.01
    grace: int = 0  # iterations before this are not watched (the lr warm-up)
    uniform_run: int = 0
    independent_run: int = 0
    warned: bool = False

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ConfigError(f"train.collapse_window={self.window}: must be >= 1")
        if not 0 < self.tolerance < 1:
            raise ConfigError(f"train.collapse_tolerance={self.tolerance}: must be in (0, 1)")

    @property
    def ln_k(self) -> float:
        return math.log(self.n_prototypes)

    def observe(self, iteration: int, logged: dict[str, float]) -> str | None:
        """Feed one step's values; returns the warning the first time a collapse has lasted a
        whole window (None otherwise)."""
        if iteration < self.grace:
            return None
        uniform = abs(logged["dino"] - self.ln_k) <= self.tolerance * self.ln_k
        independent = teacher_information(logged) < self.tolerance * self.ln_k
        self.uniform_run = self.uniform_run + 1 if uniform else 0
        self.independent_run = self.independent_run + 1 if independent else 0
        if self.warned or max(self.uniform_run, self.independent_run) < self.window:
            return None
        self.warned = True
        if self.uniform_run >= self.window:
            what = (f"the DINO loss has stayed within {self.tolerance:.0%} of ln K = {self.ln_k:.3f} "
                    f"(now {logged['dino']:.3f}): the teacher's targets are uniform")
        else:
            what = (f"the teacher's targets have been the same for every image (they carry "
                    f"{teacher_information(logged):.3f} nats about the image; teacher entropy "
                    f"{logged['teacher_entropy']:.2f} of ln K = {self.ln_k:.2f})")
        start = iteration + 1 - max(self.uniform_run, self.independent_run)
        return (f"collapse at iteration {iteration}: since iteration {start} {what}. The DINO and iBOT "
                f"gradients carry no image information, only KoLeo trains the backbone, and the features "
                f"will be barely better than random. Knobs that matter: {KNOBS}")

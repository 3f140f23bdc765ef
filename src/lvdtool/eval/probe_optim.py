"""SGD with momentum for a stacked grid of classifiers, each with its own learning rate."""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch

from lvdtool.errors import ConfigError


def cosine_lr_factor(iteration: int, total: int) -> float:
    """Multiplier of the base learning rate at `iteration` of `total`: 1 -> 0 on a half cosine,
    no warm-up (the closed form of CosineAnnealingLR with eta_min = 0, as in DINOv2's linear eval)."""
    if total < 1:
        raise ConfigError(f"cosine_lr_factor: total must be >= 1, got {total}")
    return 0.5 * (1.0 + math.cos(math.pi * iteration / total))


class GridSGD(torch.optim.Optimizer):
    """SGD (momentum, no weight decay, no dampening, no Nesterov) where the first dimension
    of every parameter indexes a classifier and classifier i moves with lr * classifier_lrs[i].

    Equivalent to one torch.optim.SGD per classifier; the group's "lr" is a common multiplier
    (the schedule factor), so the usual lr schedulers apply to it.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        classifier_lrs: Sequence[float],
        momentum: float = 0.9,
    ) -> None:
        if not classifier_lrs:
            raise ConfigError("GridSGD: classifier_lrs is empty")
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"GridSGD: momentum must be in [0, 1), got {momentum}")
        defaults = {"lr": 1.0, "momentum": momentum, "classifier_lrs": [float(lr) for lr in classifier_lrs]}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            rates = group["classifier_lrs"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.shape[0] != len(rates):
                    raise ConfigError(
                        f"GridSGD: a parameter has {param.shape[0]} classifiers but "
                        f"classifier_lrs has {len(rates)}"
                    )
                state = self.state[param]
                buffer = state.get("momentum_buffer")
                if buffer is None:
                    buffer = param.grad.detach().clone()
                    state["momentum_buffer"] = buffer
                else:
                    buffer.mul_(group["momentum"]).add_(param.grad)
                step_size = torch.tensor(rates, dtype=param.dtype, device=param.device) * group["lr"]
                param.addcmul_(buffer, step_size.view(-1, *([1] * (param.dim() - 1))), value=-1.0)
        return loss

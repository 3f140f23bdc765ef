"""DINO / iBOT projection head: MLP -> L2-normalise -> unit-norm prototypes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lvdtool.errors import ConfigError

# Name of the prototype layer: the optimizer freezes parameters under this name during the
# first epoch (see `lvdtool.ssl.schedules.is_last_layer_param`).
LAST_LAYER_NAME = "last_layer"


def _normalize_eps(dtype: torch.dtype) -> float:
    # 1e-12 underflows in float16; the official head uses 1e-6 there.
    return 1e-6 if dtype == torch.float16 else 1e-12


class NormalizedPrototypes(nn.Module):
    """Linear map to K prototypes whose weight rows are unit-normalised at every call.

    This is weight normalisation with the gain fixed to 1, written as a plain parameter
    (`weight_v`, the official checkpoint key) normalised in `forward`, so it needs no
    `torch.nn.utils.weight_norm` hooks and works unchanged when FSDP2 shards `weight_v`
    (the full weight is gathered before `forward`). No bias.
    """

    def __init__(self, in_dim: int, n_prototypes: int) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(n_prototypes, in_dim))
        nn.init.trunc_normal_(self.weight_v, std=0.02)

    @property
    def in_dim(self) -> int:
        return self.weight_v.shape[1]

    @property
    def n_prototypes(self) -> int:
        return self.weight_v.shape[0]

    def normalized_weight(self) -> torch.Tensor:
        w = self.weight_v
        return F.normalize(w, dim=1, eps=_normalize_eps(w.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalized_weight())


def _build_mlp(in_dim: int, hidden_dim: int, bottleneck_dim: int, nlayers: int, bias: bool) -> nn.Sequential:
    if nlayers == 1:
        return nn.Sequential(nn.Linear(in_dim, bottleneck_dim, bias=bias))
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=bias), nn.GELU()]
    for _ in range(nlayers - 2):
        layers += [nn.Linear(hidden_dim, hidden_dim, bias=bias), nn.GELU()]
    layers.append(nn.Linear(hidden_dim, bottleneck_dim, bias=bias))
    return nn.Sequential(*layers)


class DinoHead(nn.Module):
    """Projection head used for both the DINO (CLS) and iBOT (patch) objectives.

    `mlp` (in -> hidden -> ... -> bottleneck, GELU between, no norm) -> L2-normalise ->
    `last_layer` (unit-norm prototypes, no bias). Returns logits [..., out_dim].
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        mlp_bias: bool = True,
    ) -> None:
        super().__init__()
        if nlayers < 1:
            raise ConfigError(f"DinoHead: nlayers must be >= 1, got {nlayers}")
        for key, value in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden_dim", hidden_dim),
                           ("bottleneck_dim", bottleneck_dim)):
            if value < 1:
                raise ConfigError(f"DinoHead: {key} must be >= 1, got {value}")
        self.mlp = _build_mlp(in_dim, hidden_dim, bottleneck_dim, nlayers, mlp_bias)
        self.last_layer = NormalizedPrototypes(bottleneck_dim, out_dim)
        self.reset_mlp_parameters()

    def reset_mlp_parameters(self) -> None:
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """MLP output, L2-normalised: the input of the prototype layer."""
        x = self.mlp(x)
        return F.normalize(x, dim=-1, eps=_normalize_eps(x.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(self.bottleneck(x))

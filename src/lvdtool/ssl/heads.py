"""DINO / iBOT projection head: MLP -> L2-normalise -> unit-norm prototypes."""

from __future__ import annotations

import math

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


PROTOTYPE_GAINS = ("trainable", "fixed")
PROTOTYPE_INITS = ("default", "trunc_normal")
PROTOTYPE_LAYERS = ("normalized", "plain")


class NormalizedPrototypes(nn.Module):
    """Weight-normalised linear map to K prototypes, no bias: w_k = g_k * v_k / ||v_k||.

    Written as plain parameters normalised in `forward` (the official checkpoint keys `weight_v`
    and `weight_g`), so it needs no `torch.nn.utils.weight_norm` hooks and works unchanged when
    FSDP2 shards them (the full weight is gathered before `forward`).

    gain: "trainable" (DINOv2: `weight_g` [K, 1] starts at 1, trains, and is weight-decayed like
      any matrix) or "fixed" (DINO v1's `norm_last_layer`: unit prototypes, no `weight_g`).
    init: "default" (DINOv2: PyTorch's default Linear init, uniform(+-1/sqrt(in_dim)), because the
      official head applies its trunc-normal init before it creates the prototype layer) or
      "trunc_normal" (std 0.02, like the MLP).
    """

    def __init__(self, in_dim: int, n_prototypes: int, gain: str = "trainable", init: str = "default") -> None:
        super().__init__()
        if gain not in PROTOTYPE_GAINS:
            raise ConfigError(f"prototype gain {gain!r}: expected one of {', '.join(PROTOTYPE_GAINS)}")
        if init not in PROTOTYPE_INITS:
            raise ConfigError(f"prototype init {init!r}: expected one of {', '.join(PROTOTYPE_INITS)}")
        self.weight_v = nn.Parameter(torch.empty(n_prototypes, in_dim))
        if init == "default":
            nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))  # nn.Linear's own init
        else:
            nn.init.trunc_normal_(self.weight_v, std=0.02)
        self.weight_g = nn.Parameter(torch.ones(n_prototypes, 1)) if gain == "trainable" else None

    @property
    def in_dim(self) -> int:
        return self.weight_v.shape[1]

    @property
    def n_prototypes(self) -> int:
        return self.weight_v.shape[0]

    def normalized_weight(self) -> torch.Tensor:
        w = self.weight_v
        unit = F.normalize(w, dim=1, eps=_normalize_eps(w.dtype))
        return unit if self.weight_g is None else unit * self.weight_g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalized_weight())


def plain_prototypes(in_dim: int, n_prototypes: int, init: str = "default") -> nn.Linear:
    """DINOv3's prototype layer: a plain `nn.Linear` without bias or weight normalisation (the
    official key `last_layer.weight`). init: "default" (nn.Linear's) or "trunc_normal" (std 0.02,
    what the official head's `init_weights` gives every linear layer, this one included)."""
    if init not in PROTOTYPE_INITS:
        raise ConfigError(f"prototype init {init!r}: expected one of {', '.join(PROTOTYPE_INITS)}")
    layer = nn.Linear(in_dim, n_prototypes, bias=False)
    if init == "trunc_normal":
        nn.init.trunc_normal_(layer.weight, std=0.02)
    return layer


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
    `last_layer`: weight-normalised prototypes, no bias (`prototype_layer="normalized"`, DINOv2;
    see `NormalizedPrototypes` for the gain and init choices) or a plain linear map without bias
    (`"plain"`, DINOv3; the gain does not apply). Returns logits [..., out_dim].
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        mlp_bias: bool = True,
        prototype_gain: str = "trainable",
        prototype_init: str = "default",
        prototype_layer: str = "normalized",
    ) -> None:
        super().__init__()
        if prototype_layer not in PROTOTYPE_LAYERS:
            raise ConfigError(f"prototype layer {prototype_layer!r}: expected one of {', '.join(PROTOTYPE_LAYERS)}")
        if nlayers < 1:
            raise ConfigError(f"DinoHead: nlayers must be >= 1, got {nlayers}")
        for key, value in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden_dim", hidden_dim),
                           ("bottleneck_dim", bottleneck_dim)):
            if value < 1:
                raise ConfigError(f"DinoHead: {key} must be >= 1, got {value}")
        self.mlp = _build_mlp(in_dim, hidden_dim, bottleneck_dim, nlayers, mlp_bias)
        self.reset_mlp_parameters()
        # Created after the MLP's init, in the official order: the same seed gives the same head.
        self.last_layer: nn.Module
        if prototype_layer == "plain":
            self.last_layer = plain_prototypes(bottleneck_dim, out_dim, prototype_init)
        else:
            self.last_layer = NormalizedPrototypes(bottleneck_dim, out_dim, prototype_gain, prototype_init)

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

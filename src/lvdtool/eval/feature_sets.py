"""The paper's linear-probe feature sets, from one frozen-backbone forward."""
from __future__ import annotations

import torch


def feature_sets(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """CLS of the last 1 or 4 blocks, with or without the average-pooled patch tokens of the last block.

    "cls4" is the last min(4, depth) blocks: tiny test models have fewer than 4.
    """
    layers = model.get_intermediate_layers(x, n=min(4, len(model.blocks)), return_class_token=True)
    cls1 = layers[-1][1].float()
    cls4 = torch.cat([cls for _, cls in layers], dim=1).float()
    avg = layers[-1][0].float().mean(1)
    return {"cls1": cls1, "cls1_avgpool": torch.cat([cls1, avg], 1), "cls4": cls4, "cls4_avgpool": torch.cat([cls4, avg], 1)}

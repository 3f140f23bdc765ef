import pytest
import torch

from lvdtool.errors import ConfigError
from lvdtool.ssl.loss_weights import SSLLossWeights


def test_recipe_weights_and_total():
    w = SSLLossWeights()
    assert (w.dino, w.ibot, w.koleo) == (1.0, 1.0, 0.1)
    total = w.total(torch.tensor(2.0), torch.tensor(3.0), torch.tensor(10.0))
    assert total.item() == pytest.approx(6.0)


def test_missing_or_zero_weight_terms_are_left_out():
    w = SSLLossWeights(ibot=0.0)
    assert w.total(dino=torch.tensor(2.0), ibot=torch.tensor(float("nan"))).item() == pytest.approx(2.0)
    with pytest.raises(ConfigError):
        SSLLossWeights(dino=0.0, ibot=0.0, koleo=0.0).total(torch.tensor(1.0))
    with pytest.raises(ConfigError):
        SSLLossWeights(koleo=-1.0)

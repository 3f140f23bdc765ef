"""The collapse guard on synthetic step values, and the collapse statistics on real tensors."""
from __future__ import annotations

import math

import pytest
import torch

from lvdtool.errors import ConfigError
from lvdtool.ssl.collapse_stats import collapse_stats, mean_pairwise_cosine
from lvdtool.train.collapse_guard import CollapseGuard, default_window

K = 256
LN_K = math.log(K)


def values(dino: float, entropy: float, batch_entropy: float) -> dict[str, float]:
    return {"dino": dino, "teacher_entropy": entropy, "teacher_batch_entropy": batch_entropy}


def feed(guard: CollapseGuard, steps: list[dict[str, float]]) -> list[tuple[int, str]]:
    return [(i, w) for i, v in enumerate(steps) if (w := guard.observe(i, v)) is not None]


def test_uniform_collapse_warns_once_after_a_full_window():
    guard = CollapseGuard(K, window=50)
    warnings = feed(guard, [values(LN_K * 0.995, LN_K * 0.999, LN_K)] * 200)
    assert [i for i, _ in warnings] == [49]
    text = warnings[0][1]
    assert "uniform" in text and f"ln K = {LN_K:.3f}" in text and "since iteration 0" in text
    assert "teacher.momentum" in text and "\n" not in text


def test_one_hot_collapse_is_caught_by_the_information_test():
    guard = CollapseGuard(K, window=20)
    # sharp targets (low entropy, low loss) but the same for every image: batch entropy = entropy
    warnings = feed(guard, [values(0.2, 0.1, 0.12)] * 40)
    assert [i for i, _ in warnings] == [19]
    assert "same for every image" in warnings[0][1]


def test_a_healthy_run_never_warns_even_with_a_near_uniform_start():
    guard = CollapseGuard(K, window=100)
    start = [values(LN_K * 0.999, LN_K * 0.998, LN_K)] * 60  # first iterations: near-uniform teacher
    healthy = [values(3.0 - 0.001 * i, 2.0, 4.5) for i in range(2000)]
    assert feed(guard, start + healthy) == []


def test_the_window_restarts_when_the_run_recovers():
    guard = CollapseGuard(K, window=30)
    steps = ([values(LN_K, LN_K, LN_K)] * 29 + [values(3.0, 2.0, 4.5)]) * 5
    assert feed(guard, steps) == []


def test_default_window_and_bad_settings():
    assert default_window(500) == 100 and default_window(5000) == 500 and default_window(10**6) == 2000
    with pytest.raises(ConfigError, match="collapse_window"):
        CollapseGuard(K, window=0)
    with pytest.raises(ConfigError, match="collapse_tolerance"):
        CollapseGuard(K, window=10, tolerance=1.5)


def test_collapse_stats_tell_collapsed_from_spread_outputs():
    torch.manual_seed(0)
    n, k, d = 32, 64, 16
    spread_logits = torch.randn(2 * n, k) * 3
    same_logits = torch.randn(1, k).expand(2 * n, k) + 1e-4 * torch.randn(2 * n, k)
    uniform = torch.full((2 * n, k), 1 / k)
    sharp = torch.softmax(spread_logits, -1)
    healthy = collapse_stats(spread_logits, sharp, torch.randn(2 * n, d))
    collapsed = collapse_stats(same_logits, uniform, torch.randn(1, d).expand(2 * n, d).clone())
    assert collapsed["teacher_entropy"] == pytest.approx(math.log(k), rel=1e-5)
    assert collapsed["teacher_batch_entropy"] - collapsed["teacher_entropy"] == pytest.approx(0, abs=1e-5)
    assert healthy["teacher_batch_entropy"] - healthy["teacher_entropy"] > 1.0
    assert collapsed["teacher_cos"] > 0.999 and healthy["teacher_cos"] < 0.2
    assert collapsed["cls_spread"] < 1e-3 and 0.8 < healthy["cls_spread"] < 1.2
    assert all(v.ndim == 0 and v.dtype == torch.float32 for v in healthy.values())


def test_mean_pairwise_cosine_equals_the_explicit_pairwise_mean():
    torch.manual_seed(1)
    x = torch.randn(9, 5)
    unit = torch.nn.functional.normalize(x, dim=-1)
    cos = unit @ unit.t()
    explicit = (cos.sum() - cos.diagonal().sum()) / (9 * 8)
    assert mean_pairwise_cosine(x) == pytest.approx(explicit.item(), abs=1e-6)


def test_the_warm_up_is_not_watched_and_counting_starts_after_it():
    # a healthy run's warm-up: same fairly sharp target for every image (measured around
    # iterations 30-100 of a 125-iteration warm-up), then image-dependent targets
    warm_up = [values(4.2, 4.1, 4.11)] * 125
    healthy = [values(6.3, 6.0, 6.4)] * 300
    assert feed(CollapseGuard(K, window=100, grace=125), warm_up + healthy) == []
    assert [i for i, _ in feed(CollapseGuard(K, window=100), warm_up + healthy)] == [99]
    # a collapse that outlasts the warm-up is still caught, one window after the warm-up ends
    warnings = feed(CollapseGuard(K, window=100, grace=125), warm_up + [values(4.2, 4.1, 4.11)] * 300)
    assert [i for i, _ in warnings] == [224] and "since iteration 125" in warnings[0][1]

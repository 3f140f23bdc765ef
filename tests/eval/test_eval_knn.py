"""Weighted k-NN: hand-made 2-D cases whose votes are worked out here, clipping, chunking, dtypes."""

from __future__ import annotations

import math

import pytest
import torch

from lvdtool.errors import InputError
from lvdtool.eval.knn import knn_class_scores, knn_classify

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Training points on the unit circle (degrees) and their classes; norms vary on purpose,
# since only directions may matter.
TRAIN_DEG = [50.0, 12.0, 66.0, 180.0, 190.0, 200.0]
TRAIN_LABELS = [1, 0, 0, 2, 2, 2]
TRAIN_NORMS = [1.0, 3.0, 0.5, 2.0, 1.0, 4.0]


def points(degrees: list[float], norms: list[float] | None = None) -> torch.Tensor:
    norms = norms or [1.0] * len(degrees)
    return torch.tensor(
        [[r * math.cos(math.radians(d)), r * math.sin(math.radians(d))] for d, r in zip(degrees, norms)]
    )


def cos_deg(a: float, b: float) -> float:
    return math.cos(math.radians(a - b))


def train_set() -> tuple[torch.Tensor, torch.Tensor]:
    return points(TRAIN_DEG, TRAIN_NORMS), torch.tensor(TRAIN_LABELS)


@pytest.mark.parametrize("temperature", [0.07, 1.0])
def test_weighted_vote_matches_hand_computation(temperature: float) -> None:
    feats, labels = train_set()
    query = 40.0
    # Nearest to 40 deg, by hand: 50 (class 1), 66 (class 0), 12 (class 0), then class 2.
    w50, w66, w12 = (math.exp(cos_deg(query, d) / temperature) for d in (50.0, 66.0, 12.0))
    expected = {
        1: [0.0, 1.0, 0.0],
        2: [w66 / (w50 + w66), w50 / (w50 + w66), 0.0],
        3: [(w66 + w12) / (w50 + w66 + w12), w50 / (w50 + w66 + w12), 0.0],
    }
    scores = knn_class_scores(feats, labels, points([query], [2.5]), ks=(1, 2, 3), temperature=temperature)
    for k, row in expected.items():
        assert scores[k].shape == (1, 3)
        torch.testing.assert_close(scores[k][0], torch.tensor(row), rtol=1e-5, atol=1e-6)
    # The temperature decides k = 3: a sharp softmax trusts the single nearest neighbour
    # (class 1), a flat one counts the two class-0 neighbours.
    assert int(scores[3].argmax()) == (1 if temperature == 0.07 else 0)


def test_k_larger_than_train_set_is_clipped() -> None:
    feats, labels = train_set()
    query, temperature = 100.0, 0.5
    weights = [math.exp(cos_deg(query, d) / temperature) for d in TRAIN_DEG]
    total = sum(weights)
    expected = torch.tensor([sum(w for w, c in zip(weights, TRAIN_LABELS) if c == cls) / total for cls in range(3)])
    scores = knn_class_scores(feats, labels, points([query]), ks=(10, 20, 100, 200), temperature=temperature)
    assert sorted(scores) == [10, 20, 100, 200]
    for k in (10, 20, 100, 200):
        torch.testing.assert_close(scores[k][0], expected, rtol=1e-5, atol=1e-6)


def test_classify_accuracy_by_hand() -> None:
    feats, labels = train_set()
    # 40 deg: label 0 but predicted 1 at k = 3 (see above); 5 deg: 12 (c0) 50 (c1) 66 (c0) -> 0;
    # 185 deg: class 2 all around -> 2.
    test = points([40.0, 5.0, 185.0])
    result = knn_classify(feats, labels, test, torch.tensor([0, 0, 2]), ks=(3, 200), temperature=0.07)
    assert result[3]["top1"] == pytest.approx(200.0 / 3)
    assert result[3]["top5"] == 100.0  # only 3 classes: top-5 is top-3
    # k = 200 is clipped to all 6 points; whether the two class-0 points outvote the closer
    # class-1 point at 40 deg is computed here (the other two queries stay right).
    w = {d: math.exp(cos_deg(40.0, d) / 0.07) for d in TRAIN_DEG}
    class0 = w[12.0] + w[66.0]
    class1 = w[50.0]
    hits_40 = 1 if class0 > class1 else 0
    assert result[200]["top1"] == pytest.approx(100.0 * (hits_40 + 2) / 3)


@pytest.mark.parametrize("device", DEVICES)
def test_chunked_equals_unchunked(device: str) -> None:
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(300, 16, generator=generator)
    train_labels = torch.randint(0, 7, (300,), generator=generator)
    test = train[:50] + 0.5 * torch.randn(50, 16, generator=generator)
    test_labels = train_labels[:50]
    whole = knn_class_scores(train, train_labels, test, chunk_size=4096)
    chunked = knn_class_scores(train.to(device), train_labels.to(device), test.to(device), chunk_size=7)
    for k in (10, 20, 100, 200):
        torch.testing.assert_close(chunked[k].cpu(), whole[k], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(whole[k].sum(dim=1), torch.ones(50), rtol=1e-5, atol=1e-6)
    assert knn_classify(train, train_labels, test, test_labels, chunk_size=7) == knn_classify(
        train, train_labels, test, test_labels, chunk_size=4096
    )
    # the noisy copies of training points are mostly found again at k = 10
    assert knn_classify(train, train_labels, test, test_labels)[10]["top1"] > 80.0


def test_float16_input_is_upcast() -> None:
    generator = torch.Generator().manual_seed(1)
    train = torch.randn(120, 8, generator=generator).half()
    train_labels = torch.randint(0, 4, (120,), generator=generator)
    test = torch.randn(30, 8, generator=generator).half()
    test_labels = torch.randint(0, 4, (30,), generator=generator)
    half = knn_class_scores(train, train_labels, test, ks=(10, 20))
    full = knn_class_scores(train.float(), train_labels, test.float(), ks=(10, 20))
    for k in (10, 20):
        assert half[k].dtype == torch.float32
        torch.testing.assert_close(half[k], full[k])
    assert knn_classify(train, train_labels, test, test_labels) == knn_classify(
        train.float(), train_labels, test.float(), test_labels
    )


def test_num_classes_and_input_errors() -> None:
    feats, labels = train_set()
    scores = knn_class_scores(feats, labels, points([0.0]), ks=(2,), num_classes=5)
    assert scores[2].shape == (1, 5)
    with pytest.raises(InputError, match="dimension"):
        knn_classify(feats, labels, torch.zeros(1, 3), torch.tensor([0]))
    with pytest.raises(InputError, match="num_classes"):
        knn_classify(feats, labels, points([0.0]), torch.tensor([0]), num_classes=2)
    with pytest.raises(InputError, match="temperature"):
        knn_classify(feats, labels, points([0.0]), torch.tensor([0]), temperature=0.0)

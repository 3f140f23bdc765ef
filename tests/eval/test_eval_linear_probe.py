"""Linear probe grid: it learns, it shows the lr dependence, and it equals classifiers trained alone."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lvdtool.errors import InputError
from lvdtool.eval.linear_probe import (
    LinearGridHead,
    grid_cross_entropy,
    official_protocol_notes,
    train_linear_grid,
)
from lvdtool.eval.metrics import topk_accuracy
from lvdtool.eval.probe_batches import batch_indices


def blobs(n_per_class: int, num_classes: int, dim: int, seed: int, spread: float = 1.0):
    generator = torch.Generator().manual_seed(seed)
    means = 3.0 * torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(1234))
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    feats = means[labels] + spread * torch.randn(len(labels), dim, generator=generator)
    return feats, labels


def row(result, features: str, lr: float) -> dict:
    (match,) = [r for r in result.table if r["features"] == features and r["lr"] == lr]
    return match


def test_grid_learns_separable_blobs_and_shows_lr_dependence() -> None:
    x_train, y_train = blobs(100, 4, 16, seed=0)
    x_val, y_val = blobs(50, 4, 16, seed=1)
    lrs = (1e-5, 1e-3, 1e-2, 0.1)
    result = train_linear_grid(
        {"cls": x_train, "cls_half": x_train[:, :8].half()}, y_train,
        {"cls": x_val, "cls_half": x_val[:, :8].half()}, y_val,
        num_classes=4, lrs=lrs, epochs=4, batch_size=32, seed=0,
    )
    assert len(result.table) == 8
    assert result.batch_size == 32 and result.iterations == math.ceil(4 * 400 / 32)
    assert row(result, "cls", 0.1)["top1"] > 95.0
    assert row(result, "cls", 1e-5)["top1"] < 70.0
    assert row(result, "cls", 1e-5)["train_loss"] > row(result, "cls", 0.1)["train_loss"]
    assert row(result, "cls", 0.1)["lr_scaled"] == pytest.approx(0.1 * 32 / 256)
    assert result.best["top1"] == max(r["top1"] for r in result.table)
    assert result.best["top1"] > 95.0
    text = result.markdown()
    assert text.count("\n") == 2 + len(result.table) and "cls_half" in text


def test_grid_equals_each_classifier_trained_alone() -> None:
    x_train, y_train = blobs(30, 3, 10, seed=2, spread=3.0)
    x_val, y_val = blobs(20, 3, 10, seed=3, spread=3.0)
    other = torch.randn(90, 5, generator=torch.Generator().manual_seed(9))
    lrs, batch, iterations, seed = (0.02, 0.5), 16, 40, 7
    grid = train_linear_grid(
        {"x": x_train, "other": other}, y_train, {"x": x_val, "other": other[:60]}, y_val,
        num_classes=3, lrs=lrs, batch_size=batch, iterations=iterations, seed=seed,
    )
    start = LinearGridHead({"x": 10}, 3, lrs, seed=seed)
    for i, lr in enumerate(lrs):
        # Reference: a plain nn.Linear and torch.optim.SGD with the schedule written out here.
        model = torch.nn.Linear(10, 3)
        with torch.no_grad():
            model.weight.copy_(start.weights["x"][i])
            model.bias.copy_(start.biases["x"][i])
        base = lr * batch / 256
        optimizer = torch.optim.SGD(model.parameters(), lr=base, momentum=0.9)
        for step, rows in enumerate(batch_indices(90, batch, iterations, seed)):
            optimizer.param_groups[0]["lr"] = base * 0.5 * (1 + math.cos(math.pi * step / iterations))
            loss = F.cross_entropy(model(x_train[rows]), y_train[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        torch.testing.assert_close(grid.head.weights["x"][i].detach(), model.weight.detach(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(grid.head.biases["x"][i].detach(), model.bias.detach(), rtol=1e-4, atol=1e-5)
        with torch.no_grad():
            expected = topk_accuracy(model(x_val), y_val, ks=(1, 5))
        assert row(grid, "x", lr)["top1"] == pytest.approx(expected[1])
        assert row(grid, "x", lr)["top5"] == pytest.approx(expected[5])
    # the two learning rates really trained differently
    assert not torch.allclose(grid.head.weights["x"][0], grid.head.weights["x"][1])


def test_deterministic_for_a_seed() -> None:
    x_train, y_train = blobs(20, 3, 6, seed=4, spread=4.0)
    x_val, y_val = blobs(10, 3, 6, seed=5, spread=4.0)

    def run(seed: int):
        return train_linear_grid({"x": x_train}, y_train, {"x": x_val}, y_val, num_classes=3,
                                 lrs=(0.01, 0.1), batch_size=8, epochs=2, seed=seed)

    first, again, other = run(0), run(0), run(1)
    assert first.table == again.table
    assert torch.equal(first.head.weights["x"], again.head.weights["x"])
    assert not torch.equal(first.head.weights["x"], other.head.weights["x"])


def test_diverged_classifiers_are_flagged_and_never_best() -> None:
    x_train, y_train = blobs(20, 2, 4, seed=6)
    x_val, y_val = blobs(10, 2, 4, seed=7)
    result = train_linear_grid(
        {"sane": x_train, "huge": x_train * 1e30}, y_train, {"sane": x_val, "huge": x_val * 1e30}, y_val,
        num_classes=2, lrs=(0.1,), batch_size=8, iterations=10,
    )
    assert row(result, "huge", 0.1)["diverged"] is True
    assert math.isnan(row(result, "huge", 0.1)["top1"])
    assert row(result, "sane", 0.1)["diverged"] is False
    assert result.best["features"] == "sane"


def test_head_forward_and_loss_match_separate_classifiers() -> None:
    head = LinearGridHead({"a": 6, "b": 3}, num_classes=4, lrs=(0.1, 0.2, 0.3), seed=0)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    feats = {"a": torch.randn(5, 6), "b": torch.randn(5, 3), "unused": torch.randn(5, 2)}
    labels = torch.tensor([0, 3, 1, 2, 3])
    logits = head(feats)
    assert set(logits) == {"a", "b"}
    total = torch.zeros(())
    for name in ("a", "b"):
        assert logits[name].shape == (3, 5, 4)
        for i in range(3):
            alone = feats[name] @ head.weights[name][i].T + head.biases[name][i]
            torch.testing.assert_close(logits[name][i], alone)
            total = total + F.cross_entropy(alone, labels)
    torch.testing.assert_close(grid_cross_entropy(logits, labels), total)
    # at initialisation all classifiers of a feature set start equal
    fresh = LinearGridHead({"a": 6}, num_classes=4, lrs=(0.1, 0.2), seed=0)
    assert torch.equal(fresh.weights["a"][0], fresh.weights["a"][1])
    with pytest.raises(InputError, match="'b' missing"):
        head({"a": feats["a"]})


def test_input_errors_and_protocol_notes() -> None:
    x, y = blobs(5, 2, 3, seed=0)
    with pytest.raises(InputError, match="val_sets"):
        train_linear_grid({"x": x}, y, {"z": x}, y, num_classes=2)
    with pytest.raises(InputError, match="train_labels must lie"):
        train_linear_grid({"x": x}, y, {"x": x}, y, num_classes=1)
    notes = official_protocol_notes()
    assert "12500 iterations" in notes and "batch 1024" in notes and "optimistic" in notes

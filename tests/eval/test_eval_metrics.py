"""Top-k accuracy and the Markdown table, checked against answers worked out by hand."""

from __future__ import annotations

import pytest
import torch

from lvdtool.errors import InputError
from lvdtool.eval.metrics import markdown_table, topk_accuracy, topk_counts, topk_hits


def test_topk_accuracy_by_hand() -> None:
    scores = torch.tensor([
        [0.1, 0.7, 0.2, 0.0, 0.0, 0.0],  # ranking 1, 2, 0, ...
        [0.5, 0.1, 0.2, 0.3, 0.4, 0.9],  # ranking 5, 0, 4, 3, 2, 1
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # ranking 0..5
        [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],  # 5 first, then ties broken to the lower index: 0, 1, 2, 3
    ])
    labels = torch.tensor([1, 2, 5, 4])
    # row 0: top-1 hit; row 1: label 2 is 5th -> top-5 hit only; row 2: label 5 is 6th -> miss;
    # row 3: label 4 is 6th after tie-breaking (5, 0, 1, 2, 3, 4) -> miss
    assert topk_accuracy(scores, labels, ks=(1, 5)) == {1: 25.0, 5: 50.0}
    assert topk_accuracy(scores, labels, ks=(2, 6)) == {2: 25.0, 6: 100.0}


def test_ties_go_to_lower_class_index() -> None:
    scores = torch.zeros(3, 4)
    labels = torch.tensor([0, 1, 3])
    hits = topk_hits(scores, labels, ks=(1, 2))
    assert hits[1].tolist() == [True, False, False]
    assert hits[2].tolist() == [True, True, False]


def test_fewer_classes_than_k_clips_to_all_classes() -> None:
    scores = torch.tensor([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    labels = torch.tensor([0, 2])
    assert topk_accuracy(scores, labels, ks=(1, 5)) == {1: 0.0, 5: 100.0}


def test_counts_over_a_leading_grid_dimension() -> None:
    scores = torch.tensor([
        [[1.0, 0.0], [0.0, 1.0]],  # classifier 0: both right
        [[0.0, 1.0], [0.0, 1.0]],  # classifier 1: second right only
    ])
    labels = torch.tensor([0, 1])
    assert topk_counts(scores, labels, ks=(1,))[1].tolist() == [2, 1]


def test_bad_labels_and_shapes_are_input_errors() -> None:
    with pytest.raises(InputError, match="labels must lie"):
        topk_accuracy(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(InputError, match="labels must be"):
        topk_accuracy(torch.zeros(2, 3), torch.tensor([0]))
    with pytest.raises(InputError, match="ks"):
        topk_accuracy(torch.zeros(2, 3), torch.tensor([0, 1]), ks=(0,))


def test_markdown_table_layout_and_formats() -> None:
    rows = [
        {"name": "cls|last1", "lr": 5e-05, "top1": 81.234},
        {"name": "avgpool", "lr": 0.1, "top1": 9.5, "extra": "ignored"},
        {"name": "missing"},
    ]
    text = markdown_table(rows, ["name", "lr", "top1"], formats={"top1": ".1f"})
    lines = text.strip().split("\n")
    assert lines[0] == "| name | lr | top1 |"
    assert lines[1] == "| --- | ---: | ---: |"
    assert lines[2] == "| cls\\|last1 | 5e-05 | 81.2 |"
    assert lines[3] == "| avgpool | 0.1 | 9.5 |"
    assert lines[4] == "| missing |  |  |"
    assert "ignored" not in text

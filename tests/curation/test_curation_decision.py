"""Representatives, decontamination attribution, the calibration pair choice, benchmark names."""
from __future__ import annotations

import numpy as np
import pytest

from lvdtool.curation.calibration import pairs_near_threshold
from lvdtool.curation.decontaminate import parse_against
from lvdtool.curation.dedup_decision import FIRST_BENCHMARK, KEPT, NEAR_DUPLICATE, decide
from lvdtool.curation.duplicate_graph import Pairs
from lvdtool.curation.representatives import PolicyInputs, choose_representatives, duplicate_representatives, policy_scores
from lvdtool.curation.sparse_components import SparseComponents
from lvdtool.errors import ConfigError
from lvdtool.index import connected_components

KEYS = np.array(["k5", "k1", "k9", "k3", "k7", "k2", "k8"])
LABELS = np.array([0, 0, 1, 1, 1, 2, 3])


def test_representative_is_the_highest_score_then_the_smallest_key():
    pixels = np.array([10, 10, 5, 50, 50, 1, 1])
    reps = choose_representatives(LABELS, KEYS, [pixels])
    # component 0: tie at 10 -> k1 (row 1); component 1: tie at 50 between k3 and k7 -> k3 (row 3)
    assert reps.tolist() == [1, 3, 5, 6]
    secondary = np.array([0, 0, 0, 1, 9, 0, 0])
    assert choose_representatives(LABELS, KEYS, [pixels, secondary]).tolist() == [1, 4, 5, 6]
    first = policy_scores("first", PolicyInputs(keys=KEYS, images=None))
    assert choose_representatives(LABELS, KEYS, first).tolist() == [1, 3, 5, 6]


def test_highest_resolution_without_images_is_a_config_error():
    with pytest.raises(ConfigError, match="representative=first"):
        policy_scores("highest_resolution", PolicyInputs(keys=KEYS, images="/nonexistent/images"))
    with pytest.raises(ConfigError, match="unknown policy"):
        policy_scores("largest_file", PolicyInputs(keys=KEYS, images=None))


def test_a_component_touched_by_two_benchmarks_goes_to_the_first():
    # LABELS as edges: rows 0-1, 2-3-4 linked; 5 and 6 alone
    comps = SparseComponents.from_edges(7, np.array([0, 2, 3]), np.array([1, 3, 4]))
    assert comps.labels_of(np.arange(7)).tolist() == LABELS.tolist()
    nodes_keys = KEYS[comps.nodes]
    reps = duplicate_representatives(comps, nodes_keys, [])
    assert reps.tolist() == [1, 3]  # smallest key per duplicate component
    d = decide(comps, reps, [("a", np.array([3])), ("b", np.array([4, 6]))])
    assert d.codes_of(np.arange(7)).tolist() == [NEAR_DUPLICATE, KEPT, FIRST_BENCHMARK, FIRST_BENCHMARK, FIRST_BENCHMARK,
                                                 KEPT, FIRST_BENCHMARK + 1]
    assert d.removed_counts() == {"near_duplicate": 1, "contaminated:a": 3, "contaminated:b": 1}
    assert d.reasons(d.removed_code) == ["near_duplicate", "contaminated:a", "contaminated:a", "contaminated:a",
                                         "contaminated:b"]
    assert d.kept_in(0, 7).tolist() == [1, 5] and d.kept_in(2, 6).tolist() == [5]
    assert d.representative_of(np.arange(7)).tolist() == [1, 1, 3, 3, 3, 5, 6]


def test_sparse_components_match_the_dense_labels():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 500, 300), rng.integers(0, 500, 300)
    comps = SparseComponents.from_edges(500, a, b)
    dense = connected_components(500, a, b)
    assert comps.labels_of(np.arange(500)).tolist() == dense.tolist()
    assert comps.labels_of(np.arange(120, 260)).tolist() == dense[120:260].tolist()  # any row range alone
    assert comps.num_components == int(dense.max()) + 1
    roots, sizes = comps.duplicate_roots()
    assert sizes.tolist() == [int(np.sum(dense == dense[r])) for r in roots]


def test_calibration_takes_the_pairs_closest_to_the_threshold():
    sims = np.array([0.9, 0.61, 0.65, 0.59, 0.3, 0.55, 0.6], np.float32)
    pairs = Pairs(np.arange(7), np.arange(7) + 10, sims)
    near = pairs_near_threshold(pairs, 0.6, 2)
    assert near.above.sim.tolist() == pytest.approx([0.61, 0.65])
    assert near.below.sim.tolist() == pytest.approx([0.6, 0.59])  # 0.6 itself is not above the threshold


def test_against_names():
    got = parse_against(["data/eval/imagenet_val/", "pets=data/x"])
    assert [(b.name, b.path) for b in got] == [("imagenet_val", "data/eval/imagenet_val/"), ("pets", "data/x")]
    with pytest.raises(ConfigError, match="twice"):
        parse_against(["a=x", "a=y"])
    with pytest.raises(ConfigError, match="NAME=PATH"):
        parse_against(["bad name=x"])

"""Data curation behind `lvd dedup` and `lvd curate` (DINOv2's LVD-142M pipeline, DINOv3's balanced subset).

Dedup: `self_neighbour_pairs` (block-wise k-NN graph) -> `duplicate_components` -> representatives
(`REPRESENTATIVE_POLICIES`, `register_policy`) -> `decide` (kept / near_duplicate / contaminated).
Curate: `retrieve_nearest` (sample mode), `sample_linked_clusters` (cluster mode), `balanced_subset`
(hierarchical k-means), `union_of`. Global steps persist through `WorkState` (`<out>/_work/`).
"""
from lvdtool.curation.dedup_decision import DedupDecision, decide
from lvdtool.curation.duplicate_graph import Pairs, duplicate_components, self_neighbour_pairs
from lvdtool.curation.representatives import REPRESENTATIVE_POLICIES, choose_representatives, register_policy
from lvdtool.curation.retrieval import SeedResult, retrieve_nearest, sample_linked_clusters
from lvdtool.curation.row_subset import RowSubset
from lvdtool.curation.search import PoolSearcher, SearchConfig
from lvdtool.curation.union import Union, union_of
from lvdtool.curation.work_state import WorkState

__all__ = [
    "DedupDecision",
    "Pairs",
    "PoolSearcher",
    "REPRESENTATIVE_POLICIES",
    "RowSubset",
    "SearchConfig",
    "SeedResult",
    "Union",
    "WorkState",
    "choose_representatives",
    "decide",
    "duplicate_components",
    "register_policy",
    "retrieve_nearest",
    "sample_linked_clusters",
    "self_neighbour_pairs",
    "union_of",
]

"""Connected components of the duplicate graph held per graph node, not per row.

Only rows with an edge (the `nodes`) are stored, with the smallest row of their component (its
`root`); every other row is a component of its own. Canonical labels (components numbered 0.. in
order of their smallest row, as `connected_components` gives over all rows) are computed for any
rows on demand: the label of a component with smallest row m is m minus the number of non-root
nodes below m. So a global step costs O(pairs) memory and O(1) per row, and a shard's labels
O(rows of the shard + log pairs).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lvdtool.index import connected_components


@dataclass
class SparseComponents:
    num_rows: int
    nodes: np.ndarray  # int64, sorted: rows with at least one edge
    root: np.ndarray  # int64 per node: the smallest row of its component
    nonroot: np.ndarray  # int64, sorted: nodes that are not the smallest row of their component

    @classmethod
    def from_edges(cls, num_rows: int, a: np.ndarray, b: np.ndarray) -> "SparseComponents":
        a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
        nodes = np.unique(np.concatenate([a, b]))
        local = connected_components(len(nodes), np.searchsorted(nodes, a), np.searchsorted(nodes, b))
        # canonical local labels: component c's smallest node is the first node labelled c
        first = np.full(int(local.max()) + 1 if local.size else 0, len(nodes), dtype=np.int64)
        np.minimum.at(first, local, np.arange(len(nodes), dtype=np.int64))
        root = nodes[first[local]]
        return cls(int(num_rows), nodes, root, nodes[root != nodes])

    def arrays(self) -> dict[str, np.ndarray]:
        return {"num_rows": np.array(self.num_rows, np.int64), "nodes": self.nodes, "root": self.root}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "SparseComponents":
        nodes, root = arrays["nodes"].astype(np.int64), arrays["root"].astype(np.int64)
        return cls(int(arrays["num_rows"]), nodes, root, nodes[root != nodes])

    def _node_positions(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.searchsorted(self.nodes, rows)
        hit = pos < len(self.nodes)
        hit[hit] = self.nodes[pos[hit]] == rows[hit]
        return pos, hit

    def roots_of(self, rows: np.ndarray) -> np.ndarray:
        """The smallest row of the component of each of `rows`."""
        rows = np.asarray(rows, np.int64)
        pos, hit = self._node_positions(rows)
        out = rows.copy()
        out[hit] = self.root[pos[hit]]
        return out

    def labels_of(self, rows: np.ndarray) -> np.ndarray:
        """Canonical component label (int64) of each of `rows`."""
        roots = self.roots_of(rows)
        return roots - np.searchsorted(self.nonroot, roots)

    @property
    def num_components(self) -> int:
        return self.num_rows - len(self.nonroot)

    def duplicate_roots(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted roots of the components with more than one row, their sizes)."""
        roots, sizes = np.unique(self.root, return_counts=True)
        return roots, sizes.astype(np.int64)

    def sizes_of(self, roots: np.ndarray) -> np.ndarray:
        """Rows in the component of each root in `roots` (1 for rows without an edge)."""
        dup, sizes = self.duplicate_roots()
        roots = np.asarray(roots, np.int64)
        pos = np.minimum(np.searchsorted(dup, roots), max(len(dup) - 1, 0))
        hit = (dup[pos] == roots) if len(dup) else np.zeros(len(roots), bool)
        return np.where(hit, sizes[pos] if len(dup) else 0, 1).astype(np.int64)

    def node_groups(self) -> np.ndarray:
        """Per node, a dense group id 0.. (component order) for choosing representatives."""
        _, group = np.unique(self.root, return_inverse=True)
        return group.astype(np.int64)

"""Real torch.distributed (gloo on 127.0.0.1, 2 spawned processes) against one process."""

import socket
from pathlib import Path

import numpy as np
import torch.distributed as dist
import torch.multiprocessing as mp

from lvdtool.index import KMeansConfig, knn_search, spherical_kmeans

SPLIT = 230  # rank 0 holds rows [0, 230), rank 1 the rest: uneven on purpose
CONFIGS = {
    "parallel_init": KMeansConfig(n_iter=6, seed=4, init="kmeans||", chunk_rows=64, engine="torch"),
    "random_init_f64": KMeansConfig(n_iter=6, seed=5, init="random", chunk_rows=50, engine="torch",
                                    accumulate="float64"),
    "fit_sample": KMeansConfig(n_iter=6, seed=6, fit_sample=300, chunk_rows=64, engine="torch"),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        x = np.load(Path(folder) / "x.npy")
        mine = x[:SPLIT] if rank == 0 else x[SPLIT:]
        for name, config in CONFIGS.items():
            result = spherical_kmeans(mine, 7, config)  # distributed=None: all-reduce since 2 ranks
            np.save(Path(folder) / f"{name}_centroids_{rank}.npy", result.centroids)
            np.save(Path(folder) / f"{name}_assignment_{rank}.npy", result.assignment)
            np.save(Path(folder) / f"{name}_history_{rank}.npy", np.array(result.objective_history))
        sims, ids = knn_search(x[:40], mine, 5, engine="torch", chunk_rows=64, distributed=True)
        np.save(Path(folder) / f"knn_ids_{rank}.npy", ids)
        np.save(Path(folder) / f"knn_sims_{rank}.npy", sims)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_match_one_process(planted, tmp_path):
    x, _, _ = planted([90, 60, 120, 80, 70, 50, 30], dim=16, noise=0.2, seed=21)
    np.save(tmp_path / "x.npy", x)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)

    for name, config in CONFIGS.items():
        single = spherical_kmeans(x, 7, config)
        for rank in range(2):
            np.testing.assert_allclose(np.load(tmp_path / f"{name}_centroids_{rank}.npy"), single.centroids, atol=1e-5)
            np.testing.assert_allclose(np.load(tmp_path / f"{name}_history_{rank}.npy"), single.objective_history,
                                       rtol=1e-6)
        joined = np.concatenate([np.load(tmp_path / f"{name}_assignment_{r}.npy") for r in range(2)])
        np.testing.assert_array_equal(joined, single.assignment)

    sims, ids = knn_search(x[:40], x, 5, engine="torch")
    for rank in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"knn_ids_{rank}.npy"), ids)
        np.testing.assert_allclose(np.load(tmp_path / f"knn_sims_{rank}.npy"), sims, atol=1e-6)

"""k-means checkpoints (resume after a kill) and exact accumulation (the same bytes for any rank split)."""

import numpy as np
import torch.distributed as dist
import torch.multiprocessing as mp

from lvdtool.index import KMeansConfig, spherical_kmeans
from lvdtool.index.kmeans_checkpoint import KMeansCheckpoint

EXACT = KMeansConfig(n_iter=8, seed=3, init="random", chunk_rows=50, engine="torch", accumulate="exact",
                     stop_when_converged=False)


def test_a_run_resumed_from_its_checkpoint_ends_with_the_uninterrupted_centroids(planted, tmp_path):
    x, _, _ = planted([90, 60, 120, 80, 70], dim=16, noise=0.3, seed=5)
    full = spherical_kmeans(x, 5, EXACT)
    ckpt = KMeansCheckpoint(tmp_path / "kmeans.npz", every=1)
    # "killed" after 3 iterations: the checkpoint holds iteration 3
    partial = spherical_kmeans(x, 5, KMeansConfig(**{**vars(EXACT), "n_iter": 3}), checkpoint=ckpt)
    assert len(partial.objective_history) == 3
    resumed_ckpt = KMeansCheckpoint(tmp_path / "kmeans.npz", every=1)
    resumed = spherical_kmeans(x, 5, EXACT, checkpoint=resumed_ckpt)
    assert resumed_ckpt.loaded_iterations == 3  # it did not start again from init
    np.testing.assert_array_equal(resumed.centroids, full.centroids)
    np.testing.assert_array_equal(resumed.assignment, full.assignment)
    assert resumed.objective_history == full.objective_history
    # a finished run's checkpoint is final: a rerun does no Lloyd pass at all
    again = KMeansCheckpoint(tmp_path / "kmeans.npz", every=1)
    np.testing.assert_array_equal(spherical_kmeans(x, 5, EXACT, checkpoint=again).centroids, full.centroids)
    assert again.loaded_iterations == 8


def _worker(rank: int, port: int, folder: str) -> None:
    import pathlib

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=3)
    try:
        x = np.load(pathlib.Path(folder) / "x.npy")
        split = [0, 137, 301, len(x)]  # uneven, not at chunk boundaries
        for name, config in (("data", EXACT), ("sample", KMeansConfig(**{**vars(EXACT), "fit_sample": 250}))):
            result = spherical_kmeans(x[split[rank]:split[rank + 1]], 5, config)
            np.save(pathlib.Path(folder) / f"{name}_{rank}.npy", result.centroids)
            np.save(pathlib.Path(folder) / f"{name}_assign_{rank}.npy", result.assignment)
    finally:
        dist.destroy_process_group()


def test_exact_accumulation_gives_one_process_bytes_on_three_ranks(planted, tmp_path):
    import socket

    x, _, _ = planted([90, 60, 120, 80, 70], dim=16, noise=0.3, seed=6)
    np.save(tmp_path / "x.npy", x)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=3, join=True)
    for name, config in (("data", EXACT), ("sample", KMeansConfig(**{**vars(EXACT), "fit_sample": 250}))):
        single = spherical_kmeans(x, 5, config)
        for rank in range(3):
            np.testing.assert_array_equal(np.load(tmp_path / f"{name}_{rank}.npy"), single.centroids)
        joined = np.concatenate([np.load(tmp_path / f"{name}_assign_{r}.npy") for r in range(3)])
        np.testing.assert_array_equal(joined, single.assignment)

"""Two real gloo processes on 127.0.0.1: the cross-rank reductions equal one process on the
concatenated batch."""

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lvdtool.ssl.centering import SoftmaxCenter, sinkhorn_knopp

WORLD = 2


def _inputs():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2 * 6, 5, generator=g) * 3.0
    # masked-patch buffers: rank 0 has 4 valid rows of 6, rank 1 has 2 valid rows of 6
    patch_logits = torch.randn(2 * 6, 5, generator=g)
    n_valid = (4, 2)
    return logits, patch_logits, n_valid


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        logits, patch_logits, n_valid = _inputs()
        mine = logits.chunk(WORLD)[rank]
        q = sinkhorn_knopp(mine, temp=0.1, n_iterations=3)
        q_masked = sinkhorn_knopp(patch_logits.chunk(WORLD)[rank], temp=0.1, n_valid_rows=n_valid[rank])
        center = SoftmaxCenter(5, momentum=0.9)
        center.update(patch_logits.chunk(WORLD)[rank], n_valid_rows=n_valid[rank])
        torch.save({"q": q, "q_masked": q_masked, "center": center.center}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_equal_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    logits, patch_logits, n_valid = _inputs()

    # Sinkhorn-Knopp over the global batch
    full = sinkhorn_knopp(logits, temp=0.1, n_iterations=3)
    torch.testing.assert_close(torch.cat([r["q"] for r in results]), full)

    # masked variant: only the valid rows of each rank take part
    chunks = patch_logits.chunk(WORLD)
    valid = torch.cat([chunks[r][: n_valid[r]] for r in range(WORLD)])
    full_masked = sinkhorn_knopp(valid, temp=0.1)
    torch.testing.assert_close(results[0]["q_masked"][: n_valid[0]], full_masked[: n_valid[0]])
    torch.testing.assert_close(results[1]["q_masked"][: n_valid[1]], full_masked[n_valid[0]:])
    assert all(torch.all(results[r]["q_masked"][n_valid[r]:] == 0) for r in range(WORLD))

    # centre: the mean over all valid rows of both ranks, identical on every rank
    expected = 0.1 * valid.mean(dim=0, keepdim=True)
    for r in results:
        torch.testing.assert_close(r["center"], expected)

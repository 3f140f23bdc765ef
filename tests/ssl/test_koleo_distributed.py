"""Distributed KoLeo (DINOv3): two real gloo processes gather the normalised features with gradients;
each rank's neighbours come from its group of the global batch. The mean over ranks equals the plain
KoLeo of each group of the gathered batch, averaged over groups, and so do the gradients."""
from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lvdtool.config import compose_config
from lvdtool.errors import ConfigError, InputError
from lvdtool.ssl.koleo import koleo_loss, koleo_loss_distributed
from lvdtool.train.config import PretrainConfig
from lvdtool.train.plan import make_plan

WORLD, LOCAL, DIM = 2, 3, 4


def _features() -> torch.Tensor:
    return torch.randn(WORLD * LOCAL, DIM, generator=torch.Generator().manual_seed(0)) * 2.0  # rank-major


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        out = {}
        for group in (LOCAL, WORLD * LOCAL):
            mine = _features()[rank * LOCAL:(rank + 1) * LOCAL].clone().requires_grad_(True)
            loss = koleo_loss_distributed(mine, group)
            loss.backward()
            out[group] = (loss.detach(), mine.grad)
        torch.save(out, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_equal_the_plain_koleo_per_group_of_the_gathered_batch(tmp_path):
    # fork: the children inherit the imported torch (a spawn re-imports it, seconds per process)
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for group in (LOCAL, WORLD * LOCAL):
        full = _features().requires_grad_(True)
        groups = full.split(group)
        expected = torch.stack([koleo_loss(g) for g in groups]).mean()
        expected.backward()
        mean_over_ranks = torch.stack([ranks[r][group][0] for r in range(WORLD)]).mean()
        torch.testing.assert_close(mean_over_ranks, expected.detach())
        # every rank's loss back-propagates into every rank's features (the gather carries gradients):
        # the sum over ranks of the rank losses is WORLD x the mean
        grads = torch.cat([ranks[r][group][1] for r in range(WORLD)])
        torch.testing.assert_close(grads, WORLD * full.grad)
    # one group over both ranks differs from the per-rank KoLeo (other neighbours are found)
    assert not torch.allclose(ranks[0][LOCAL][0], ranks[0][WORLD * LOCAL][0])


def test_one_process_is_the_plain_koleo_and_a_bad_group_is_an_error():
    x = _features()
    torch.testing.assert_close(koleo_loss_distributed(x, WORLD * LOCAL), koleo_loss(x))
    with pytest.raises(InputError, match="group size 4"):
        koleo_loss_distributed(x, 4)


def test_a_group_size_that_does_not_fit_the_batch_names_the_key():
    def cfg(*extra: str) -> PretrainConfig:
        c, _ = compose_config("pretrain", ["data.images=/x", "out=/y", "train.batch_size_per_gpu=8", *extra],
                              PretrainConfig)
        return c
    with pytest.raises(ConfigError, match=r"dino\.koleo_group_size=12.*multiple of train\.batch_size_per_gpu=8"):
        cfg("dino.koleo_group_size=12").validate()
    ok = cfg("dino.koleo_group_size=16")
    ok.validate()
    assert make_plan(ok, n_images=1000, world_size=4).global_batch == 32
    with pytest.raises(ConfigError, match=r"dino\.koleo_group_size=16 does not divide the global batch 24"):
        make_plan(ok, n_images=1000, world_size=3)

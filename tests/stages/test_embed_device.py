"""embed's device choice is a pure function of the option, the environment and the visible GPUs."""
from __future__ import annotations

import pytest

from lvdtool.errors import ConfigError
from lvdtool.stages.embed import choose_device, local_rank_of


@pytest.mark.parametrize("local_rank", range(8))
def test_torchrun_ranks_spread_over_the_node_gpus(local_rank):
    env = {"LOCAL_RANK": str(local_rank), "RANK": str(8 + local_rank), "WORLD_SIZE": "16"}
    assert choose_device("auto", env, cuda_count=8) == f"cuda:{local_rank}"
    assert choose_device("cuda", env, cuda_count=8) == f"cuda:{local_rank}"


def test_srun_tasks_use_slurm_localid_and_local_rank_wins():
    assert choose_device("auto", {"SLURM_LOCALID": "5", "SLURM_PROCID": "13"}, cuda_count=8) == "cuda:5"
    assert choose_device("auto", {"LOCAL_RANK": "2", "SLURM_LOCALID": "5"}, cuda_count=8) == "cuda:2"
    assert local_rank_of({}) == 0


def test_a_task_bound_to_one_gpu_uses_it_whatever_its_local_rank():
    # srun --gpus-per-task=1: CUDA_VISIBLE_DEVICES holds one GPU, SLURM_LOCALID still counts 0..7
    assert choose_device("auto", {"SLURM_LOCALID": "6"}, cuda_count=1) == "cuda:0"


def test_cpu_fallback_and_explicit_choices():
    assert choose_device("auto", {"LOCAL_RANK": "3"}, cuda_count=0) == "cpu"
    assert choose_device("cpu", {"LOCAL_RANK": "3"}, cuda_count=8) == "cpu"
    assert choose_device("cuda:1", {"LOCAL_RANK": "3"}, cuda_count=8) == "cuda:1"


def test_impossible_choices_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="no CUDA device"):
        choose_device("cuda", {}, cuda_count=0)
    with pytest.raises(ConfigError, match="no CUDA device"):
        choose_device("cuda:0", {}, cuda_count=0)
    with pytest.raises(ConfigError, match="local rank 4 but only 4 CUDA devices"):
        choose_device("auto", {"LOCAL_RANK": "4"}, cuda_count=4)
    with pytest.raises(ConfigError, match="LOCAL_RANK='x' is not an integer"):
        choose_device("auto", {"LOCAL_RANK": "x"}, cuda_count=4)

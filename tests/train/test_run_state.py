"""Run-directory bookkeeping: which checkpoints count, and metrics.jsonl truncation on resume."""
from __future__ import annotations

import json

import torch

from lvdtool.train.checkpoint import CheckpointStore, checkpoint_name
from lvdtool.train.distributed import DistEnv
from lvdtool.train.metrics import MetricsLog, read_metrics


def store(tmp_path, keep: int = 2) -> CheckpointStore:
    return CheckpointStore(tmp_path, DistEnv(0, 1, 0, torch.device("cpu"), owns_group=False), keep)


def fake_checkpoint(root, iteration: int, complete: bool = True, suffix: str = "") -> None:
    path = root / "checkpoints" / (checkpoint_name(iteration) + suffix)
    path.mkdir(parents=True)
    if complete:
        (path / "state.json").write_text(json.dumps({"iteration": iteration, "data": {}, "plan": {}}))


def test_only_renamed_checkpoints_with_state_count(tmp_path):
    s = store(tmp_path)
    assert s.latest() is None
    fake_checkpoint(tmp_path, 10)
    fake_checkpoint(tmp_path, 20)
    fake_checkpoint(tmp_path, 30, suffix=".tmp")  # killed while writing
    fake_checkpoint(tmp_path, 40, complete=False)  # no state.json: not a checkpoint
    assert [it for it, _ in s.complete()] == [10, 20]
    assert s.latest().name == "ckpt-00000020"
    s.remove_partial()
    assert not (tmp_path / "checkpoints" / "ckpt-00000030.tmp").exists()
    assert s.read_state(s.latest())["iteration"] == 20


def test_prune_keeps_the_newest(tmp_path):
    s = store(tmp_path, keep=2)
    for it in (5, 10, 15):
        fake_checkpoint(tmp_path, it)
    s.prune()
    assert [it for it, _ in s.complete()] == [10, 15]


def test_metrics_truncated_to_the_resumed_iteration(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl", enabled=True)
    for it in range(6):
        log.write({"iteration": it, "loss": float(it)})
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"iteration": 6, "lo')  # torn by a kill
    assert log.truncate_from(4) == 4
    log.write({"iteration": 4, "loss": 40.0})
    assert [r["iteration"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [0, 1, 2, 3, 4]
    assert MetricsLog(tmp_path / "other.jsonl", enabled=False).truncate_from(0) == 0

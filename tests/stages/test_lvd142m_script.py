"""stages/lvd142m.sh: DRY_RUN=1 prints every command, and each `lvd` command parses with the real CLI and
composes with its stage's config (a renamed option or config key fails here)."""
from __future__ import annotations

import importlib
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import typer

from lvdtool.cli import STAGE_CONFIGS, app
from lvdtool.config import compose_config

SCRIPT = Path(__file__).resolve().parents[2] / "stages" / "lvd142m.sh"
CHAIN = ["crawl-ingest", "embed", "dedup", "embed", "curate", "pretrain", "probe"]


def dry_run(**env: str) -> list[list[str]]:
    res = subprocess.run(["bash", str(SCRIPT), "/scratch/lvd142m"], capture_output=True, text=True, timeout=60,
                         env={"PATH": os.environ["PATH"], "DRY_RUN": "1", **env})
    assert res.returncode == 0, res.stderr
    return [shlex.split(line) for line in res.stdout.splitlines() if line.strip()]


def lvd_argv(argv: list[str]) -> list[str]:
    """The `lvd STAGE ...` part of a launcher line (`srun ... lvd` or `torchrun ... -m lvdtool.cli`)."""
    for i, word in enumerate(argv):
        if word == "lvd":
            return argv[i + 1:]
        if word == "-m" and argv[i + 1] == "lvdtool.cli":
            return argv[i + 2:]
    raise AssertionError(f"no lvd command in: {shlex.join(argv)}")


@pytest.fixture(scope="module")
def composed():
    """Each printed command through the real typer CLI; the stage's `main` composes its config only."""
    lines = dry_run()
    out: list[tuple[str, object, list[str], list[str]]] = []
    line: list[list[str]] = [[]]  # the launcher line being parsed
    mp = pytest.MonkeyPatch()
    for stage, (name, module, schema) in STAGE_CONFIGS.items():
        mod = importlib.import_module(module)
        schema_cls = getattr(mod, schema)

        def compose_only(overrides, overwrite=False, _stage=stage, _name=name, _schema=schema_cls, **_):
            cfg, _ = compose_config(_name, list(overrides), _schema)
            out.append((_stage, cfg, list(overrides), line[0]))
            return {}

        mp.setattr(mod, "main", compose_only)
    command = typer.main.get_command(app)
    for argv in lines:
        line[0] = argv
        command.main(args=lvd_argv(argv), prog_name="lvd", standalone_mode=False)
    mp.undo()
    assert len(out) == len(lines)
    return out


def test_dry_run_prints_the_whole_chain_in_order(composed):
    stages = [stage for stage, *_ in composed]
    order = [s for i, s in enumerate(stages) if i == 0 or s != stages[i - 1]]
    assert order == CHAIN


def test_stages_run_under_their_launchers_at_their_documented_size(composed):
    for stage, _, _, argv in composed:
        assert argv[0] == "srun" or argv[:2] == ["lvd", "curate"], argv  # only curate's cost estimate runs bare
        if "torchrun" in argv:
            nnodes = next(a for a in argv if a.startswith("--nnodes=")).split("=")[1]
            assert f"--nodes={nnodes}" in argv and "--nproc_per_node=8" in argv
    pool = [argv for stage, cfg, _, argv in composed if stage == "embed" and cfg.out.endswith("sscd/pool")]
    assert "--nodes=16" in pool[0]


def test_the_chain_is_wired_and_uses_the_paper_parameters(composed):
    by = {}
    for stage, cfg, _, _ in composed:
        by.setdefault(stage, []).append(cfg)
    sscd = [c for c in by["embed"] if c.model.kind == "torchscript"]
    vit = [c for c in by["embed"] if c.model.kind == "vit"]
    dedup = by["dedup"][0]
    assert all(c.model.dim == 512 and c.preprocess.square and c.preprocess.resize == 320 for c in sscd)
    assert dedup.embeddings in {c.out for c in sscd} and len(dedup.against) == len(sscd) - 1
    assert (dedup.k, dedup.threshold, dedup.against_threshold) == (64, 0.6, 0.45)
    pool = next(c for c in vit if c.selection)
    assert pool.selection == dedup.out and pool.images == by["crawl-ingest"][0].out
    curate = by["curate"][-1]
    assert curate.pool == pool.out and curate.selection == dedup.out and not curate.dry_run and by["curate"][0].dry_run
    assert curate.seeds == ["imagenet22k", "imagenet1k", "gldv2"]
    assert [curate.seed_sets[s].k for s in curate.seeds] == [4, 32, 4]
    assert {curate.seed_sets[s].path for s in curate.seeds} <= {c.out for c in vit}
    pretrain = by["pretrain"][0]
    assert pretrain.data.selection == curate.out and pretrain.model.arch == "vit_g14"
    assert by["probe"][0].weights == str(Path(pretrain.out) / "backbone.pth")


def test_steps_select_a_part_of_the_chain():
    lines = dry_run(STEPS="dedup embed")
    assert [lvd_argv(a)[0] for a in lines] == ["dedup", "embed", "embed", "embed", "embed"]
    res = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                         env={"PATH": os.environ["PATH"]})
    assert res.returncode != 0 and "set URLS" in res.stderr  # a real run needs its inputs

"""Packaged configs: the paper's defaults, the named seed sets, and the full-scale script's syntax."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lvdtool.config import compose_config
from lvdtool.curation.seed_sets import resolve_seed_sets
from lvdtool.errors import ConfigError, InputError
from lvdtool.stages.curate import CurateConfig
from lvdtool.stages.dedup import DedupConfig

REPO = Path(__file__).resolve().parents[2]


def test_dedup_defaults_are_the_papers():
    cfg, _ = compose_config("dedup", ["embeddings=e", "out=o"], DedupConfig)
    assert (cfg.k, cfg.threshold, cfg.against_threshold, cfg.representative) == (64, 0.6, 0.45, "highest_resolution")


def test_named_seed_sets_resolve_to_the_papers_retrieval():
    cfg, resolved = compose_config("curate", ["pool=p", "out=o", "seeds=[imagenet22k,imagenet1k,gldv2,demo]",
                                              "seed_sets.demo.path=elsewhere/seed_emb"], CurateConfig)
    sets = {s.name: s for s in resolve_seed_sets(cfg.seeds, [], cfg.seed_sets, cfg.retrieval, allow_missing=True)}
    # seed sets over 1M images: k nearest pool images per seed image, no cap
    assert [(sets[n].mode, sets[n].k, sets[n].cap) for n in ("imagenet22k", "imagenet1k", "gldv2")] == [
        ("sample", 4, None), ("sample", 32, None), ("sample", 4, None)]
    # a small set: cluster sampling from clusters with more than 3 seed images, 1M cap
    assert (sets["demo"].mode, sets["demo"].min_seed_images, sets["demo"].cap) == ("cluster", 3, 1_000_000)
    # the stored config holds path keys absolute (resolved against the cwd): a rerun from elsewhere is the same run
    assert sets["demo"].path == "elsewhere/seed_emb"
    assert resolved["seed_sets"]["demo"]["path"] == os.path.abspath("elsewhere/seed_emb")
    assert (cfg.retrieval.pool_clusters, cfg.retrieval.per_cluster, cfg.retrieval.large_seed_threshold) == (
        100_000, 10_000, 1_000_000)


def test_unknown_seed_set_names_the_known_ones():
    cfg, _ = compose_config("curate", ["pool=p", "out=o", "seeds=[imagenet21k]"], CurateConfig)
    with pytest.raises(ConfigError, match="imagenet22k"):
        resolve_seed_sets(cfg.seeds, [], cfg.seed_sets, cfg.retrieval, allow_missing=True)
    cfg, _ = compose_config("curate", ["pool=p", "out=o", "seeds=[imagenet1k]"], CurateConfig)
    with pytest.raises(InputError, match="seed_sets.imagenet1k.path"):  # the artifact must exist for a real run
        resolve_seed_sets(cfg.seeds, [], cfg.seed_sets, cfg.retrieval)


def test_full_scale_script_is_valid_bash():
    proc = subprocess.run(["bash", "-n", str(REPO / "stages" / "lvd142m.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

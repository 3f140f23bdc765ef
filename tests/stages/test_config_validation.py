"""Configs are checked before a stage creates anything: ranges of numeric keys, choices of
enumerated keys, `+key` appends (config_checks, config_rules)."""
from __future__ import annotations

import dataclasses
import importlib
import json
import types
import typing
from importlib.resources import files

import pytest

from lvd_runner import lvd
from lvdtool.cli import STAGE_CONFIGS
from lvdtool.config import compose_config
from lvdtool.config_rules import rules_of
from lvdtool.errors import ConfigError

# the keys a stage cannot compose without (MISSING in its schema)
REQUIRED = {
    "crawl_ingest": ["out=/x/o"], "embed": ["images=/x/i", "out=/x/o"],
    "probe": ["weights=/x/w", "train=/x/t", "val=/x/v", "out=/x/o"], "dedup": ["embeddings=/x/e", "out=/x/o"],
    "curate": ["pool=/x/p", "out=/x/o"], "pretrain": ["out=/x/o", "data.images=/x/i"],
    "hires_adapt": ["out=/x/o", "data.images=/x/i", "from_run=/x/r"],
    "distill": ["out=/x/o", "data.images=/x/i", "distill.teacher=/x/t", "distill.students=[vit_test]"],
}
SCHEMAS = {name: (module, schema) for name, module, schema in STAGE_CONFIGS.values()}
GROUPS = {"pretrain": "recipe", "hires_adapt": "hires_recipe", "distill": "distill_recipe", "embed": "preprocess"}


def compose(name: str, *overrides: str):
    module, schema = SCHEMAS[name]
    return compose_config(name, REQUIRED[name] + list(overrides), getattr(importlib.import_module(module), schema))


def _numeric(tp) -> bool:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_numeric(a) for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) in (list, tuple):
        return any(_numeric(a) for a in typing.get_args(tp) if a is not Ellipsis)
    return tp in (int, float)


def _schemas(cls, seen):
    if cls in seen:
        return
    seen.add(cls)
    for tp in typing.get_type_hints(cls).values():
        for t in [tp, *typing.get_args(tp), *(x for a in typing.get_args(tp) for x in typing.get_args(a))]:
            if dataclasses.is_dataclass(t):
                _schemas(t, seen)


def test_every_numeric_key_of_every_stage_schema_has_a_range():
    seen: set = set()
    for module, schema in SCHEMAS.values():
        _schemas(getattr(importlib.import_module(module), schema), seen)
    assert len(seen) > 30  # all the sections were found
    missing = [f"{cls.__module__}.{cls.__qualname__}.{name}" for cls in seen
               for name, tp in typing.get_type_hints(cls).items() if _numeric(tp) and name not in rules_of(cls)]
    assert missing == []


def test_every_packaged_preset_passes_the_checks():
    composed = 0
    for name in SCHEMAS:
        options = [None]
        if name in GROUPS:
            options += sorted(p.name[:-5] for p in (files("lvdtool.configs") / GROUPS[name]).iterdir() if p.name.endswith(".yaml"))
        for option in options:
            compose(name, *([f"{GROUPS[name]}={option}"] if option else []))
            composed += 1
    assert composed >= 25


@pytest.mark.parametrize("name, override, message", [
    ("embed", "resolution=0", "config embed: resolution=0: must be >= 1"),
    ("embed", "batch_size=-4", "config embed: batch_size=-4: must be >= 1"),
    ("embed", "precision=fp8", "config embed: precision='fp8': expected one of auto, bf16, fp32"),
    ("embed", "device=tpu", "config embed: device='tpu': expected one of auto, cpu, cuda, cuda:N"),
    ("embed", "workers=-1", "config embed: workers=-1: must be >= 0"),
    ("embed", "preprocess.std=[0.2,0,0.2]", "config embed: preprocess.std[1]=0.0: must be > 0"),
    ("pretrain", "optim.base_lr=-1", "config pretrain: optim.base_lr=-1.0: must be > 0"),
    ("pretrain", "data.workers=-1", "config pretrain: data.workers=-1: must be >= 0"),
    ("pretrain", "parallel.device=tpu", "config pretrain: parallel.device='tpu': expected one of auto, cpu, cuda"),
    ("pretrain", "crops.flip_prob=1.5", "config pretrain: crops.flip_prob=1.5: must be in [0, 1]"),
    ("pretrain", "ibot.mask_ratio=[0.1,1.5]", "config pretrain: ibot.mask_ratio[1]=1.5: must be in [0, 1]"),
    ("pretrain", "train.batch_size_per_gpu=0", "config pretrain: train.batch_size_per_gpu=0: must be >= 1"),
    ("pretrain", "train.tensorboard=yes", "config pretrain: train.tensorboard='yes': expected one of auto, on, off"),
    ("pretrain", "model.arch=vit_nope", "config pretrain: model.arch='vit_nope': expected one of"),
    ("hires_adapt", "crops.global_crops_size=0", "config hires-adapt: crops.global_crops_size=0: must be >= 1"),
    ("distill", "distill.students=[vit_nope]", "config distill: distill.students[0]='vit_nope': expected one of"),
    ("dedup", "threshold=1.0", "config dedup: threshold=1.0: must be in [-1, 1)"),
    ("dedup", "k=0", "config dedup: k=0: must be >= 1"),
    ("dedup", "engine=cuda", "config dedup: engine='cuda': expected one of auto, faiss, torch"),
    ("curate", "hkmeans.levels=[{n_clusters:0}]", "config curate: hkmeans.levels[0].n_clusters=0: must be >= 1"),
    ("curate", "kmeans.checkpoint_every=0", "config curate: kmeans.checkpoint_every=0: must be >= 1"),
    ("curate", "seed_sets.demo.k=0", "config curate: seed_sets.demo.k=0: must be >= 1"),
    ("curate", "method=bogus", "config curate: method='bogus': expected one of retrieval, hkmeans"),
    ("crawl_ingest", "threads=0", "config crawl-ingest: threads=0: must be >= 1"),
    ("crawl_ingest", "dedup.max_distance=65", "config crawl-ingest: dedup.max_distance=65: must be in [0, 64]"),
    ("probe", "knn.ks=[10,0]", "config probe: knn.ks[1]=0: must be >= 1"),
    ("probe", "protocol=fast", "config probe: protocol='fast': expected one of cached, official"),
    ("probe", "linear.lrs=[0.1,-1]", "config probe: linear.lrs[1]=-1.0: must be > 0"),
])
def test_a_value_out_of_range_or_choices_is_refused_by_key(name, override, message):
    with pytest.raises(ConfigError) as info:
        compose(name, override)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_values_inside_the_ranges_pass():
    cfg, _ = compose("embed", "device=cuda:1", "resolution=112", "workers=0", "precision=bf16")
    assert (cfg.device, cfg.resolution, cfg.workers, cfg.precision) == ("cuda:1", 112, 0, "bf16")
    cfg, _ = compose("pretrain", "optim.clip_grad=0", "dino.koleo_weight=0", "crops.flip_prob=0", "teacher.final_momentum=1")
    assert (cfg.optim.clip_grad, cfg.dino.koleo_weight, cfg.crops.flip_prob) == (0, 0, 0)


@pytest.mark.parametrize("name, override, message", [
    ("embed", "+foo.bar=1", "config embed: +foo.bar: no such key (list the keys with: lvd config embed)"),
    ("crawl_ingest", "+process.szie=128", "config crawl-ingest: +process.szie: no such key (did you mean process.size?)"),
    ("pretrain", "+optim.base_lrr=0.1", "config pretrain: +optim.base_lrr: no such key (did you mean optim.base_lr?)"),
    ("curate", "+seed_sets.mine.patth=/x", "config curate: +seed_sets.mine.patth: no such key"),
])
def test_an_append_of_no_key_is_refused_in_one_line(name, override, message):
    with pytest.raises(ConfigError) as info:
        compose(name, override)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_an_append_of_an_existing_key_is_the_plain_override():
    cfg, resolved = compose("embed", "+resolution=112")
    assert cfg.resolution == 112 and resolved["resolution"] == 112
    cfg, _ = compose("crawl_ingest", "+process.size=256")
    assert cfg.process.size == 256
    cfg, _ = compose("curate", "+seed_sets.demo.k=5")  # inside a mapping of sections
    assert cfg.seed_sets["demo"].k == 5


@pytest.fixture(scope="module")
def images(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("validation")
    src = root / "src"
    src.mkdir()
    for name, img in list(photos.items())[:3]:
        img.save(src / f"{name}.jpg", quality=90)
    lvd("crawl-ingest", "--dir", str(src), "--out", str(root / "images"))
    return root / "images"


def test_a_config_error_leaves_no_output_and_the_corrected_command_runs(tmp_path, images):
    out = tmp_path / "emb"
    base = ("embed", "--images", str(images), "--arch", "vit_test", "--out", str(out), "random_init=true")
    zero = lvd(*base, "resolution=0", check=False)
    assert zero.returncode == 2 and zero.stderr.strip() == "error: config embed: resolution=0: must be >= 1"
    assert not out.exists()
    # the patch size is the model's: checked once it is loaded, still before the output is created
    hundred = lvd(*base, "resolution=100", check=False)
    assert hundred.returncode == 2
    assert hundred.stderr.strip() == "error: embed: resolution=100: must be a positive multiple of the patch size 14"
    assert not out.exists()
    lvd(*base, "resolution=56")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["stats"]["embedded"] == 3


def test_a_misspelt_append_is_one_line_and_creates_nothing(tmp_path, images):
    out = tmp_path / "again"
    res = lvd("crawl-ingest", "--dir", str(images), "--out", str(out), "+process.szie=128", check=False)
    assert res.returncode == 2
    assert res.stderr.strip() == "error: config crawl-ingest: +process.szie: no such key (did you mean process.size?)"
    assert not out.exists()

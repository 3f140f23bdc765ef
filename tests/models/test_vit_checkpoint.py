"""Saving and loading backbone weights: round trips, wrappers, atomic writes, clear errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from lvdtool.errors import CheckpointError
from lvdtool.models import (
    backbone_fingerprint,
    build_backbone,
    describe_backbone,
    load_backbone,
    read_weights,
    save_backbone,
)
from lvdtool.models import checkpoint as checkpoint_module


def same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 42, 56)
    out_a, out_b = a.eval()(x), b.eval()(x)
    for key in ("x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens", "x_prenorm"):
        assert torch.equal(out_a[key], out_b[key]), key


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("registers", [0, 4])
def test_round_trip_in_official_layout(tmp_path: Path, make_test_vit, layout_table, suffix: str, registers: int) -> None:
    # Interpolation settings are not stored in the official layout: loading assumes the hub
    # convention (registers: offset 0 + antialias), so the register model is built that way.
    model = make_test_vit(num_register_tokens=registers, interpolate_offset=0.1 * (not registers),
                          interpolate_antialias=bool(registers))
    path = save_backbone(model, tmp_path / f"backbone{suffix}")
    stored = read_weights(path)
    want = layout_table(dim=32, depth=2, patch=14, grid=4, registers=registers, ffn="mlp", hidden=128)
    assert {k: tuple(v.shape) for k, v in stored.items()} == want
    assert all(v.dtype == torch.float32 for v in stored.values())
    loaded = load_backbone(path)  # architecture read off the weights
    assert loaded.config.structure() == model.config.structure()
    assert loaded.config.arch == ("vit_test" if not registers else "custom")
    same_outputs(model, loaded)
    if registers:  # a model with another convention gets it back through overrides
        plain = load_backbone(path, interpolate_offset=0.1, interpolate_antialias=False)
        assert plain.config.interpolate_offset == 0.1 and not plain.config.interpolate_antialias
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.name + ".json"]  # weights + sidecar, no temp file


def test_swiglu_unusual_width_and_overrides(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_backbone("vit_test", embed_dim=48, num_heads=3, ffn="swiglu", mlp_ratio=3.0)
    path = save_backbone(model, tmp_path / "w.pt")
    # 48 is no registered width: heads are guessed (48 // 64 -> 1), so they must be passed.
    loaded = load_backbone(path, num_heads=3, drop_path_rate=0.2)
    assert loaded.config.hidden_dim == model.config.hidden_dim and loaded.config.drop_path_rate == 0.2
    same_outputs(model, loaded)
    assert load_backbone(path).config.num_heads == 3  # read off the sidecar save_backbone wrote
    (tmp_path / "w.pt.json").unlink()
    assert load_backbone(path).config.num_heads == 1  # without it: guessed
    by_name = load_backbone(path, arch="vit_test", embed_dim=48, num_heads=3, ffn="swiglu", mlp_ratio=3.0)
    same_outputs(model, by_name)


def test_unwraps_training_checkpoints_and_prefixes(tmp_path: Path, make_test_vit) -> None:
    teacher, student = make_test_vit(seed=1), make_test_vit(seed=2)
    t_state, s_state = teacher.state_dict(), student.state_dict()
    head = {"dino_head.mlp.0.weight": torch.randn(4, 32), "ibot_head.last_layer.weight_g": torch.randn(4, 1)}

    def chunked(state: dict) -> dict:  # official FSDP layout: blocks.{chunk}.{i}.*
        return {(f"blocks.{k.split('.')[1]}.{k[len('blocks.'):]}" if k.startswith("blocks.") else k): v
                for k, v in state.items()}

    wrapped = {
        "teacher_checkpoint.pth": {"teacher": {**{f"backbone.{k}": v for k, v in chunked(t_state).items()},
                                               **head}},
        "model_0001.pth": {"model": {**{f"student.backbone.{k}": v for k, v in s_state.items()},
                                     **{f"teacher.backbone.{k}": v for k, v in t_state.items()}},
                           "optimizer": {"state": {}}, "iteration": 12},
        "ddp.pth": {"state_dict": {f"module.{k}": v for k, v in t_state.items()}},
    }
    for name, payload in wrapped.items():
        torch.save(payload, tmp_path / name)
        same_outputs(teacher, load_backbone(tmp_path / name))
    same_outputs(teacher, load_backbone(wrapped["ddp.pth"]))  # a dict works like a file
    half = load_backbone({k: v.half() for k, v in t_state.items()})  # fp16 training checkpoints
    assert all(p.dtype == torch.float32 for p in half.parameters())
    assert torch.equal(half.pos_embed, t_state["pos_embed"].half().float())
    # Saving a wrapper module keeps only the backbone, under official names.
    container = torch.nn.ModuleDict({"backbone": teacher, "head": torch.nn.Linear(32, 4)})
    path = save_backbone(container, tmp_path / "from_container.pth")
    assert "cls_token" in read_weights(path) and "head.weight" not in read_weights(path)


def test_errors_name_the_file_and_the_keys(tmp_path: Path, make_test_vit) -> None:
    random_keys = tmp_path / "random_keys.pth"
    torch.save({"foo.weight": torch.zeros(2), "bar.bias": torch.zeros(3)}, random_keys)
    with pytest.raises(CheckpointError, match=r"random_keys\.pth.*patch_embed\.proj\.weight.*foo\.weight"):
        load_backbone(random_keys)

    good = save_backbone(make_test_vit(), tmp_path / "good.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pth: cannot read weights"):
        load_backbone(truncated)
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match=r"notes\.pth: cannot read weights"):
        load_backbone(text)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(CheckpointError, match=r"garbage\.safetensors"):
        load_backbone(garbage)
    with pytest.raises(CheckpointError, match=r"missing\.pth: no such"):
        load_backbone(tmp_path / "missing.pth")

    state = read_weights(good)
    del state["blocks.1.norm2.weight"]
    state["blocks.1.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "edited.pth")
    with pytest.raises(CheckpointError, match=r"edited\.pth.*missing 1 key \(blocks\.1\.norm2\.weight\).*"
                                              r"unexpected 1 key \(blocks\.1\.extra\.weight\)"):
        load_backbone(tmp_path / "edited.pth")
    with pytest.raises(CheckpointError, match=r"good\.pth: shapes do not match backbone vit_tiny.*cls_token"):
        load_backbone(good, arch="vit_tiny", depth=2)
    torch.save([1, 2, 3], tmp_path / "a_list.pth")
    with pytest.raises(CheckpointError, match=r"a_list\.pth: holds a list"):
        load_backbone(tmp_path / "a_list.pth")
    with pytest.raises(CheckpointError, match="patch_embed"):
        save_backbone(torch.nn.Linear(2, 2), tmp_path / "linear.pth")


def test_failed_write_keeps_the_previous_file(tmp_path: Path, make_test_vit, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_backbone(make_test_vit(seed=1), tmp_path / "backbone.pth")
    before = path.read_bytes()

    def broken_save(obj: object, target: object) -> None:
        Path(str(target)).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_backbone(make_test_vit(seed=2), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone.pth", "backbone.pth.json"]


def test_fingerprint_and_description(tmp_path: Path, make_test_vit) -> None:
    first = save_backbone(make_test_vit(seed=1), tmp_path / "a.pth")
    again = save_backbone(make_test_vit(seed=1), tmp_path / "b.safetensors")
    other = save_backbone(make_test_vit(seed=2), tmp_path / "c.pth")
    fp = backbone_fingerprint(first)
    assert fp == hashlib.sha256(Path(first).read_bytes()).hexdigest()  # what sha256sum prints
    assert fp == backbone_fingerprint(first) and fp != backbone_fingerprint(other)
    assert backbone_fingerprint(again) != fp  # a different file format is a different file
    with torch.device("meta"):
        hub = build_backbone("vit_l14_reg4", drop_path_rate=0.4)  # training knobs do not change the arch
    info = describe_backbone(hub)
    assert info["arch"] == "vit_l14_reg4" and info["config"]["embed_dim"] == 1024
    assert info["params"] == sum(p.numel() for p in hub.parameters())
    odd = describe_backbone(build_backbone("vit_test", depth=3))
    assert odd["arch"] is None and odd["built_from"] == "vit_test"


def test_sidecar_keeps_the_head_count_the_official_layout_cannot_hold(tmp_path: Path) -> None:
    torch.manual_seed(0)
    # width 96 is no registered arch's: without the sidecar its head count could only be guessed
    model = build_backbone("vit_test", patch_size=8, img_size=32, embed_dim=96, num_heads=4, layerscale_init=1.0)
    with torch.no_grad():  # attention that matters: weights well away from the tiny init
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    path = save_backbone(model, tmp_path / "backbone.pth")
    sidecar = tmp_path / "backbone.pth.json"
    assert sidecar.is_file()
    assert set(torch.load(path, weights_only=True)) == set(model.state_dict())  # weights file unchanged in layout
    loaded = load_backbone(path)
    assert loaded.config.num_heads == 4
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(x)["x_norm_clstoken"], model.eval()(x)["x_norm_clstoken"])
    # without the sidecar the head count is a guess (64-dim heads: 1), and the outputs differ
    sidecar.unlink()
    guessed = load_backbone(path)
    assert guessed.config.num_heads == 1
    assert not torch.allclose(guessed.eval()(x)["x_norm_clstoken"], model.eval()(x)["x_norm_clstoken"], atol=1e-4)
    # an explicit override wins over a sidecar
    save_backbone(model, path)
    assert load_backbone(path, num_heads=2).config.num_heads == 2
    sidecar.write_text("{not json")
    with pytest.raises(CheckpointError, match="backbone.pth.json: unreadable backbone sidecar"):
        load_backbone(path)

"""Outputs are safe: --out must be absent, empty or an artifact of the same stage; --overwrite deletes
only such an artifact, never an input, and says what it deleted (direct calls; the CLI cases are in
tests/stages/test_output_safety_cli.py)."""
from __future__ import annotations

import json

import pytest

from lvdtool.artifacts import InputRef, ShardedOutput, read_manifest, shard_name
from lvdtool.artifacts.output_guard import input_paths
from lvdtool.artifacts.output_lock import LOCK_NAME
from lvdtool.artifacts.ranks import RankInfo
from lvdtool.errors import ArtifactError, ConfigError
from lvdtool.train.run_dir import prepare_run_dir, release_run_dir


def _open(out, run_id="r1", inputs=(), config=None, **kw) -> ShardedOutput:
    return ShardedOutput(out, kind="embeddings", stage="embed", config=config or {"a": 1}, inputs=list(inputs),
                         ranks=RankInfo(0, 1, run_id), **kw)


def _finished(out, n=2) -> None:
    art = _open(out)
    for i in range(n):
        tmp = art.temp(f"shards/{shard_name(i)}.bin")
        tmp.write_bytes(b"v" * (i + 1))
        art.commit(shard_name(i), {f"shards/{shard_name(i)}.bin": tmp}, rows=1, stats={})
    assert art.try_finalize([shard_name(i) for i in range(n)])
    art.release()


def _user_folder(path):
    path.mkdir()
    (path / "a.txt").write_text("my notes")
    (path / "b").mkdir()
    (path / "b" / "c.jpg").write_bytes(b"\xff\xd8 not really")
    (path / "d.csv").write_text("x,y\n")
    (path / "e.txt").write_text("more")


def test_a_non_empty_foreign_folder_is_refused_naming_what_is_there(tmp_path):
    user = tmp_path / "mine"
    _user_folder(user)
    with pytest.raises(ArtifactError) as err:
        _open(user)
    assert str(err.value) == (f"{user}: exists and holds 4 entries that are not an lvd embed artifact "
                              "(a.txt, b/, d.csv, ...); choose an empty or new --out")
    assert sorted(p.name for p in user.iterdir()) == ["a.txt", "b", "d.csv", "e.txt"], "nothing written into it"


def test_overwrite_refuses_a_foreign_folder_and_keeps_its_files(tmp_path):
    user = tmp_path / "mine"
    _user_folder(user)
    with pytest.raises(ArtifactError, match="not an lvd embed artifact"):
        _open(user, overwrite=True)
    assert (user / "a.txt").read_text() == "my notes" and (user / "b" / "c.jpg").exists()


def test_a_file_and_a_path_that_cannot_be_created_are_refused(tmp_path):
    f = tmp_path / "file.bin"
    f.write_bytes(b"x")
    with pytest.raises(ArtifactError, match=r"file\.bin: is a file, not a folder; choose an empty or new --out"):
        _open(f, overwrite=True)
    assert f.read_bytes() == b"x"
    with pytest.raises(ArtifactError, match=r"file\.bin/sub: cannot be created \(.*\); choose another --out"):
        _open(f / "sub")


def test_another_stages_artifact_is_refused_even_with_overwrite(tmp_path):
    out = tmp_path / "emb"
    _finished(out)
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(ArtifactError, match=r"holds a 'embeddings' artifact from stage 'embed', not an lvd dedup artifact"):
        ShardedOutput(out, kind="selection", stage="dedup", config={}, inputs=[], overwrite=True,
                      ranks=RankInfo(0, 1, "r2"))
    assert (out / "manifest.json").read_bytes() == before and read_manifest(out).complete


def test_overwrite_deletes_a_same_stage_artifact_and_says_what(tmp_path, capsys):
    out = tmp_path / "emb"
    _finished(out)
    _open(out, run_id="r2", overwrite=True)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == f"{out}: --overwrite deleted an lvd embed artifact: complete, 2 shards, 6 files"
    assert not (out / "shards" / f"{shard_name(0)}.bin").exists()
    assert read_manifest(out).complete is False, "a fresh start"


def test_a_changed_config_is_refused_saying_what_overwrite_would_delete(tmp_path):
    out = tmp_path / "emb"
    _finished(out)
    with pytest.raises(ConfigError) as err:
        _open(out, run_id="r2", config={"a": 2})
    assert "differs at: config.a" in str(err.value)
    assert str(err.value).endswith("or pass --overwrite to delete it (an lvd embed artifact: complete, 2 shards, 6 files)")


@pytest.mark.parametrize("where", ["is", "contains", "lies inside"])
def test_overwrite_never_deletes_an_input(tmp_path, where):
    images = tmp_path / "images"
    images.mkdir()
    (images / "manifest.json").write_text("{}")
    out = {"is": images, "contains": tmp_path, "lies inside": images / "emb"}[where]
    ref = InputRef(path=str(images.resolve()), kind="images", fingerprint="shards:x", role="images")
    with pytest.raises(ArtifactError) as err:
        _open(out, inputs=[ref], config={"images": str(images)}, overwrite=True)
    assert str(err.value).startswith(f"{out}: {where} this command's input images=")
    assert "choose another --out" in str(err.value) and "--overwrite" not in str(err.value)
    assert (images / "manifest.json").read_text() == "{}"


def test_input_paths_cover_every_path_key_of_a_stage(tmp_path):
    for name in ("u.txt", "d", "ca.pem"):
        (tmp_path / name).touch() if "." in name else (tmp_path / name).mkdir()
    config = {"out": str(tmp_path / "o"), "inputs": {"urls": [str(tmp_path / "u.txt")], "dirs": [str(tmp_path / "d")]},
              "fetch": {"ca_file": str(tmp_path / "ca.pem")}}
    labels = [label for label, _ in input_paths("crawl-ingest", config)]
    assert labels == ["inputs.urls", "inputs.dirs", "fetch.ca_file"]
    dedup = {"embeddings": str(tmp_path / "d"), "against": [f"bench={tmp_path / 'u.txt'}"], "out": "x"}
    assert input_paths("dedup", dedup) == [("embeddings", str(tmp_path / "d")), ("against", str(tmp_path / "u.txt"))]


def test_a_run_dir_refuses_its_own_inputs_and_foreign_folders(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    with pytest.raises(ArtifactError, match="lies inside this command's input data.images="):
        prepare_run_dir(images / "run", {"data": {"images": str(images)}}, overwrite=True, run_id="t1")
    assert not (images / "run").exists()
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ArtifactError, match=r"holds 1 entry that is not an lvd pretrain run \(notes.txt\)"):
        prepare_run_dir(run, {}, overwrite=True, run_id="t1")
    assert (run / "notes.txt").read_text() == "mine"


def test_a_run_dir_overwrite_deletes_the_run_and_keeps_the_lock_until_released(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "x.pth").write_bytes(b"w")
    (run / "metrics.jsonl").write_text("{}\n")
    prepare_run_dir(run, {}, overwrite=True, run_id="t2")
    assert f"{run}: --overwrite deleted an lvd pretrain run: unfinished, 2 files" in capsys.readouterr().err
    assert [p.name for p in run.iterdir() if not p.name.startswith(".lvd-lock")] == []
    held = json.loads((run / LOCK_NAME).read_text())
    assert held["run_id"] == "t2" and held["stage"] == "pretrain"
    release_run_dir(run)
    assert list(run.iterdir()) == [], "released: the lock's files are gone"

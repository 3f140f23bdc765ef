"""`lvd curate` on embeddings with planted structure: Gaussian classes on the sphere.

The pool's rows carry a known class; seed sets are fresh samples of some classes, so retrieval
precision is measurable. Pool images are tiny PNGs coloured by class in a real images artifact,
so the report's contact sheets can be checked pixel by pixel.
"""
from __future__ import annotations

import io
import json
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from lvd_runner import lvd, popen
from lvdtool.artifacts import ImageShardWriter, Manifest, index_table, read_manifest
from lvdtool.artifacts.embeddings import EmbeddingsArtifact, embeddings_table
from lvdtool.errors import InputError
from lvdtool.index import assign
from lvdtool.overrides import sugar
from lvdtool.stages import curate as curate_stage

DIM = 32
COLOURS = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [128, 128, 128]], np.uint8)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def samples(centres: np.ndarray, labels: np.ndarray, rng: np.random.Generator, noise: float = 0.08) -> np.ndarray:
    return unit_rows(centres[labels] + noise * rng.standard_normal((len(labels), centres.shape[1])))


def write_embeddings(path: Path, vectors: np.ndarray, images: str | None, shard_size: int = 400) -> Path:
    keys = [f"{i:012d}" for i in range(len(vectors))]
    (path / "shards").mkdir(parents=True)
    shards = []
    for s, start in enumerate(range(0, len(keys), shard_size)):
        name = f"shard-{s:06d}"
        table = embeddings_table(keys[start:start + shard_size], vectors[start:start + shard_size].astype(np.float16))
        pq.write_table(table, path / "shards" / f"{name}.parquet")
        shards.append({"name": name, "rows": table.num_rows, "bytes": 0, "checksum": f"{path.name}{s}", "files": []})
    Manifest(kind="embeddings", stage="test", config={}, shards=shards, extra={"dim": DIM, "images": images},
             complete=True).write(path)
    return path


def write_class_images(path: Path, labels: np.ndarray) -> Path:
    """An images artifact with one 24x24 PNG per row, filled with its class colour."""
    (path / "shards").mkdir(parents=True)
    writer = ImageShardWriter(path / "shards" / "shard-000000.tar")
    rows = []
    for i, label in enumerate(labels):
        buf = io.BytesIO()
        Image.new("RGB", (24, 24), tuple(int(c) for c in COLOURS[label])).save(buf, format="PNG")
        key = f"{i:012d}"
        writer.write(key, "png", buf.getvalue(), {"key": key})
        rows.append({"key": key, "shard": "shard-000000", "position": i, "status": "ok", "width": 24, "height": 24, "ext": "png"})
    writer.close()
    pq.write_table(index_table(rows, []), path / "shards" / "shard-000000.parquet")
    Manifest(kind="images", stage="test", config={}, complete=True,
             shards=[{"name": "shard-000000", "rows": len(rows), "bytes": 0, "checksum": "img", "files": []}]).write(path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Pool: 10 orthogonal classes x 150. Seeds 'small' (cluster mode): 20 of class 0, 20 of class 1, 3 of
    class 2; 'large' (sample mode once large_seed_threshold=60): 40 each of classes 3 and 4."""
    root = tmp_path_factory.mktemp("curate")
    rng = np.random.default_rng(7)
    centres = np.linalg.qr(rng.standard_normal((DIM, 10)))[0].T.astype(np.float32)
    pool_labels = rng.permutation(np.repeat(np.arange(10), 150))
    images = write_class_images(root / "pool_images", pool_labels)
    write_embeddings(root / "pool", samples(centres, pool_labels, rng), str(images))
    small_labels = np.repeat([0, 1, 2], [20, 20, 3])
    large_labels = np.repeat([3, 4], 40)
    write_embeddings(root / "small", samples(centres, small_labels, rng), None)
    write_embeddings(root / "large", samples(centres, large_labels, rng), None)
    # a pool with one dominant mode: 1200 images of class 0, 100 of each of 7 others
    skewed_labels = rng.permutation(np.repeat(np.arange(8), [1200] + [100] * 7))
    write_embeddings(root / "skewed", samples(centres, skewed_labels, rng), None, shard_size=500)
    return {"root": root, "pool_labels": pool_labels, "small": small_labels, "large": large_labels,
            "skewed_labels": skewed_labels}


def retrieval_overrides(world, out: Path, *extra: str) -> list[str]:
    root = world["root"]
    return sugar(pool=str(root / "pool"), seed_paths=[str(root / "small"), str(root / "large")], out=str(out)) + [
        "retrieval.pool_clusters=20", "retrieval.per_cluster=40", "retrieval.large_seed_threshold=60", *extra]


def selection(out: Path) -> list[dict]:
    return [r for s in sorted((out / "shards").glob("*.parquet")) for r in pq.read_table(s).to_pylist()]


def test_retrieval_returns_the_seed_classes(world):
    out = world["root"] / "retrieved"
    curate_stage.main(retrieval_overrides(world, out))
    rows = selection(out)
    labels = world["pool_labels"]
    by_set = {name: [r for r in rows if r["seed"] == name] for name in ("small", "large")}
    small_classes = [labels[int(r["key"])] for r in by_set["small"]]
    large_classes = [labels[int(r["key"])] for r in by_set["large"]]
    # cluster mode: pool clusters with more than 3 seed images (classes 0 and 1, not class 2) ...
    assert np.mean(np.isin(small_classes, [0, 1])) >= 0.95 and 2 not in small_classes
    assert all(r["query_key"] is None for r in by_set["small"])
    # ... each giving min(size, per_cluster=40) random images (the rule checked against the saved clustering)
    clusters = np.load(out / "_work" / "pool_kmeans.npz")
    seeds_in = np.bincount(assign(unit_rows(EmbeddingsArtifact(world["root"] / "small").load()[1]), clusters["centroids"])[0],
                           minlength=20)
    sizes = np.bincount(clusters["assignment"], minlength=20)
    picked = np.bincount([r["cluster"] for r in by_set["small"]], minlength=20)
    assert np.array_equal(picked, np.where(seeds_in > 3, np.minimum(sizes, 40), 0)) and picked.sum() > 0
    # sample mode: the 4 nearest pool images of every seed image, from the seeds' classes
    assert np.mean(np.isin(large_classes, [3, 4])) >= 0.95
    for r in by_set["large"]:
        assert world["large"][int(r["query_key"])] == labels[int(r["key"])]
    m = read_manifest(out)
    s = m.stats["sets"]
    assert s["small"]["mode"] == "cluster" and s["small"]["clusters_linked"] == int(np.sum(seeds_in > 3))
    assert s["large"]["mode"] == "sample" and s["large"]["retrieved"] == 80 * 4
    assert s["large"]["collisions"] == s["large"]["retrieved"] - s["large"]["unique"] > 0
    assert m.stats["union"]["selected"] == len(rows) == len({r["key"] for r in rows})
    assert [x["name"] for x in m.shards] == [f"shard-{i:06d}" for i in range(4)]  # like the pool
    assert m.extra["images"] == str(world["root"] / "pool_images")
    # the report: counts per set and step, pictures of real images
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["sets"]["small"]["selected"] == picked.sum() and report["union"]["selected"] == len(rows)
    assert set(report["pictures"]) == {"cluster_sizes.png", "clusters.png", "retrieval.png"}
    assert "seed set small images not shown" in " ".join(report["notes"])  # no images artifact: placeholders
    md = (out / "report" / "report.md").read_text()
    assert "| small | cluster |" in md and "union (deduplicated)" in md
    _check_cluster_sheet(out / "report" / "clusters.png")


def test_an_input_selection_restricts_the_pool(world):
    root = world["root"]
    labels = world["pool_labels"]
    allowed = [f"{i:012d}" for i in np.flatnonzero(labels != 0)]  # e.g. the dedup output: class 0 removed
    sel = root / "no_class0"
    (sel / "shards").mkdir(parents=True)
    entries = []
    for s in range(4):  # selection shard S holds keys of pool shard S (400 rows each)
        mine = [k for k in allowed if s * 400 <= int(k) < (s + 1) * 400]
        pq.write_table(pa.table({"key": mine}), sel / "shards" / f"shard-{s:06d}.parquet")
        entries.append({"name": f"shard-{s:06d}", "rows": len(mine), "bytes": 0, "checksum": f"sel{s}", "files": []})
    Manifest(kind="selection", stage="test", config={}, complete=True, shards=entries).write(sel)
    out = root / "restricted"
    curate_stage.main(retrieval_overrides(world, out) + sugar(selection=str(sel)))
    rows = selection(out)
    assert rows and {r["key"] for r in rows} <= set(allowed)
    assert any(r["seed"] == "small" for r in rows)  # class 1 still retrieved
    stats = read_manifest(out).stats
    assert stats["pool"] == {"images": 1500, "after_selection": len(allowed), "clusters": 20}
    assert [i.role for i in read_manifest(out).inputs][:2] == ["pool", "selection"]


def test_a_selection_key_missing_from_its_pool_shard_is_an_error(world, tmp_path):
    """No silent loss: a selection shard naming keys its pool shard lacks is refused, naming the shard."""
    sel = tmp_path / "wrong_shard"
    (sel / "shards").mkdir(parents=True)
    pq.write_table(pa.table({"key": [f"{i:012d}" for i in (1, 2, 450)]}), sel / "shards" / "shard-000000.parquet")
    Manifest(kind="selection", stage="test", config={}, complete=True,
             shards=[{"name": "shard-000000", "rows": 3, "bytes": 0, "checksum": "w", "files": []}]).write(sel)
    with pytest.raises(InputError, match=r"shard-000000.parquet: 1 of its keys are not in pool shard shard-000000"):
        curate_stage.main(retrieval_overrides(world, tmp_path / "out") + sugar(selection=str(sel)))


def _check_cluster_sheet(path: Path, cell: int = 96, per_row: int = 8) -> None:
    """Each row of the contact sheet is one cluster: all its thumbnails have one class colour."""
    sheet = np.asarray(Image.open(path).convert("RGB")).astype(int)
    rows = (sheet.shape[0] - 20) // (cell + 14)
    assert rows >= 2
    for r in range(rows):
        y = 20 + r * (cell + 14) + cell // 2
        centres = [tuple(sheet[y, c * cell + cell // 2]) for c in range(per_row)]
        assert len(set(centres)) == 1 and min(np.abs(COLOURS.astype(int) - centres[0]).sum(1)) < 10


def test_balanced_sampling_flattens_a_dominant_mode(world):
    root = world["root"]
    out = root / "balanced"
    curate_stage.main(sugar(pool=str(root / "skewed"), out=str(out), method="hkmeans") + [
        "hkmeans.target=400", "hkmeans.levels=[{n_clusters:40,n_resampling_steps:3,sample_size:5},"
        "{n_clusters:8,n_resampling_steps:3,sample_size:3}]", "retrieval.pool_clusters=8"])
    rows = selection(out)
    assert len(rows) == 400 and {r["seed"] for r in rows} == {"balanced"}
    counts = np.bincount(world["skewed_labels"][[int(r["key"]) for r in rows]], minlength=8)
    pool_share = np.mean(world["skewed_labels"] == 0)
    assert pool_share > 0.6 and counts[0] / 400 < 0.25  # the dominant mode is capped ...
    assert counts[1:].min() >= 30  # ... and every rare mode is well represented (uniform: 50)
    assert (out / "report" / "cluster_sizes.png").exists()


def test_faiss_and_torch_engines_agree(world):
    root = world["root"]
    curate_stage.main(retrieval_overrides(world, root / "eng_faiss", "engine=faiss", "device=cpu"))
    curate_stage.main(retrieval_overrides(world, root / "eng_torch", "engine=torch", "device=cpu"))
    a, b = selection(root / "eng_faiss"), selection(root / "eng_torch")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "similarity"} for r in rows]  # noqa: E731
    assert strip(a) == strip(b) and len(a) > 0
    assert np.allclose([r["similarity"] for r in a], [r["similarity"] for r in b], atol=1e-4)


def test_sigkill_after_clustering_then_rerun_gives_the_same_selection(world):
    root = world["root"]
    options = ["--pool", str(root / "skewed"), "--seed-path", str(root / "small"), "--method", "hkmeans", "--target", "300"]
    overrides = ["retrieval.pool_clusters=20", "hkmeans.levels=[{n_clusters:100,n_resampling_steps:3,sample_size:5},"
                 "{n_clusters:20,n_resampling_steps:3,sample_size:3}]"]
    reference = root / "kill_ref"
    curate_stage.main(sugar(pool=str(root / "skewed"), seed_paths=[str(root / "small")], method="hkmeans", out=str(reference))
                      + ["hkmeans.target=300", *overrides])
    out = root / "killed"
    proc = popen("curate", *options, "--out", str(out), *overrides)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "_work" / "pool_kmeans.npz").exists() and proc.poll() is None:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # killed once the clustering was saved (the hierarchy, shards and report take about a second more)
    assert (out / "_work" / "pool_kmeans.npz").exists() and not read_manifest(out).complete
    lvd("curate", *options, "--out", str(out), *overrides)
    assert selection(out) == selection(reference)
    work = read_manifest(out).extra["work"]
    assert "pool_kmeans" in work["reused"] and "pool_kmeans" not in work["computed"]


def test_dry_run_prints_costs_and_writes_nothing(world, capsys):
    root = world["root"]
    out = root / "dry"
    curate_stage.main(sugar(pool=str(root / "pool"), seeds=["imagenet22k", "imagenet1k"], out=str(out), dry_run=True)
                      + ["dry_run_vectors=1200000000", "search.index='IVF65536,PQ8'"])
    text = capsys.readouterr().err
    assert "1,200,000,000 x 32" in text and "k-means" in text and "index IVF65536,PQ8" in text
    assert "imagenet22k" in text and "14,197,122" in text and "k = 32" in text  # sizes from configs/seed/*.yaml
    assert not out.exists()

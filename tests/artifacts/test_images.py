"""The images artifact format: our reader, pyarrow and webdataset all read what the writer wrote."""
from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

from lvdtool.artifacts import ImagesArtifact, ImageShardWriter, InputRef, ShardedOutput, index_table, shard_name
from lvdtool.artifacts.ranks import RankInfo


def _jpeg(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def _make(tmp_path):
    out = ShardedOutput(tmp_path / "imgs", kind="images", stage="test", config={}, inputs=[InputRef("/in", "urls", "f")],
                        ranks=RankInfo(0, 1, "r"))
    names = []
    for s in range(2):
        name = shard_name(s)
        tar_rel, idx_rel = f"shards/{name}.tar", f"shards/{name}.parquet"
        tar_tmp = out.temp(tar_rel)
        w = ImageShardWriter(tar_tmp)
        rows = []
        for i in range(3):
            key = f"{s * 3 + i:012d}"
            ok = i != 1
            row = {"key": key, "shard": name, "position": s * 3 + i, "source": f"http://x/{key}", "status": "ok" if ok else "http_404",
                   "error": "" if ok else "404", "label": str(i), "extra": {"caption": f"cap {key}"}}
            if ok:
                data = _jpeg(s * 3 + i)
                w.write(key, "jpg", data, {"key": key, "label": str(i)})
                row.update(ext="jpg", bytes=len(data), width=30, height=20)
            rows.append(row)
        w.close()
        idx_tmp = out.temp(idx_rel)
        pq.write_table(index_table(rows, ["caption"]), idx_tmp)
        out.commit(name, {tar_rel: tar_tmp, idx_rel: idx_tmp}, rows=3, stats={})
        names.append(name)
    assert out.try_finalize(names)
    return out.dir


def test_reader_yields_only_ok_images_in_order(tmp_path):
    art = ImagesArtifact(_make(tmp_path))
    samples = list(art.iter_samples())
    assert [s.key for s in samples] == ["000000000000", "000000000002", "000000000003", "000000000005"]
    assert samples[0].data == _jpeg(0)
    assert Image.open(io.BytesIO(samples[1].data)).size == (30, 20)
    assert [s.key for s in art.iter_samples(keys={"000000000003"})] == ["000000000003"]
    index = art.read_index()
    assert index.num_rows == 6 and index.column("caption").to_pylist()[4] == "cap 000000000004"
    assert index.column("status").to_pylist().count("http_404") == 2


def test_webdataset_reads_the_shards(tmp_path):
    root = _make(tmp_path)
    urls = [str(p) for p in sorted((root / "shards").glob("*.tar"))]
    ds = wds.WebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node, empty_check=False).decode("pil")
    got = [(s["__key__"], s["jpg"].size, s["json"]["label"]) for s in ds]
    assert [g[0] for g in got] == ["000000000000", "000000000002", "000000000003", "000000000005"]
    assert all(size == (30, 20) for _, size, _ in got)

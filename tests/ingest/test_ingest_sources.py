"""URL list readers and directory scanning."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lvdtool.errors import InputError
from lvdtool.ingest import count_url_list, read_url_list, scan_directory


def test_txt_skips_blank_lines_and_comments(tmp_path: Path):
    path = tmp_path / "urls.txt"
    path.write_text("\ufeff# a list\nhttp://a.test/1.jpg\n\n   \n  http://a.test/2.jpg  \n#http://skipped\n")
    records = list(read_url_list(path))
    assert [r.source for r in records] == ["http://a.test/1.jpg", "http://a.test/2.jpg"]
    assert [r.position for r in records] == [0, 1]
    assert all(r.kind == "url" and r.extra == {} and r.label is None for r in records)
    assert count_url_list(path) == 2


@pytest.mark.parametrize(("suffix", "sep"), [(".csv", ","), (".tsv", "\t")])
def test_delimited_files_carry_extra_columns(tmp_path: Path, suffix: str, sep: str):
    path = tmp_path / f"urls{suffix}"
    rows = [["caption", "url", "label"], ["a cat, sitting", "http://a.test/1.jpg", "cat"], ["", "http://a.test/2.jpg", "dog"]]
    if sep == ",":
        text = '\ufeffcaption,url,label\n"a cat, sitting",http://a.test/1.jpg,cat\n,http://a.test/2.jpg,dog\n'
    else:
        text = "\n".join(sep.join(row) for row in rows) + "\n"
    path.write_text(text)
    records = list(read_url_list(path, label_column="label"))
    assert [r.source for r in records] == ["http://a.test/1.jpg", "http://a.test/2.jpg"]
    assert records[0].extra == {"caption": "a cat, sitting"}
    assert [r.label for r in records] == ["cat", "dog"]
    plain = next(iter(read_url_list(path)))
    assert plain.extra == {"caption": "a cat, sitting", "label": "cat"} and plain.label is None


def test_parquet_is_read_in_batches_with_extra_columns(tmp_path: Path):
    path = tmp_path / "urls.parquet"
    count = 2500
    table = pa.table({
        "url": [f"http://a.test/{i}.jpg" for i in range(count)],
        "caption": [f"caption {i}" for i in range(count)],
        "width": list(range(count)),
    })
    pq.write_table(table, path, row_group_size=700)
    records = list(read_url_list(path, batch_size=256))
    assert len(records) == count
    assert [r.position for r in records] == list(range(count))
    assert records[1234].source == "http://a.test/1234.jpg"
    assert records[1234].extra == {"caption": "caption 1234", "width": 1234}
    assert count_url_list(path) == count


def test_null_urls_are_kept_as_empty_sources(tmp_path: Path):
    path = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"url": ["http://a.test/1.jpg", None]}), path)
    assert [r.source for r in read_url_list(path)] == ["http://a.test/1.jpg", ""]


def test_jsonl_and_json(tmp_path: Path):
    rows = [{"url": "http://a.test/1.jpg", "caption": "x"}, {"url": "http://a.test/2.jpg", "caption": "y"}]
    jsonl = tmp_path / "urls.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    as_json = tmp_path / "urls.json"
    as_json.write_text(json.dumps(rows))
    for path in (jsonl, as_json):
        records = list(read_url_list(path))
        assert [r.source for r in records] == ["http://a.test/1.jpg", "http://a.test/2.jpg"]
        assert records[1].extra == {"caption": "y"}


def test_missing_url_column_names_file_and_column(tmp_path: Path):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("link,caption\nhttp://a.test/1.jpg,x\n")
    with pytest.raises(InputError, match=r"bad\.csv.*'url'"):
        list(read_url_list(csv_path))
    parquet_path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"link": ["http://a.test/1.jpg"]}), parquet_path)
    with pytest.raises(InputError, match=r"bad\.parquet.*'url'"):
        list(read_url_list(parquet_path))
    with pytest.raises(InputError, match=r"bad\.parquet.*'url'"):
        count_url_list(parquet_path)
    with pytest.raises(InputError, match=r"bad\.csv.*'label'"):
        list(read_url_list(csv_path, url_column="link", label_column="label"))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.parquet", b"PAR1 this is not parquet", "broken.parquet"),
        ("broken.jsonl", b'{"url": "x"}\n{not json\n', r"broken\.jsonl:2"),
        ("broken.json", b'{"url": "x"}', "array of objects"),
        ("latin1.txt", "http://a.test/caf\u00e9.jpg\n".encode("latin-1"), "not UTF-8"),
        ("urls.xlsx", b"whatever", "unsupported"),
    ],
)
def test_unreadable_inputs_raise_input_error_naming_the_file(tmp_path: Path, name: str, content: bytes, message: str):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as caught:
        list(read_url_list(path))
    assert name.split(".")[0] in str(caught.value)


def test_missing_list_file(tmp_path: Path):
    with pytest.raises(InputError, match="nope.txt"):
        list(read_url_list(tmp_path / "nope.txt"))


def _touch(root: Path, relative: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_scan_directory_is_sorted_recursive_and_labelled(tmp_path: Path):
    for relative in ["dog/b.JPG", "dog/a.png", "cat/z.webp", "cat/sub/deep.TIFF", "top.gif",
                     "cat/notes.txt", "cat/.hidden.jpg", ".thumbs/x.jpg", "cat/c.Jpeg", "bird/e.bmp"]:
        _touch(tmp_path, relative)
    records = list(scan_directory(tmp_path, label_from_dir=True))
    relpaths = [r.extra["relpath"] for r in records]
    assert relpaths == ["top.gif", "bird/e.bmp", "cat/c.Jpeg", "cat/z.webp", "cat/sub/deep.TIFF", "dog/a.png", "dog/b.JPG"]
    assert [r.label for r in records] == [None, "bird", "cat", "cat", "sub", "dog", "dog"]
    assert [r.position for r in records] == list(range(7))
    assert all(r.kind == "file" and Path(r.source).is_file() for r in records)
    assert all(r.label is None for r in scan_directory(tmp_path))


def test_scan_missing_directory(tmp_path: Path):
    with pytest.raises(InputError, match="missing"):
        list(scan_directory(tmp_path / "missing"))

"""Input records for ingestion: URL lists (txt, csv, tsv, parquet, json, jsonl) and image directories.

Every reader is a generator, so a list of a billion URLs never sits in memory; Parquet is read
in record batches for the same reason. `position` is the 0-based index of the record in its
input and is what makes keys stable across reruns.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from lvdtool.errors import InputError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
)


@dataclass(frozen=True)
class SourceRecord:
    """One thing to ingest: a URL or a local file, plus the input's other columns."""

    position: int
    source: str
    kind: Literal["url", "file"]
    extra: dict[str, Any] = field(default_factory=dict)
    label: str | None = None


# (path, url_column, label_column, batch_size) -> iterator of raw row dicts
RowReader = Callable[[Path, str, "str | None", int], Iterator[dict[str, Any]]]
_ROW_READERS: dict[str, RowReader] = {}


def _row_reader(*suffixes: str) -> Callable[[RowReader], RowReader]:
    def register(fn: RowReader) -> RowReader:
        for suffix in suffixes:
            _ROW_READERS[suffix] = fn
        return fn

    return register


def supported_list_suffixes() -> list[str]:
    return sorted(_ROW_READERS)


def _require_columns(path: Path, columns: list[str], url_column: str, label_column: str | None) -> None:
    for needed in (url_column, label_column):
        if needed is not None and needed not in columns:
            raise InputError(f"{path}: missing column '{needed}' (columns: {', '.join(columns) or 'none'})")


@_row_reader(".txt")
def _read_txt(path: Path, url_column: str, label_column: str | None, batch_size: int) -> Iterator[dict[str, Any]]:
    if label_column is not None:
        raise InputError(f"{path}: a .txt URL list has no columns, so label column '{label_column}' cannot exist")
    with open(path, encoding="utf-8-sig") as f:
        for line in f:
            url = line.strip()
            if url and not url.startswith("#"):
                yield {url_column: url}


def _read_delimited(path: Path, url_column: str, label_column: str | None, delimiter: str) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        _require_columns(path, list(reader.fieldnames or []), url_column, label_column)
        for row in reader:
            # DictReader puts surplus cells under the key None; they have no column name to carry.
            row.pop(None, None)  # type: ignore[call-overload]
            yield row


@_row_reader(".csv")
def _read_csv(path: Path, url_column: str, label_column: str | None, batch_size: int) -> Iterator[dict[str, Any]]:
    return _read_delimited(path, url_column, label_column, ",")


@_row_reader(".tsv")
def _read_tsv(path: Path, url_column: str, label_column: str | None, batch_size: int) -> Iterator[dict[str, Any]]:
    return _read_delimited(path, url_column, label_column, "\t")


@_row_reader(".parquet")
def _read_parquet(path: Path, url_column: str, label_column: str | None, batch_size: int) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from exc
    _require_columns(path, parquet.schema_arrow.names, url_column, label_column)
    try:
        for batch in parquet.iter_batches(batch_size=batch_size):
            yield from batch.to_pylist()
    except OSError as exc:
        raise InputError(f"{path}: Parquet read failed ({exc})") from exc


@_row_reader(".jsonl")
def _read_jsonl(path: Path, url_column: str, label_column: str | None, batch_size: int) -> Iterator[dict[str, Any]]:
    first = True
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{line_no}: invalid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise InputError(f"{path}:{line_no}: expected a JSON object per line")
            if first:
                # The first object stands for the schema; later rows missing the URL become bad_url.
                _require_columns(path, list(row), url_column, label_column)
                first = False
            yield row


@_row_reader(".json")
def _read_json(path: Path, url_column: str, label_column: str | None, batch_size: int) -> Iterator[dict[str, Any]]:
    # A .json input is one array of objects; it is loaded whole, so prefer .jsonl for big lists.
    with open(path, encoding="utf-8-sig") as f:
        try:
            rows = json.load(f)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InputError(f"{path}: expected a JSON array of objects")
    if rows:
        _require_columns(path, list(rows[0]), url_column, label_column)
    yield from rows


def read_url_list(
    path: str | os.PathLike[str],
    url_column: str = "url",
    label_column: str | None = None,
    batch_size: int = 65_536,
) -> Iterator[SourceRecord]:
    """Yield one SourceRecord per URL in `path`; the file type comes from its suffix.

    Columns other than the URL (and label) column are carried in `extra`. A missing or empty
    URL cell is still yielded (source "") so every input row shows up in the stats as `bad_url`.
    """
    path = Path(path)
    reader = _ROW_READERS.get(path.suffix.lower())
    if reader is None:
        raise InputError(f"{path}: unsupported URL list type '{path.suffix}' (use {', '.join(supported_list_suffixes())})")
    if not path.is_file():
        raise InputError(f"{path}: URL list not found")
    try:
        for position, row in enumerate(reader(path, url_column, label_column, batch_size)):
            url = row.pop(url_column, None)
            label = row.pop(label_column, None) if label_column is not None else None
            yield SourceRecord(
                position=position,
                source="" if url is None else str(url).strip(),
                kind="url",
                extra=row,
                label=None if label is None else str(label),
            )
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise InputError(f"{path}: malformed delimited text ({exc})") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def count_url_list(path: str | os.PathLike[str], url_column: str = "url") -> int:
    """Number of records read_url_list yields; free for Parquet (footer metadata), one pass otherwise."""
    path = Path(path)
    if path.suffix.lower() == ".parquet" and path.is_file():
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
        except Exception as exc:
            raise InputError(f"{path}: not a readable Parquet file ({exc})") from exc
        _require_columns(path, parquet.schema_arrow.names, url_column, None)
        return parquet.metadata.num_rows
    return sum(1 for _ in read_url_list(path, url_column=url_column))


def scan_directory(
    root: str | os.PathLike[str],
    label_from_dir: bool = False,
    extensions: frozenset[str] = IMAGE_EXTENSIONS,
) -> Iterator[SourceRecord]:
    """Yield the image files under `root`, recursively, in sorted (deterministic) order.

    Extensions match case-insensitively. Hidden files and folders (name starting with '.') are
    skipped: they are mostly editor and macOS resource-fork debris ('._x.jpg'). With
    `label_from_dir`, the label is the name of the file's parent folder; files directly in
    `root` get no label. `extra` holds the path relative to root.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: image folder not found")
    position = 0

    def walk_error(exc: OSError) -> None:
        raise InputError(f"{exc.filename}: cannot list folder ({exc.strerror})")

    for folder, subfolders, files in os.walk(root, onerror=walk_error):
        # Sorting in place steers os.walk, so the whole traversal order is deterministic.
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        folder_path = Path(folder)
        label = folder_path.name if label_from_dir and folder_path != root else None
        for name in sorted(files):
            if name.startswith(".") or Path(name).suffix.lower() not in extensions:
                continue
            file_path = folder_path / name
            yield SourceRecord(
                position=position,
                source=str(file_path),
                kind="file",
                extra={"relpath": file_path.relative_to(root).as_posix()},
                label=label,
            )
            position += 1

"""Keys as NumPy fixed-width bytes: one array per shard, no Python string per row."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from lvdtool.errors import ArtifactError


def key_bytes(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A string column as a fixed-width bytes array (one vectorised copy, no Python strings)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype="S1")
    if arr.null_count:
        raise ArtifactError("key column holds nulls")
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    offset_type = np.int64 if large else np.int32
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=offset_type, count=n + 1, offset=arr.offset * np.dtype(offset_type).itemsize)
    offsets = offsets.astype(np.int64)
    lengths = np.diff(offsets)
    width = max(int(lengths.max()), 1)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(1, np.uint8)
    if int(lengths.min()) == width:  # one width (crawl-ingest's zero-padded keys): a view of the data buffer
        return data[int(offsets[0]):int(offsets[0]) + n * width].view(f"S{width}").copy()
    out = np.zeros((n, width), dtype=np.uint8)
    for j in range(width):  # one byte column at a time: temporaries of ~10 bytes per key
        has = lengths > j
        out[:, j] = np.where(has, data[np.where(has, offsets[:-1] + j, 0)], 0)
    return out.view(f"S{width}").reshape(n)

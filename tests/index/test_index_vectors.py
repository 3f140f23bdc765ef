import numpy as np
import pytest

from lvdtool.errors import InputError
from lvdtool.index.vectors import ArrayVectors, as_source, gather_rows, to_memory


def test_array_vectors_chunks_cover_rows_as_float32():
    x = np.arange(70, dtype=np.float16).reshape(35, 2)
    source = ArrayVectors(x)
    chunks = list(source.iter_chunks(8))
    assert [start for start, _ in chunks] == list(range(0, 35, 8))
    assert all(block.dtype == np.float32 for _, block in chunks)
    np.testing.assert_array_equal(np.concatenate([b for _, b in chunks]), x.astype(np.float32))


def test_gather_rows_streaming_matches_fancy_indexing(stream_only):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((101, 4)).astype(np.float32)
    rows = np.array([100, 3, 3, 57, 0, 64])  # unsorted, with a repeat
    source = stream_only(x)
    np.testing.assert_array_equal(gather_rows(source, rows, chunk_rows=16), x[rows])
    assert source.passes == 1
    np.testing.assert_array_equal(to_memory(source, 7), x)


def test_bad_inputs_raise_input_error():
    with pytest.raises(InputError, match="queries"):
        as_source([[1.0, 2.0]], name="queries")
    with pytest.raises(InputError, match="dtype"):
        ArrayVectors(np.zeros((3, 2), dtype=np.int32))
    with pytest.raises(InputError, match="out of range"):
        gather_rows(ArrayVectors(np.zeros((3, 2), np.float32)), np.array([3]))

"""Unit tests for shards.readers: every format, row ranges, local and fsspec paths."""

from __future__ import annotations

import io
import pickle
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from shards import open_vectors, read_ground_truth, read_vectors, write_ground_truth, write_vectors

DTYPES = {
    "fvecs": np.float32, "ivecs": np.int32, "bvecs": np.uint8,
    "fbin": np.float32, "u8bin": np.uint8, "i8bin": np.int8, "ibin": np.int32, "npy": np.float32,
}
RANGES = [(0, None), (0, 1), (5, 17), (36, 37), (37, 37), (12, 13), (0, 37)]


def _random(n: int, d: int, dtype: type, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal((n, d)).astype(dtype)
    info = np.iinfo(dtype)
    low, high = max(info.min, -1000), min(info.max, 1000)
    return rng.integers(low, high, size=(n, d), endpoint=True).astype(dtype)


@pytest.fixture(params=["local", "memory"])
def base(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A directory URI: a local path or a fresh memory:// prefix (byte-range path)."""
    if request.param == "local":
        yield str(tmp_path)
        return
    prefix = f"memory://readers-{uuid.uuid4().hex}"
    yield prefix
    fs = fsspec.filesystem("memory")
    if fs.exists(prefix):
        fs.rm(prefix, recursive=True)


def _get(uri: str) -> bytes:
    with fsspec.open(uri, "rb") as f:
        return f.read()


def _put(uri: str, data: bytes) -> None:
    with fsspec.open(uri, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("fmt", sorted(DTYPES))
def test_round_trip_every_format(base: str, fmt: str) -> None:
    x = _random(37, 5, DTYPES[fmt])
    uri = f"{base}/x.{fmt}"
    write_vectors(uri, x)
    r = open_vectors(uri)
    assert (r.n, r.d, r.dtype, r.format, r.uri, len(r)) == (37, 5, x.dtype, fmt, uri, 37)
    for start, stop in RANGES:
        got = r.read(start, stop)
        np.testing.assert_array_equal(got, x[start:stop])
        assert got.dtype == x.dtype and got.flags.c_contiguous and got.flags.writeable
        assert got.shape == x[start:stop].shape
    np.testing.assert_array_equal(read_vectors(uri, 3, 9), x[3:9])


def test_reader_pickles_and_hides_storage_options(tmp_path: Path) -> None:
    x = _random(10, 3, np.float32)
    write_vectors(tmp_path / "x.fbin", x)
    r = open_vectors(str(tmp_path / "x.fbin"), storage_options={"secret": "hunter2"})
    assert "hunter2" not in repr(r)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(r)).read(2, 4), x[2:4])


def test_npy_big_endian_and_other_dtypes(base: str) -> None:
    for dtype in [">f4", "<f8", "<i8", "u2"]:
        x = _random(11, 4, np.float32).astype(dtype) if dtype[1] == "f" else _random(11, 4, dtype)
        uri = f"{base}/x{dtype.strip('<>')}.npy"
        _put(uri, _npy_bytes(x))
        got = open_vectors(uri).read(2, 9)
        np.testing.assert_array_equal(got, x[2:9])
        assert got.dtype == x.dtype.newbyteorder("=") and got.dtype.isnative


def _npy_bytes(x: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=allow_pickle)
    return buf.getvalue()


def test_format_argument_overrides_extension(base: str) -> None:
    x = _random(8, 3, np.uint8)
    write_vectors(f"{base}/x.u8bin", x)
    _put(f"{base}/x.data", _get(f"{base}/x.u8bin"))
    np.testing.assert_array_equal(read_vectors(f"{base}/x.data", format="u8bin"), x)
    with pytest.raises(ValueError, match=r"x\.data.*unsupported extension 'data'.*fbin"):
        open_vectors(f"{base}/x.data")
    with pytest.raises(ValueError, match=r"unsupported format='hdf5'.*fvecs"):
        open_vectors(f"{base}/x.u8bin", format="hdf5")


def test_missing_file(base: str) -> None:
    with pytest.raises(FileNotFoundError, match="nope.fbin"):
        open_vectors(f"{base}/nope.fbin")


def test_row_range_errors(base: str) -> None:
    uri = f"{base}/x.fbin"
    write_vectors(uri, _random(10, 2, np.float32))
    r = open_vectors(uri)
    with pytest.raises(ValueError, match=r"x\.fbin.*negative row bound start=-1"):
        r.read(-1, 3)
    with pytest.raises(ValueError, match=r"stop=2 is before start=5"):
        r.read(5, 2)
    with pytest.raises(ValueError, match=r"stop=11 is past the last row \(n=10\)"):
        r.read(0, 11)
    with pytest.raises(ValueError, match=r"stop=12 is past"):
        read_vectors(uri, 11, 12)


@pytest.mark.parametrize("fmt", ["fbin", "u8bin", "ibin"])
def test_truncated_bin_file(base: str, fmt: str) -> None:
    uri = f"{base}/x.{fmt}"
    write_vectors(uri, _random(20, 4, DTYPES[fmt]))
    _put(uri, _get(uri)[:-3])
    itemsize = np.dtype(DTYPES[fmt]).itemsize
    expected, actual = 8 + 20 * 4 * itemsize, 8 + 20 * 4 * itemsize - 3
    with pytest.raises(ValueError, match=rf"x\.{fmt}.*n=20, d=4.*{expected} bytes.*{actual} bytes"):
        open_vectors(uri)


def test_bin_header_disagrees_with_size(base: str) -> None:
    uri = f"{base}/x.fbin"
    write_vectors(uri, _random(20, 4, np.float32))
    data = bytearray(_get(uri))
    data[:4] = np.array([21], dtype="<u4").tobytes()  # claims one more row
    _put(uri, bytes(data))
    with pytest.raises(ValueError, match=r"n=21, d=4, so the file should be 344 bytes.*it is 328 bytes"):
        open_vectors(uri)
    data[:8] = np.array([20, 0], dtype="<u4").tobytes()
    _put(uri, bytes(data))
    with pytest.raises(ValueError, match=r"d=0"):
        open_vectors(uri)
    _put(uri, b"\x01\x00")
    with pytest.raises(ValueError, match=r"2 bytes is too small"):
        open_vectors(uri)


@pytest.mark.parametrize("fmt", ["fvecs", "bvecs", "ivecs"])
def test_truncated_vecs_file(base: str, fmt: str) -> None:
    uri = f"{base}/x.{fmt}"
    write_vectors(uri, _random(9, 6, DTYPES[fmt]))
    _put(uri, _get(uri)[:-1])
    with pytest.raises(ValueError, match=rf"x\.{fmt}.*not a multiple of the row size"):
        open_vectors(uri)


def test_bad_texmex_row_prefix(base: str) -> None:
    uri = f"{base}/x.fvecs"
    x = _random(12, 3, np.float32)
    write_vectors(uri, x)
    data = bytearray(_get(uri))
    row_bytes = 4 + 3 * 4
    data[7 * row_bytes : 7 * row_bytes + 4] = np.array([4], dtype="<i4").tobytes()
    _put(uri, bytes(data))
    r = open_vectors(uri)
    np.testing.assert_array_equal(r.read(0, 7), x[:7])  # rows before the bad one are fine
    np.testing.assert_array_equal(r.read(8, 12), x[8:])
    with pytest.raises(ValueError, match=r"x\.fvecs: row 7 has dimension prefix 4, expected d=3"):
        r.read(5, 10)
    data[:4] = np.array([0], dtype="<i4").tobytes()
    _put(uri, bytes(data))
    with pytest.raises(ValueError, match=r"row 0 has dimension prefix d=0"):
        open_vectors(uri)


def test_ground_truth_round_trip(base: str) -> None:
    ids = _random(15, 10, np.int32).astype(np.int64)
    distances = np.sort(_random(15, 10, np.float32), axis=1)
    uri = f"{base}/gt.ibin"
    write_ground_truth(uri, ids, distances)
    got_ids, got_distances = read_ground_truth(uri)
    assert got_ids.dtype == np.int64 and got_distances.dtype == np.float32
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got_distances, distances)
    with pytest.raises(ValueError, match=r"gt\.ibin.*n=15, d=10.*use read_ground_truth"):
        open_vectors(uri)
    _put(uri, _get(uri)[:-4])
    message = r"gt\.ibin: ground-truth .* n=15, d=10.*1208 bytes \(8 \+ n\*d\*8\), but it is 1204"
    with pytest.raises(ValueError, match=message):
        read_ground_truth(uri)


def _write_parquet(uri: str, x: np.ndarray, fixed: bool, row_group_size: int = 10) -> None:
    d = x.shape[1]
    values = pa.array(x.ravel())
    if fixed:
        column = pa.FixedSizeListArray.from_arrays(values, d)
    else:
        offsets = pa.array(np.arange(0, x.size + 1, d, dtype=np.int32))
        column = pa.ListArray.from_arrays(offsets, values)
    table = pa.table({"id": np.arange(len(x), dtype=np.uint64), "emb": column})
    with fsspec.open(uri, "wb") as f:
        pq.write_table(table, f, row_group_size=row_group_size)


@pytest.mark.parametrize("fixed", [False, True], ids=["list", "fixed_size_list"])
def test_parquet_round_trip(base: str, fixed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    x = _random(37, 6, np.float32)
    uri = f"{base}/x.parquet"
    _write_parquet(uri, x, fixed)
    r = open_vectors(uri, column="emb")
    assert (r.n, r.d, r.dtype, r.format) == (37, 6, np.dtype(np.float32), "parquet")
    groups_read: list[list[int]] = []
    original = pq.ParquetFile.read_row_groups

    def spy(self: pq.ParquetFile, row_groups: list[int], *args: object, **kw: object) -> pa.Table:
        groups_read.append(list(row_groups))
        return original(self, row_groups, *args, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", spy)
    for start, stop in RANGES + [(9, 11), (10, 20), (19, 21)]:
        got = r.read(start, stop)
        np.testing.assert_array_equal(got, x[start:stop])
        assert got.flags.c_contiguous and got.flags.writeable and got.dtype == np.float32
    assert groups_read[2] == [0, 1]  # rows [5, 17) touch groups 0 and 1 only
    assert groups_read[-1] == [1, 2]  # rows [19, 21)
    # column= may be left out when there is exactly one list column
    np.testing.assert_array_equal(read_vectors(uri, 30, 37, format="parquet"), x[30:])


def test_parquet_errors(base: str) -> None:
    uri = f"{base}/x.parquet"
    ragged = pa.array([[1.0, 2.0], [3.0, 4.0], [5.0], [6.0, 7.0]], type=pa.list_(pa.float32()))
    with fsspec.open(uri, "wb") as f:
        pq.write_table(pa.table({"a": ragged, "b": ragged, "name": ["p", "q", "r", "s"]}), f)
    with pytest.raises(ValueError, match=r"pass column=, one of the list columns \['a', 'b'\]"):
        open_vectors(uri)
    with pytest.raises(ValueError, match=r"column 'name' is not a list column"):
        open_vectors(uri, column="name")
    r = open_vectors(uri, column="a")
    np.testing.assert_array_equal(r.read(0, 2), [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match=r"x\.parquet: column 'a': row 2 has length 1, expected d=2"):
        r.read(1, 4)
    with pytest.raises(ValueError, match=r"x\.fbin: column='a' only applies to parquet, not \.fbin"):
        open_vectors(f"{base}/x.fbin", column="a")


def test_npy_refusals(base: str) -> None:
    cases = {
        "obj.npy": (np.array([[1, None]], dtype=object), r"dtype object refused"),
        "fortran.npy": (np.asfortranarray(_random(4, 3, np.float32)), r"Fortran-order .* \(4, 3\)"),
        "flat.npy": (np.arange(5, dtype=np.float32), r"shape \(5,\) refused; expected 2-D"),
        "empty_d.npy": (np.zeros((5, 0), dtype=np.float32), r"shape \(5, 0\) refused"),
    }
    for name, (x, message) in cases.items():
        _put(f"{base}/{name}", _npy_bytes(x, allow_pickle=True))
        with pytest.raises(ValueError, match=rf"{name}: .*{message}"):
            open_vectors(f"{base}/{name}")
    _put(f"{base}/junk.npy", b"not a numpy file at all")
    with pytest.raises(ValueError, match=r"junk\.npy: not a valid .npy file"):
        open_vectors(f"{base}/junk.npy")
    with pytest.raises(ValueError, match=r"dtype object refused"):
        write_vectors(f"{base}/o.npy", np.array([[1, None]], dtype=object))


def test_write_refuses_lossy_casts(base: str) -> None:
    with pytest.raises(ValueError, match=r"cannot write float64 values as uint8"):
        write_vectors(f"{base}/x.u8bin", np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"values in \[-1, 300\] do not fit uint8"):
        write_vectors(f"{base}/x.bvecs", np.array([[-1, 300]]))
    with pytest.raises(ValueError, match=r"expected a 2-D array with d > 0, got shape \(3,\)"):
        write_vectors(f"{base}/x.fbin", np.ones(3))


def test_local_row_range_does_not_read_whole_file(tmp_path: Path) -> None:
    """A 1 GiB (sparse) .fbin: reading 3 rows allocates and reads only those rows."""
    n, d = 2**20, 256
    path = tmp_path / "big.fbin"
    tail = _random(3, d, np.float32)
    with open(path, "wb") as f:
        f.write(np.array([n, d], dtype="<u4").tobytes())
        f.seek(8 + (n - 3) * d * 4)
        f.write(tail.tobytes())
    assert path.stat().st_size == 8 + n * d * 4
    r = open_vectors(str(path))
    tracemalloc.start()
    try:
        got = r.read(n - 3, n)
        middle = r.read(n // 2, n // 2 + 2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got, tail)
    np.testing.assert_array_equal(middle, np.zeros((2, d), dtype=np.float32))
    assert got.nbytes == 3 * d * 4
    assert peak < 1 << 20, f"peak allocation {peak} bytes for a 3-row read of a 1 GiB file"


@pytest.mark.parametrize("fmt", ["fbin", "bvecs", "npy"])
def test_remote_row_range_reads_only_its_bytes(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through fsspec (memory://), a row range is one byte-range request for just those rows."""
    uri = f"memory://readers-{uuid.uuid4().hex}/x.{fmt}"
    x = _random(1000, 16, DTYPES[fmt])
    write_vectors(uri, x)
    size = len(_get(uri))
    r = open_vectors(uri)
    requests: list[tuple[int | None, int | None]] = []
    original = MemoryFileSystem.cat_file

    def spy(self: MemoryFileSystem, path: str, start: int | None = None,
            end: int | None = None, **kw: object) -> bytes:
        requests.append((start, end))
        return original(self, path, start=start, end=end, **kw)

    monkeypatch.setattr(MemoryFileSystem, "cat_file", spy)
    np.testing.assert_array_equal(r.read(500, 503), x[500:503])
    row_bytes = (4 if fmt == "bvecs" else 0) + 16 * x.itemsize
    assert len(requests) == 1
    start, end = requests[0]
    assert start is not None and end is not None and end - start == 3 * row_bytes < size
    fsspec.filesystem("memory").rm(uri)

"""Vector file readers: TEXMEX .*vecs, big-ann .*bin, .npy and Parquet, by row range.

A row range is read without loading the file: local paths with ``np.fromfile`` on
just the needed bytes, any other fsspec URI (s3://, memory://, ...) with one
byte-range ``cat_file`` per read (a ranged GET on S3). Readers hold no open
handle, so they pickle to Ray workers.
"""

from __future__ import annotations

import bisect
import io
import logging
import operator
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from numpy.lib import format as npy_format
from tokenize import TokenError

logger = logging.getLogger(__name__)

Options = dict[str, Any] | None
VECS_DTYPES = {"fvecs": np.dtype("<f4"), "ivecs": np.dtype("<i4"), "bvecs": np.dtype("u1")}
BIN_DTYPES = {
    "fbin": np.dtype("<f4"),
    "u8bin": np.dtype("u1"),
    "i8bin": np.dtype("i1"),
    "ibin": np.dtype("<i4"),
}
FORMATS = (*VECS_DTYPES, *BIN_DTYPES, "npy", "parquet")
_HEADER = 8  # big-ann: uint32 n, uint32 d
_PREFIX = 4  # TEXMEX: int32 d before every row
_PARQUET_ERRORS = (pa.ArrowException, OSError, EOFError)


@dataclass(frozen=True)
class VectorReader:
    """Row-range reader over one vector file: ``read(start, stop) -> (rows, d)``."""

    uri: str
    format: str
    n: int
    d: int
    dtype: np.dtype
    storage_options: Options = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return self.n

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) as a C-contiguous (stop - start, d) array of ``dtype``."""
        start, stop = _check_range(self.uri, self.n, start, stop)
        if start == stop:
            return np.empty((0, self.d), dtype=self.dtype)
        return self._read_rows(start, stop)

    def _read_rows(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class _StrideReader(VectorReader):
    """Rows at a fixed byte stride after a header (.*bin, .*vecs, .npy)."""

    offset: int  # header bytes before row 0
    file_dtype: np.dtype  # as stored; .npy may be big-endian
    prefix: int = 0  # per-row int32 dimension bytes (TEXMEX)

    def _read_rows(self, start: int, stop: int) -> np.ndarray:
        fs, path = _resolve(self.uri, self.storage_options)
        row_bytes = self.prefix + self.d * self.file_dtype.itemsize
        offset, rows = self.offset + start * row_bytes, stop - start
        if not self.prefix:
            x = _read_array(fs, path, self.uri, offset, rows * self.d, self.file_dtype)
            return np.ascontiguousarray(x.reshape(rows, self.d), dtype=self.dtype)
        raw = _read_array(fs, path, self.uri, offset, rows * row_bytes, np.dtype("u1"))
        raw = raw.reshape(rows, row_bytes)
        dims = raw[:, : self.prefix].copy().view("<i4").ravel()
        bad = np.flatnonzero(dims != self.d)
        if bad.size:
            raise ValueError(
                f"{self.uri}: row {start + int(bad[0])} has dimension prefix {int(dims[bad[0]])}, "
                f"expected d={self.d} (corrupt or not a .{self.format} file)"
            )
        return np.ascontiguousarray(raw[:, self.prefix :].view(self.file_dtype), dtype=self.dtype)


@dataclass(frozen=True, kw_only=True)
class _ParquetReader(VectorReader):
    """Rows of a list / fixed_size_list column, read by the row groups they overlap."""

    column: str
    row_group_starts: tuple[int, ...]  # first row of each group, then n

    def _read_rows(self, start: int, stop: int) -> np.ndarray:
        starts = self.row_group_starts
        first, last = bisect.bisect_right(starts, start) - 1, bisect.bisect_left(starts, stop)
        fs, path = _resolve(self.uri, self.storage_options)
        try:
            with fs.open(path, "rb") as f:
                groups = list(range(first, last))
                table = pq.ParquetFile(f).read_row_groups(groups, columns=[self.column])
        except _PARQUET_ERRORS as exc:
            raise _unreadable(f"{self.uri}: rows [{start}, {stop})", exc) from None
        lists = table.column(0).slice(start - starts[first], stop - start).combine_chunks()
        where = f"{self.uri}: column {self.column!r}"
        if lists.null_count or lists.flatten().null_count:
            raise ValueError(f"{where} has null rows or values in rows [{start}, {stop})")
        lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(lengths != self.d)
        if bad.size:
            row, length = start + int(bad[0]), int(lengths[bad[0]])
            raise ValueError(f"{where}: row {row} has length {length}, expected d={self.d}")
        x = lists.flatten().to_numpy(zero_copy_only=False, writable=True)
        return np.ascontiguousarray(x.reshape(stop - start, self.d), dtype=self.dtype)


def open_vectors(
    uri: str | os.PathLike[str],
    format: str | None = None,
    storage_options: Options = None,
    *,
    column: str | None = None,
) -> VectorReader:
    """Open a vector file, reading its header only; ``column`` names a Parquet list column."""
    uri = os.fspath(uri)
    fmt = _format_for(uri, format)
    if column is not None and fmt != "parquet":
        raise ValueError(f"{uri}: column={column!r} only applies to parquet, not .{fmt}")
    fs, path = _resolve(uri, storage_options)
    size = _file_size(fs, path, uri)
    opts = dict(storage_options) if storage_options else None
    if fmt == "parquet":
        reader: VectorReader = _open_parquet(uri, fs, path, column, opts)
    elif fmt in BIN_DTYPES:
        dtype = BIN_DTYPES[fmt]
        n, d = _bin_header(fs, path, uri, size, dtype.itemsize, f".{fmt}")
        native = dtype.newbyteorder("=")
        reader = _StrideReader(uri, fmt, n, d, native, opts, offset=_HEADER, file_dtype=dtype)
    elif fmt in VECS_DTYPES:
        reader = _open_vecs(uri, fmt, fs, path, size, opts)
    else:
        reader = _open_npy(uri, fs, path, size, opts)
    logger.debug("opened %s: %s n=%d d=%d %s", uri, fmt, reader.n, reader.d, reader.dtype)
    return reader


def read_vectors(
    uri: str, start: int = 0, stop: int | None = None, format: str | None = None,
    storage_options: Options = None, *, column: str | None = None,
) -> np.ndarray:
    """Rows [start, stop) of a vector file (see ``open_vectors``)."""
    return open_vectors(uri, format, storage_options, column=column).read(start, stop)


def read_ground_truth(uri: str, storage_options: Options = None) -> tuple[np.ndarray, np.ndarray]:
    """big-ann ground truth .ibin: (ids int64 (nq, k), distances float32 (nq, k))."""
    fs, path = _resolve(uri, storage_options)
    size = _file_size(fs, path, uri)
    nq, k = _bin_header(fs, path, uri, size, 8, "ground-truth (int32 ids, float32 distances)")
    ids = _read_array(fs, path, uri, _HEADER, nq * k, np.dtype("<i4"))
    distances = _read_array(fs, path, uri, _HEADER + nq * k * 4, nq * k, np.dtype("<f4"))
    return ids.reshape(nq, k).astype(np.int64), distances.reshape(nq, k).astype(np.float32)


def write_vectors(uri: str | os.PathLike[str], x: np.ndarray, storage_options: Options = None) -> None:
    """Write a 2-D array as .fbin/.u8bin/.i8bin/.ibin/.fvecs/.ivecs/.bvecs/.npy by extension."""
    uri, x = os.fspath(uri), np.asarray(x)
    fmt = _format_for(uri, None)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"{uri}: expected a 2-D array with d > 0, got shape {x.shape}")
    n, d = x.shape
    if fmt in BIN_DTYPES:
        chunks = [_header_bytes(n, d, uri), _cast(x, BIN_DTYPES[fmt], uri).tobytes()]
    elif fmt in VECS_DTYPES:
        x = _cast(x, VECS_DTYPES[fmt], uri)
        rows = np.empty((n, _PREFIX + x.itemsize * d), dtype=np.uint8)
        rows[:, :_PREFIX] = np.array([d], dtype="<i4").view(np.uint8)
        rows[:, _PREFIX:] = x.view(np.uint8).reshape(n, -1)
        chunks = [rows.tobytes()]
    elif fmt == "npy":
        buf = io.BytesIO()
        npy_format.write_array(buf, _cast(x, x.dtype, uri), allow_pickle=False)
        chunks = [buf.getvalue()]
    else:
        raise ValueError(f"{uri}: write_vectors does not write .{fmt}")
    _write_bytes(uri, chunks, storage_options)


def write_ground_truth(
    uri: str, ids: np.ndarray, distances: np.ndarray, storage_options: Options = None
) -> None:
    """Write big-ann ground truth: uint32 nq, k, then int32 ids, then float32 distances."""
    ids, distances = np.asarray(ids), np.asarray(distances)
    if ids.ndim != 2 or ids.shape != distances.shape:
        shapes = f"ids {ids.shape} and distances {distances.shape}"
        raise ValueError(f"{uri}: {shapes} must be 2-D and of equal shape")
    ids, distances = _cast(ids, np.dtype("<i4"), uri), _cast(distances, np.dtype("<f4"), uri)
    chunks = [_header_bytes(*ids.shape, uri), ids.tobytes(), distances.tobytes()]
    _write_bytes(uri, chunks, storage_options)


def _format_for(uri: str, format: str | None) -> str:
    fmt = format if format is not None else posixpath.splitext(uri)[1].lstrip(".").lower()
    if fmt not in FORMATS:
        what = f"format={format!r}" if format is not None else f"extension {fmt!r}"
        raise ValueError(f"{uri}: unsupported {what}; supported: {', '.join(FORMATS)}")
    return fmt


def _resolve(uri: str, storage_options: Options) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(uri, **(storage_options or {}))


def _file_size(fs: fsspec.AbstractFileSystem, path: str, uri: str) -> int:
    try:
        info = fs.info(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{uri}: no such file") from err
    if info.get("type") != "file":
        raise ValueError(f"{uri}: not a file (type {info.get('type')!r})")
    return int(info["size"])


def _read_array(fs: Any, path: str, uri: str, offset: int, count: int, dtype: np.dtype) -> np.ndarray:
    """``count`` items of ``dtype`` at byte ``offset``, reading only those bytes."""
    if count == 0:
        return np.empty(0, dtype=dtype)
    if isinstance(fs, LocalFileSystem):
        with open(path, "rb") as f:
            x = np.fromfile(f, dtype=dtype, count=count, offset=offset)
    else:
        data = fs.cat_file(path, start=offset, end=offset + count * dtype.itemsize)
        x = np.frombuffer(bytearray(data), dtype=dtype)
    if x.size != count:
        raise ValueError(f"{uri}: short read at byte {offset}: {x.size} of {count} {dtype} values")
    return x


def _bin_header(fs: Any, path: str, uri: str, size: int, cell_bytes: int, what: str) -> tuple[int, int]:
    """(n, d) from a big-ann header, checked against the file size before any data is read."""
    if size < _HEADER:
        raise ValueError(f"{uri}: {size} bytes is too small for the 8-byte n, d header")
    n, d = (int(v) for v in _read_array(fs, path, uri, 0, 2, np.dtype("<u4")))
    if d == 0:
        raise ValueError(f"{uri}: {what} header says n={n}, d=0; d must be positive")
    expected = _HEADER + n * d * cell_bytes
    if size != expected:
        hint = ""
        if what == ".ibin" and size == _HEADER + 2 * n * d * 4:
            hint = " (this looks like a ground-truth file: use read_ground_truth)"
        raise ValueError(
            f"{uri}: {what} header says n={n}, d={d}, so the file should be {expected} bytes "
            f"(8 + n*d*{cell_bytes}), but it is {size} bytes{hint}"
        )
    return n, d


def _open_vecs(uri: str, fmt: str, fs: Any, path: str, size: int, opts: Options) -> VectorReader:
    dtype = VECS_DTYPES[fmt]
    if size < _PREFIX:
        raise ValueError(f"{uri}: {size} bytes is too small for a .{fmt} row")
    d = int(_read_array(fs, path, uri, 0, 1, np.dtype("<i4"))[0])
    if d <= 0:
        raise ValueError(f"{uri}: row 0 has dimension prefix d={d}; d must be positive")
    row_bytes = _PREFIX + d * dtype.itemsize
    if size % row_bytes:
        raise ValueError(
            f"{uri}: file size {size} is not a multiple of the row size {row_bytes} bytes "
            f"(4 + d={d} * {dtype.itemsize}); truncated or not a .{fmt} file"
        )
    n, native = size // row_bytes, dtype.newbyteorder("=")
    return _StrideReader(uri, fmt, n, d, native, opts, offset=0, file_dtype=dtype, prefix=_PREFIX)


def _open_npy(uri: str, fs: Any, path: str, size: int, opts: Options) -> VectorReader:
    head = fs.cat_file(path, start=0, end=min(size, 12))
    try:
        version = npy_format.read_magic(io.BytesIO(head))
        len_bytes = 2 if version == (1, 0) else 4
        offset = 8 + len_bytes + int.from_bytes(head[8 : 8 + len_bytes], "little")
        f = io.BytesIO(fs.cat_file(path, start=0, end=offset))
        npy_format.read_magic(f)
        v1 = version == (1, 0)
        read_header = npy_format.read_array_header_1_0 if v1 else npy_format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(f)
    except (ValueError, SyntaxError, TypeError, EOFError, OverflowError, TokenError) as err:
        # numpy parses the header with ast.literal_eval: garbage raises SyntaxError & co.
        raise ValueError(f"{uri}: not a valid .npy file: {type(err).__name__}: {err}") from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise ValueError(f"{uri}: .npy dtype {dtype} refused; only numeric (no objects/pickles)")
    if fortran_order:
        raise ValueError(f"{uri}: Fortran-order .npy of shape {shape} refused; save it C-ordered")
    if len(shape) != 2 or shape[1] == 0:
        raise ValueError(f"{uri}: .npy shape {shape} refused; expected 2-D (n, d) with d > 0")
    n, d = (int(v) for v in shape)
    if size != offset + n * d * dtype.itemsize:
        raise ValueError(
            f"{uri}: .npy header says shape ({n}, {d}) of {dtype}, so the file should be "
            f"{offset + n * d * dtype.itemsize} bytes, but it is {size} bytes"
        )
    native = dtype.newbyteorder("=")
    return _StrideReader(uri, "npy", n, d, native, opts, offset=offset, file_dtype=dtype)


def _open_parquet(uri: str, fs: Any, path: str, column: str | None, opts: Options) -> VectorReader:
    try:
        return _open_parquet_file(uri, fs, path, column, opts)
    except _PARQUET_ERRORS as exc:
        raise _unreadable(uri, exc) from None


def _unreadable(where: str, exc: BaseException) -> ValueError:
    return ValueError(f"{where}: not readable Parquet ({type(exc).__name__}: {exc})")


def _open_parquet_file(uri: str, fs: Any, path: str, column: str | None, opts: Options):
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        column = _pick_column(uri, pf.schema_arrow, column)
        list_type, meta = pf.schema_arrow.field(column).type, pf.metadata
        if pa.types.is_fixed_size_list(list_type):
            d = list_type.list_size
        else:  # d from row 0; every read checks its rows have that length
            batch = next(pf.iter_batches(batch_size=1, columns=[column]), None)
            if batch is None or batch.num_rows == 0 or not batch.column(0)[0].is_valid:
                raise ValueError(f"{uri}: column {column!r} has no non-null row 0: d unknown")
            d = len(batch.column(0)[0])
    value_type = list_type.value_type
    if d <= 0 or not (pa.types.is_integer(value_type) or pa.types.is_floating(value_type)):
        raise ValueError(f"{uri}: column {column!r} is {list_type}; need numeric lists, d > 0")
    counts = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    starts = tuple(int(s) for s in np.cumsum([0, *counts]))
    dtype = np.dtype(value_type.to_pandas_dtype())
    return _ParquetReader(
        uri, "parquet", meta.num_rows, d, dtype, opts, column=column, row_group_starts=starts
    )


def _pick_column(uri: str, schema: pa.Schema, column: str | None) -> str:
    is_list = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    lists = [f.name for f in schema if any(test(f.type) for test in is_list)]
    if column is None and len(lists) != 1:
        raise ValueError(f"{uri}: pass column=, one of the list columns {lists}")
    if column is not None and column not in lists:
        raise ValueError(f"{uri}: column {column!r} is not a list column; list columns: {lists}")
    return column if column is not None else lists[0]


def _cast(x: np.ndarray, dtype: np.dtype, uri: str) -> np.ndarray:
    """C-contiguous ``x`` as ``dtype``; refuses non-numeric, float to int and out-of-range ints."""
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{uri}: dtype {x.dtype} refused; only numeric arrays are written")
    if dtype.kind in "iu" and x.dtype.kind == "f":
        raise ValueError(f"{uri}: cannot write {x.dtype} values as {dtype}")
    if dtype.kind in "iu" and x.size and x.dtype != dtype:
        info, lo, hi = np.iinfo(dtype), int(x.min()), int(x.max())
        if lo < info.min or hi > info.max:
            bounds = f"[{info.min}, {info.max}]"
            raise ValueError(f"{uri}: values in [{lo}, {hi}] do not fit {dtype} {bounds}")
    return np.ascontiguousarray(x, dtype=dtype)


def _header_bytes(n: int, d: int, uri: str) -> bytes:
    if not (0 <= n < 2**32 and 0 < d < 2**32):
        raise ValueError(f"{uri}: n={n}, d={d} do not fit the uint32 header (d must be positive)")
    return np.array([n, d], dtype="<u4").tobytes()


def _write_bytes(uri: str, chunks: list[bytes], storage_options: Options) -> None:
    fs, path = _resolve(uri, storage_options)
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
    logger.debug("wrote %s (%d bytes)", uri, sum(len(c) for c in chunks))


def _check_range(uri: str, n: int, start: int, stop: int | None) -> tuple[int, int]:
    start, stop = operator.index(start), n if stop is None else operator.index(stop)
    if start < 0 or stop < 0:
        raise ValueError(f"{uri}: negative row bound start={start}, stop={stop} (rows are 0..{n})")
    if stop < start:
        raise ValueError(f"{uri}: stop={stop} is before start={start}")
    if stop > n:
        raise ValueError(f"{uri}: stop={stop} is past the last row (n={n})")
    return start, stop

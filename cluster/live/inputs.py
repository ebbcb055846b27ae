"""What the live jobs read besides the vectors: ids files and attribute tables.

Ids (`--ids URI`, for append and delete), local or any fsspec URI (s3://...):
  - `.npy`: one integer column, shape (n,) or (n, 1), any integer dtype (no pickles);
  - `.parquet`: an integer column named `id`.
Attributes (`append --attributes URI`): a Parquet table holding the index's attribute
columns, in one of two forms:
  - no `id` column: one row per source row, in the source's order;
  - an `id` column: keyed by id, one row per appended id, in any order.
Without `--attributes`, a Parquet source's own columns named like the index's attribute
columns are used (other columns of the source are ignored). Columns are cast to the type
the index stores (a cast that would lose data is an error naming the column); a missing or
an extra column is an error naming it.
"""
from __future__ import annotations

import posixpath

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.lib import format as npy_format

from shards.manifest import Manifest

ID_COLUMN = "id"
ID_FORMATS = ("npy", "parquet")


def _extension(uri: str) -> str:
    return posixpath.splitext(uri)[1].lstrip(".").lower()


def _open(uri: str, storage_options: dict | None, what: str):
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    if not fs.exists(path):
        raise FileNotFoundError(f"{what} {uri}: no such file")
    if fs.isdir(path):
        raise IsADirectoryError(f"{what} {uri}: is a folder, not a file")
    return fs.open(path, "rb")


def read_table(uri: str, storage_options: dict | None = None, what: str = "--attributes",
               columns: list[str] | None = None) -> pa.Table:
    """A Parquet table (all columns, or `columns`)."""
    if _extension(uri) != "parquet":
        raise ValueError(f"{what} {uri}: expected a .parquet file")
    with _open(uri, storage_options, what) as f:
        try:
            return pq.read_table(f, columns=columns)
        except (pa.ArrowException, OSError, EOFError) as exc:
            raise ValueError(f"{what} {uri}: not readable Parquet "
                             f"({' '.join(str(exc).split())})") from None


def read_ids(uri: str, storage_options: dict | None = None, what: str = "--ids") -> np.ndarray:
    """The ids of an ids file (this module's formats) as int64, in file order; every id
    in [0, 2**63)."""
    fmt = _extension(uri)
    if fmt not in ID_FORMATS:
        raise ValueError(f"{what} {uri}: unsupported ids file .{fmt}; use .npy (one integer "
                         f"column) or .parquet (an integer column {ID_COLUMN!r})")
    if fmt == "npy":
        with _open(uri, storage_options, what) as f:
            try:
                ids = npy_format.read_array(f, allow_pickle=False)
            except (ValueError, OSError, EOFError, SyntaxError) as exc:
                raise ValueError(f"{what} {uri}: not a readable .npy file "
                                 f"({' '.join(str(exc).split())})") from None
        if ids.ndim == 2 and ids.shape[1] == 1:
            ids = ids[:, 0]
        where = f"{what} {uri}: .npy of shape {ids.shape} {ids.dtype}"
    else:
        table = read_table(uri, storage_options, what)
        if ID_COLUMN not in table.column_names:
            raise ValueError(f"{what} {uri}: no column {ID_COLUMN!r} (columns: "
                             f"{table.column_names})")
        column = table.column(ID_COLUMN)
        if column.null_count:
            raise ValueError(f"{what} {uri}: column {ID_COLUMN!r} has {column.null_count} nulls")
        ids = column.to_numpy()
        where = f"{what} {uri}: column {ID_COLUMN!r} of type {column.type}"
    return check_id_values(ids, where)


def check_id_values(ids: np.ndarray, where: str) -> np.ndarray:
    """A 1-d integer array of ids in [0, 2**63), as int64."""
    if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer)):
        raise ValueError(f"{where}: expected one column of integer ids")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= 2**63):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise ValueError(f"{where}: id {bad} is outside [0, 2**63)")
    return ids.astype(np.int64)


def first_duplicate(ids: np.ndarray) -> int | None:
    """An id that appears more than once, or None."""
    unique, counts = np.unique(ids, return_counts=True)
    return int(unique[counts > 1][0]) if (counts > 1).any() else None


def source_attributes(uri: str, names: list[str], storage_options: dict | None) -> pa.Table:
    """The columns `names` of a Parquet source (a missing one is an error naming it)."""
    with _open(uri, storage_options, "--source") as f:
        have = pq.ParquetFile(f).schema_arrow.names
    missing = [n for n in names if n not in have]
    if missing:
        raise ValueError(f"--source {uri}: no column {missing[0]!r}, an attribute column of "
                         f"the index (give --attributes, or a source with the columns {names})")
    return read_table(uri, storage_options, "--source", columns=names)


def match_attributes(table: pa.Table, ids: np.ndarray, manifest: Manifest,
                     where: str) -> pa.Table:
    """The attribute rows of the appended `ids` (in their order), with the index's columns
    cast to its types, from a table in one of this module's two forms."""
    want = manifest.attributes or {}
    keyed = ID_COLUMN in table.column_names and ID_COLUMN not in want
    got = [c for c in table.column_names if not (keyed and c == ID_COLUMN)]
    if not want:
        raise ValueError(f"{where}: index {manifest.name!r} has no attribute columns, so "
                         f"appended rows carry none (columns given: {got})")
    for name in sorted(want):
        if name not in got:
            raise ValueError(f"{where}: no column {name!r} ({want[name]}), an attribute column "
                             f"of index {manifest.name!r} (its columns: {sorted(want)})")
    extra = [name for name in got if name not in want]
    if extra:
        raise ValueError(f"{where}: column {extra[0]!r} is not an attribute column of index "
                         f"{manifest.name!r} (its columns: {sorted(want)})")
    if table.num_rows != ids.size:
        raise ValueError(f"{where}: {table.num_rows} rows for {ids.size} appended rows "
                         f"({'one per appended id' if keyed else 'one per source row'})")
    if keyed:
        table = table.take(pa.array(_rows_by_id(table.column(ID_COLUMN), ids, where)))
    return pa.table({name: _cast(table.column(name), want[name], name, where)
                     for name in sorted(want)})


def _rows_by_id(column: pa.ChunkedArray, ids: np.ndarray, where: str) -> np.ndarray:
    """Positions in `column` of each of `ids` (every appended id once)."""
    if column.null_count or not pa.types.is_integer(column.type):
        raise ValueError(f"{where}: column {ID_COLUMN!r} must hold integer ids without nulls, "
                         f"got {column.type}")
    keys = column.to_numpy().astype(np.int64)
    dup = first_duplicate(keys)
    if dup is not None:
        raise ValueError(f"{where}: id {dup} has more than one row")
    order = np.argsort(keys, kind="stable")
    at = np.minimum(np.searchsorted(keys[order], ids), keys.size - 1)
    found = keys[order][at] == ids
    if not found.all():
        raise ValueError(f"{where}: no row for appended id {int(ids[~found][0])} "
                         f"({int((~found).sum())} appended ids have none)")
    return order[at]


def _cast(column: pa.ChunkedArray, type_name: str, name: str, where: str) -> pa.ChunkedArray:
    """`column` as the index stores it: unchanged when its type already is; else cast
    safely to the type named `type_name` (an unknown name: left to the append's check)."""
    if str(column.type) == type_name:
        return column
    try:
        target = pa.type_for_alias(type_name)
    except (ValueError, KeyError):
        return column
    try:
        return column.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"{where}: column {name!r} is {column.type}, index stores {type_name} "
                         f"and the values do not convert ({' '.join(str(exc).split())})") from None

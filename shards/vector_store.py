"""Stored vector formats (SPEC 7): what a row of the optional `vector` column holds.

    rows = store_rows_of(x, "sq8")            # (n, dim + 4) uint8
    store_of(rows, dim)                       # -> "sq8"
    x_hat = decode_rows(rows, "sq8", dim)     # float32, within half a step of x

- "uint8", "float16", "float32": the vectors as given, `dim` values per row;
- "sq8": 8-bit scalar quantization with each row's own range: `dim` codes, then the row's
  offset and step as two little-endian float16 (dim + 4 bytes); x[t] ~ offset + code[t] *
  step, at most half a step off (offset and step are rounded to float16 before the codes are
  chosen, so decoding agrees with encoding). A row's own range needs no trained state: rows
  move between shards, versions and models unchanged.

The format of an array follows from its dtype and width, so a store's name is never
carried beside the rows.
"""
from __future__ import annotations

import numpy as np

#: store name -> (dtype, extra bytes per row beyond dim values)
STORES = {"uint8": (np.dtype(np.uint8), 0), "float16": (np.dtype(np.float16), 0),
          "float32": (np.dtype(np.float32), 0), "sq8": (np.dtype(np.uint8), 4)}
SQ8_LEVELS = 255
_F16_MAX = float(np.finfo(np.float16).max)


def check_store_name(name, what: str = "stored_vectors") -> str:
    if name not in STORES:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, STORES))}, got {name!r}")
    return name


def store_dtype(name: str) -> np.dtype:
    return STORES[check_store_name(name)][0]


def store_width(name: str, dim: int) -> int:
    """Values (columns) per stored row."""
    return dim + STORES[check_store_name(name)][1]


def store_nbytes(name: str | None, dim: int) -> int:
    """Bytes a store keeps per vector (0 for no store)."""
    return 0 if name is None else store_width(name, dim) * store_dtype(name).itemsize


def store_of(rows: np.ndarray, dim: int) -> str:
    """The store format of a 2-D array of stored rows for `dim`-d vectors (ValueError when
    its dtype and width are no format's)."""
    if isinstance(rows, np.ndarray) and rows.ndim == 2:
        for name, (dtype, extra) in STORES.items():
            if rows.dtype == dtype and rows.shape[1] == dim + extra:
                return name
    raise ValueError(f"stored vectors of {dim}-d rows must be a 2-D array of uint8[{dim}], "
                     f"float16[{dim}], float32[{dim}] or sq8 (uint8[{dim + 4}]), got "
                     f"{getattr(rows, 'dtype', type(rows).__name__)} "
                     f"{getattr(rows, 'shape', None)}")


def encode_sq8(x: np.ndarray, what: str = "vectors", row_offset: int = 0) -> np.ndarray:
    """Rows of x (n, dim), finite, as sq8 rows (n, dim + 4) uint8; refuses, naming it, a
    row whose values lie beyond float16's range (its offset and step are float16)."""
    x = np.asarray(x, dtype=np.float32)
    n, dim = x.shape
    out = np.empty((n, dim + 4), dtype=np.uint8)
    if not n:
        return out
    lo, hi = x.min(axis=1), x.max(axis=1)
    bad = (lo < -_F16_MAX) | (hi > _F16_MAX)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}: row {row + row_offset} has values beyond float16's "
                         f"+-{_F16_MAX:g}, which an sq8 row's offset and step cannot hold; "
                         f"use stored_vectors='float32'")
    offset = lo.astype(np.float16)
    down = offset.astype(np.float32) > lo                     # round the offset down
    offset[down] = np.nextafter(offset[down], np.float16(-np.inf))
    span = (hi - offset.astype(np.float32)) / np.float32(SQ8_LEVELS)
    step = span.astype(np.float16)
    up = step.astype(np.float32) < span                       # and the step up: 255 steps cover
    step[up] = np.nextafter(step[up], np.float16(np.inf))
    step32 = step.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        level = (x - offset.astype(np.float32)[:, None]) / step32[:, None]
    level = np.where(step32[:, None] > 0, level, 0)
    out[:, :dim] = np.clip(np.rint(level), 0, SQ8_LEVELS)
    out[:, dim:] = np.stack([offset, step], axis=1).view(np.uint8)
    return out


def sq8_params(rows: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(offset, step) float32 per sq8 row."""
    pair = np.ascontiguousarray(rows[:, dim:dim + 4]).view(np.float16)
    return pair[:, 0].astype(np.float32), pair[:, 1].astype(np.float32)


def decode_rows(rows: np.ndarray, name: str, dim: int) -> np.ndarray:
    """float32 (n, dim) of stored rows: the vectors themselves, or an sq8 row's
    offset + code * step."""
    if name != "sq8":
        return np.asarray(rows, dtype=np.float32)
    offset, step = sq8_params(rows, dim)
    return offset[:, None] + rows[:, :dim].astype(np.float32) * step[:, None]

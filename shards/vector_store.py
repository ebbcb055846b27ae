"""Stored vector formats (SPEC 7): what a row of the optional `vector` column holds.

    rows = encode_sq8(x)                      # (n, dim + 2) uint8
    store_of(rows, dim)                       # -> "sq8"
    x_hat = decode_rows(rows, "sq8", dim)     # float32, within half a step of x

- "uint8", "float16", "float32": the vectors as given, `dim` values per row;
- "sq8": 8-bit scalar quantization on each row's own scale: `dim` codes, then one
  little-endian float16 s (dim + 2 bytes). x[t] ~ (code[t] - base) * |s| with base 128
  (s >= 0: a row with negative values, codes centred on 0) or 0 (sign bit of s set: a row
  of non-negative values, all 256 codes above 0). |s| is the smallest float16 step that
  covers the row (rounded up before the codes are chosen, so decoding agrees with
  encoding): every value is at most half a step off. No trained state: rows move between
  shards, versions and models unchanged, and cost 2 bytes more than the codes (faiss' SQ8
  keeps per-dimension ranges instead; a row far from 0 in both directions is coarser here).

The format of an array follows from its dtype and width, so a store's name is never
carried beside the rows.
"""
from __future__ import annotations

import numpy as np

#: store name -> (dtype, extra bytes per row beyond dim values)
STORES = {"uint8": (np.dtype(np.uint8), 0), "float16": (np.dtype(np.float16), 0),
          "float32": (np.dtype(np.float32), 0), "sq8": (np.dtype(np.uint8), 2)}
SQ8_LEVELS = 255
SQ8_BASE = 128     # the code of 0 in a row with negative values
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
                     f"float16[{dim}], float32[{dim}] or sq8 (uint8[{dim + 2}]), got "
                     f"{getattr(rows, 'dtype', type(rows).__name__)} "
                     f"{getattr(rows, 'shape', None)}")


def encode_sq8(x: np.ndarray, what: str = "vectors", row_offset: int = 0) -> np.ndarray:
    """Rows of x (n, dim), finite, as sq8 rows (n, dim + 2) uint8; refuses, naming it, a
    row whose step would lie beyond float16's range."""
    x = np.asarray(x, dtype=np.float32)
    n, dim = x.shape
    out = np.empty((n, dim + 2), dtype=np.uint8)
    if not n:
        return out
    lo, hi = x.min(axis=1), x.max(axis=1)
    unsigned = lo >= 0
    base = np.where(unsigned, np.float32(0), np.float32(SQ8_BASE))
    need = np.where(unsigned, hi / np.float32(SQ8_LEVELS),
                    np.maximum(-lo / np.float32(SQ8_BASE), hi / np.float32(SQ8_LEVELS - SQ8_BASE)))
    bad = need > _F16_MAX
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}: row {row + row_offset} has values beyond "
                         f"+-{_F16_MAX * SQ8_BASE:g}, which an sq8 row's float16 step cannot "
                         f"cover; use stored_vectors='float32'")
    step = need.astype(np.float16)
    up = step.astype(np.float32) < need                       # round the step up: it covers
    step[up] = np.nextafter(step[up], np.float16(np.inf))
    step32 = step.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        level = x / step32[:, None] + base[:, None]
    level = np.where(step32[:, None] > 0, level, base[:, None])
    out[:, :dim] = np.clip(np.rint(level), 0, SQ8_LEVELS)
    signed = np.where(unsigned, -step, step)                  # the sign bit: base 0 (-0 too)
    out[:, dim:] = signed.view(np.uint8).reshape(n, 2)
    return out


def sq8_params(rows: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(base, step) float32 per sq8 row: x = (code - base) * step."""
    bits = np.ascontiguousarray(rows[:, dim:dim + 2]).view(np.uint16)[:, 0]
    step = (bits & np.uint16(0x7FFF)).view(np.float16).astype(np.float32)
    base = np.where(bits & np.uint16(0x8000), np.float32(0), np.float32(SQ8_BASE))
    return base.astype(np.float32), step


def decode_rows(rows: np.ndarray, name: str, dim: int) -> np.ndarray:
    """The vectors (n, dim) of stored rows: uint8 / float16 / float32 rows as they are (no
    copy), float32 (code - base) * step of sq8 rows."""
    if name != "sq8":
        return rows
    base, step = sq8_params(rows, dim)
    return (rows[:, :dim].astype(np.float32) - base[:, None]) * step[:, None]

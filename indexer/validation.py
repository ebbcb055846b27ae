"""Input checks shared by the index entry points and the serving layer: every message
names the problem."""
from __future__ import annotations

import numpy as np

SUPPORTED_DTYPES = (np.float32, np.float64, np.float16, np.uint8, np.int8)


def check_vectors(x, dim: int | None, what: str) -> np.ndarray:
    """Validate an (n, dim) array of a supported dtype (any dim when dim is None); returns
    it (not copied).

    Finiteness is checked batch by batch by `as_float32`, so that large inputs are not
    scanned twice.
    """
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{what}: expected a numpy array, got {type(x).__name__}")
    if x.dtype.type not in SUPPORTED_DTYPES:
        names = ", ".join(np.dtype(t).name for t in SUPPORTED_DTYPES)
        raise ValueError(f"{what}: unsupported dtype {x.dtype}; supported: {names}")
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{what}: expected a non-empty 2-D array (n, {dim or 'd'}), got "
                         f"shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{what}: wrong dimension: got shape {x.shape}, the index has dim={dim}")
    return x


def check_queries(queries, dim: int | None = None) -> np.ndarray:
    """float32 C-contiguous (nq, dim) view or copy of a query batch, checked as `VLQIndex.search`
    checks it (the serving client and coordinator call this too); ValueError naming the
    problem (type, dtype, shape, dimension, NaN/inf)."""
    return as_float32(check_vectors(queries, dim, "queries"), "queries")


def as_float32(x: np.ndarray, what: str, row_offset: int = 0) -> np.ndarray:
    """float32 C-contiguous copy/view of a validated batch, refusing NaN and inf."""
    out = np.ascontiguousarray(x, dtype=np.float32)
    if x.dtype.kind == "f":
        finite = np.isfinite(out).all(axis=1)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0]) + row_offset
            raise ValueError(f"{what}: row {row} contains NaN or inf")
    return out


def check_positive_int(value, name: str, upper: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if upper is not None and value > upper:
        raise ValueError(f"{name}={value} exceeds its maximum {upper}")
    return int(value)


def check_ids(ids, n: int) -> np.ndarray:
    if not isinstance(ids, np.ndarray) or ids.dtype.kind not in "iu":
        raise ValueError(f"ids: expected an integer numpy array, got "
                         f"{getattr(ids, 'dtype', type(ids).__name__)}")
    if ids.shape != (n,):
        raise ValueError(f"ids: expected shape ({n},) to match the vectors, got {ids.shape}")
    if ids.dtype.kind == "i" and n and ids.min() < 0:
        raise ValueError("ids: negative ids are not allowed (-1 marks a missing result)")
    if ids.dtype == np.uint64 and n and ids.max() > np.iinfo(np.int64).max:
        raise ValueError("ids: values above 2**63-1 are not supported")
    return ids.astype(np.int64)

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
    """float32 C-contiguous copy/view of a validated batch, refusing NaN, inf and rows whose
    squared norm overflows float32 (their distances would be inf or NaN)."""
    out = np.ascontiguousarray(x, dtype=np.float32)
    if x.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            sq_norms = np.einsum("nd,nd->n", out, out)   # inf or NaN for both kinds of bad row
        bad = ~np.isfinite(sq_norms)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            row = first + row_offset
            if not np.isfinite(out[first]).all():
                raise ValueError(f"{what}: row {row} contains NaN or inf")
            norm2 = float(np.square(out[first], dtype=np.float64).sum())
            raise ValueError(f"{what}: row {row} has squared norm {norm2:.3g}, beyond float32 "
                             f"(max {float(np.finfo(np.float32).max):.3g}): its distances would "
                             f"overflow; scale the vectors down")
    return out


def check_finite_rows(values: np.ndarray, what: str, row_offset: int, reason: str) -> None:
    """Refuse the first row of a (n, ...) float array holding NaN or inf, naming it: the
    guard that keeps non-finite distances out of a search's answer."""
    finite = np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0]) + row_offset
        raise ValueError(f"{what}: row {row}: {reason}")


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


def check_index_array(a, name: str, shape: tuple, upper: int) -> np.ndarray:
    """An integer numpy array of `shape` whose values lie in [0, upper) (list ids, lambda
    indexes, PQ codes given to the index): nothing is cast or wrapped silently."""
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected an integer numpy array, got "
                         f"{getattr(a, 'dtype', type(a).__name__)}")
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")
    if a.size and (a.min() < 0 or a.max() >= upper):
        raise ValueError(f"{name}: values must lie in [0, {upper}), got [{a.min()}, {a.max()}]")
    return a


def check_unique_ids(ids: np.ndarray, what: str, existing=None) -> None:
    """Refuse an id given twice in `ids`, or one already among `existing` (an int64 array,
    or None when no stored id can collide), naming one such id."""
    ordered = np.sort(ids)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if repeated.size:
        raise ValueError(f"{what}: id {int(repeated[0])} appears more than once; ids must be "
                         f"unique")
    if existing is not None and existing.size and ordered.size:
        taken = ordered[np.isin(ordered, existing)]
        if taken.size:
            raise ValueError(f"{what}: id {int(taken[0])} is already in the index; ids must "
                             f"be unique")

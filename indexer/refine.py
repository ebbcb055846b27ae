"""Metrics outside the scan kernels, and refinement by stored vectors (SPEC 7, issue 15).

    rows = store_rows(x, "uint8", "add")                  # what an index keeps per vector
    D, pos = refine(q, candidates, rows, "l2", k=10)       # exact re-rank of a scan's best

A metric is "l2" (squared L2, smallest first), "ip" (inner product, largest first) or
"cosine" (inner product of normalised vectors, largest first). Empty slots (position -1)
come last: (inf, -1) for l2, (-inf, -1) for ip and cosine.
"""
from __future__ import annotations

import numpy as np

from indexer.refine_kernel import refine_rows
from indexer.validation import check_vectors
from shards.shape import METRICS
from shards.vector_store import STORES, encode_sq8, store_dtype, store_of, store_width


def check_metric(metric) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got metric={metric!r}")
    return metric


def larger_is_better(metric: str) -> bool:
    """True for similarities (ip, cosine): D sorted descending."""
    return metric != "l2"


def empty_score(metric: str) -> np.float32:
    """The distance of an empty result slot: what sorts last."""
    return np.float32(-np.inf if larger_is_better(metric) else np.inf)


def check_store(stored_vectors) -> str | None:
    if stored_vectors is not None and stored_vectors not in STORES:
        raise ValueError(f"stored_vectors must be None, {', '.join(map(repr, STORES))}; "
                         f"got stored_vectors={stored_vectors!r}")
    return stored_vectors


def stored_input(vectors, store: str | None, dim: int, n: int, what: str):
    """What a store keeps of `vectors` given beside n codes (`add_encoded`): required with
    a store, refused without; (n, dim) vectors, cast or encoded as `store_rows` does, or n
    rows already in the store's format (sq8 rows as a saved index holds them)."""
    if (vectors is None) != (store is None):
        raise ValueError(f"{what}: the index has stored_vectors={store!r}; "
                         f"{'pass' if vectors is None else 'do not pass'} vectors")
    if vectors is None:
        return None
    width = store_width(store, dim)
    if isinstance(vectors, np.ndarray) and vectors.shape == (n, width) and \
            vectors.dtype == store_dtype(store):
        return np.ascontiguousarray(vectors)
    if not isinstance(vectors, np.ndarray) or vectors.shape != (n, dim):
        raise ValueError(f"{what}: vectors must be an (n={n}, dim={dim}) numpy array"
                         f"{f' or {store} rows (n, {width})' if width != dim else ''}, got "
                         f"{getattr(vectors, 'shape', type(vectors).__name__)}")
    if n:
        check_vectors(vectors, None, f"{what}: vectors")
    return store_rows(vectors, store, f"{what}: vectors")


def check_refine(refine, k: int, store: str | None, ntotal: int) -> int:
    """The candidates a search re-ranks per query (`search(refine=R)`: R >= k, a vector
    store; at most ntotal)."""
    if store is None:
        raise ValueError(f"search: refine={refine!r} needs stored vectors; build the index "
                         f"with VLQIndex(..., stored_vectors='uint8'|'float16'|'float32'|'sq8')")
    if isinstance(refine, bool) or not isinstance(refine, (int, np.integer)) or refine <= 0:
        raise ValueError(f"search: refine must be a positive integer or None, got "
                         f"refine={refine!r}")
    if refine < k:
        raise ValueError(f"search: refine={refine} must be >= k={k} (refine counts the "
                         f"candidates re-ranked, k of them are returned)")
    return min(int(refine), ntotal)


def store_rows(x: np.ndarray, store: str, what: str, row_offset: int = 0) -> np.ndarray:
    """Rows of x (checked (n, dim), any supported dtype) as the store keeps them (cast, or
    sq8-encoded); refuses a uint8 store of values that are not integers in 0..255, a
    float16 store of values beyond float16 and an sq8 row beyond its float16 step's reach
    (+-65504 * 128), naming the first bad row."""
    if store == "sq8":
        return encode_sq8(x, what, row_offset)
    dtype = store_dtype(store)
    if x.dtype == dtype:
        return np.ascontiguousarray(x)
    if store == "uint8":
        with np.errstate(invalid="ignore"):
            ok = ((x >= 0) & (x <= 255) & (x == np.round(x))).all(axis=1)
        if not ok.all():
            row = int(np.flatnonzero(~ok)[0])
            raise ValueError(f"{what}: stored_vectors='uint8' keeps integers in 0..255, but row "
                             f"{row + row_offset} ({x.dtype}) holds other values; use "
                             f"stored_vectors='float16' or 'float32'")
        return x.astype(np.uint8)
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(x, dtype=dtype)
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{what}: row {row + row_offset} does not fit stored_vectors={store!r} "
                         f"(values beyond {float(np.finfo(dtype).max):.6g}); use 'float32'")
    return out


def normalize_rows(x: np.ndarray, what: str, row_offset: int = 0) -> np.ndarray:
    """float32 rows scaled to unit L2 norm (the cosine metric's input); refuses a zero row,
    naming it (it has no direction)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("nd,nd->n", x, x, dtype=np.float64))
    zero = norms == 0
    if zero.any():
        raise ValueError(f"{what}: row {int(np.flatnonzero(zero)[0]) + row_offset} is zero; "
                         f"the cosine metric needs non-zero vectors")
    return (x / norms[:, None]).astype(np.float32)


def refine(queries: np.ndarray, positions: np.ndarray, vectors: np.ndarray, metric: str,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank candidates by their distance to the query, computed from the stored rows
    (exact for uint8/float16/float32 rows; for sq8 rows, to the decoded rows), and keep the
    k best.

    queries (nq, d) float32; positions (nq, r) int64 row numbers into `vectors`, stored rows
    of d-d vectors in a `shards.vector_store` format (-1: no candidate); metric as
    `check_metric`. Returns D float32 (nq, k) and the positions (nq, k), best first (ties
    in candidate order), empty slots last."""
    check_metric(metric)
    nq, r = positions.shape
    if queries.ndim != 2 or queries.shape[0] != nq:
        raise ValueError(f"refine: queries {queries.shape} do not match candidates "
                         f"{positions.shape}")
    store = store_of(vectors, queries.shape[1])
    if k <= 0 or k > r:
        raise ValueError(f"refine: k={k} must lie in [1, {r}] (the candidates per query)")
    return refine_rows(queries, positions, vectors, store, metric, k, empty_score(metric))

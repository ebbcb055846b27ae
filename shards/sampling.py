"""A uniform random sample of a vector source, read by row ranges (SPEC 5: sample).

Rows are drawn uniformly without replacement over the whole source; rows that lie close
together are read as one range, the rest as short ranges of their own, so a sample of
100k rows from a 1B-row file reads about 100k * row bytes, never the file. Ranges are
read by a few threads at once (ranged GETs on S3 overlap their latency).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from shards.readers import VectorReader

MAX_GAP_ROWS = 64      # rows this close are read in one range (the gap is read and dropped)
READ_THREADS = 8


def sample_row_ids(n: int, size: int, seed: int) -> np.ndarray:
    """`min(size, n)` distinct row numbers of [0, n), sorted, uniform for a seed."""
    if size <= 0:
        raise ValueError(f"sample size must be > 0, got {size}")
    size = min(size, n)
    rng = np.random.default_rng(seed)
    if size * 4 >= n:   # dense: a permutation prefix
        rows = rng.permutation(n)[:size]
    else:               # sparse: draw with replacement, top up until distinct
        rows = np.unique(rng.integers(0, n, size=size))
        while rows.size < size:
            extra = rng.integers(0, n, size=size - rows.size)
            rows = np.unique(np.concatenate([rows, extra]))
    return np.sort(rows).astype(np.int64)


def row_runs(rows: np.ndarray, max_gap: int = MAX_GAP_ROWS) -> list[tuple[int, int]]:
    """Cover sorted rows with [start, stop) ranges, merging rows at most max_gap apart."""
    if rows.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(rows) > max_gap) + 1
    starts = rows[np.concatenate([[0], cuts])]
    stops = rows[np.concatenate([cuts - 1, [rows.size - 1]])] + 1
    return list(zip(starts.tolist(), stops.tolist()))


def sample_vectors(reader: VectorReader, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(row ids, rows) of a uniform sample of `size` rows of `reader`'s source."""
    rows = sample_row_ids(reader.n, size, seed)
    runs = row_runs(rows)
    with ThreadPoolExecutor(max_workers=min(READ_THREADS, max(1, len(runs)))) as pool:
        blocks = list(pool.map(lambda r: reader.read(*r), runs))
    out = np.empty((rows.size, reader.d), dtype=reader.dtype)
    filled = 0
    for (start, stop), block in zip(runs, blocks):
        picked = rows[filled:filled + np.searchsorted(rows[filled:], stop)] - start
        out[filled:filled + picked.size] = block[picked]
        filled += picked.size
    assert filled == rows.size
    return rows, out

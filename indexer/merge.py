"""Merging top-k results of disjoint parts of an index (pure numpy, no Ray).

Each part answers (D, I) for the same queries with its own k nearest; the k nearest of
the union are the k smallest distances over all parts. Empty slots are (inf, -1). Equal distances are
ordered by id (`order_ties_by_id`), so that the answer does not depend on how the index
is split into parts (SIFT has duplicate vectors: equal codes, equal distances).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def merge_topk(D_list: Sequence[np.ndarray], I_list: Sequence[np.ndarray],
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """k smallest distances per row across parts: D float32 (nq, k), I int64 (nq, k).

    Parts may hold fewer than k columns; missing columns come back as (inf, -1). Equal
    distances are ordered by id.
    """
    if len(D_list) != len(I_list) or not D_list:
        raise ValueError(f"merge_topk: need as many distance as id arrays (>= 1), got "
                         f"{len(D_list)} and {len(I_list)}")
    if k <= 0:
        raise ValueError(f"merge_topk: k must be > 0, got {k}")
    nq = D_list[0].shape[0]
    for D, I in zip(D_list, I_list):
        if D.ndim != 2 or D.shape != I.shape or D.shape[0] != nq:
            raise ValueError(f"merge_topk: parts must be (nq={nq}, k_part) pairs of equal "
                             f"shape, got D {D.shape} and I {I.shape}")
    D = np.concatenate([np.asarray(d, np.float32) for d in D_list], axis=1)
    I = np.concatenate([np.asarray(i, np.int64) for i in I_list], axis=1)
    D = np.where(I < 0, np.float32(np.inf), D)
    order = np.lexsort((I, D), axis=1)[:, :k]       # by distance, then by id
    out_d = np.take_along_axis(D, order, axis=1)
    out_i = np.take_along_axis(I, order, axis=1)
    if out_d.shape[1] < k:   # fewer candidates than k in all parts together
        pad = k - out_d.shape[1]
        out_d = np.hstack([out_d, np.full((nq, pad), np.inf, np.float32)])
        out_i = np.hstack([out_i, np.full((nq, pad), -1, np.int64)])
    return out_d, out_i


def order_ties_by_id(D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by distance reordered so that equal distances come in id order; rows
    without ties are left untouched (returns the same arrays when there are none)."""
    if D.shape[1] < 2:
        return D, I
    rows = np.flatnonzero((D[:, 1:] == D[:, :-1]).any(axis=1))
    if rows.size == 0:
        return D, I
    order = np.lexsort((I[rows], D[rows]), axis=1)
    D, I = D.copy(), I.copy()
    D[rows] = np.take_along_axis(D[rows], order, axis=1)
    I[rows] = np.take_along_axis(I[rows], order, axis=1)
    return D, I

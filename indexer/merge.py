"""Merging top-k results of disjoint parts of an index (pure numpy, no Ray).

Each part answers (D, I) for the same queries with its own k nearest; the k nearest of
the union are the k smallest distances over all parts (l2), or the k largest similarities
(ip, cosine: D sorted descending, as faiss METRIC_INNER_PRODUCT; `ranks_descending`).
Empty slots are (inf, -1), or (-inf, -1) in descending order. Equal distances are
ordered by id (`order_ties_by_id`), so that the answer does not depend on how the index
is split into parts (SIFT has duplicate vectors: equal codes, equal distances).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

#: metrics whose search answers similarities sorted descending (the rest: distances ascending)
DESCENDING_METRICS = frozenset({"ip", "cosine"})
METRICS = frozenset({"l2"}) | DESCENDING_METRICS


def ranks_descending(metric: str) -> bool:
    """Whether answers of an index of this metric are sorted descending (similarities)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    return metric in DESCENDING_METRICS


def merge_topk(D_list: Sequence[np.ndarray], I_list: Sequence[np.ndarray],
               k: int, *, descending: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """k smallest distances per row across parts (`descending`: k largest similarities):
    D float32 (nq, k), I int64 (nq, k).

    Parts may hold fewer than k columns; missing columns come back as (inf, -1), or
    (-inf, -1) when descending. Equal values are ordered by id either way.
    """
    if descending:      # negation is exact in float32: the same order, ties by id
        D, I = merge_topk([-np.asarray(d, np.float32) for d in D_list], I_list, k)
        return -D, I
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
    # D is sorted along each row: only the entries inside runs of equal D move; sort
    # them at once by (run, id), run numbers increasing over the flattened rows
    sub_d = D[rows]
    same = np.zeros(sub_d.shape, dtype=bool)   # equal to a neighbour in its row
    same[:, 1:] = sub_d[:, 1:] == sub_d[:, :-1]
    run = np.cumsum(~same.ravel())
    same[:, :-1] |= same[:, 1:]
    tied = np.flatnonzero(same.ravel())
    sub_i = I[rows].ravel()
    sub_i[tied] = sub_i[tied[np.lexsort((sub_i[tied], run[tied]))]]
    I = I.copy()
    I[rows] = sub_i.reshape(sub_d.shape)
    return D, I

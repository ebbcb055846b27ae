"""Recall measures and exact ground truth (pure numpy/faiss).

Two recall measures are in use and they are not the same number:

* ``recall_at_k`` -- R@k of the Faiss and VLQ-ADC papers: the fraction of
  queries whose true nearest neighbour ``gt[:, 0]`` is among the first k
  results.
* ``k_recall_at_k`` -- big-ann-benchmarks' k-recall@k: the mean over queries
  of ``|I[:, :k] & gt[:, :k]| / k`` (set intersection; ties in the ground-truth
  distances are not given extra credit).

``exact_ground_truth`` computes exact squared-L2 neighbours with faiss, one
batch of base vectors at a time, merging into a running top-k (``merge_topk``:
equal distances in id order) so memory stays bounded by ``batch_size`` base rows
plus two (nq, k) result arrays.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

from indexer.merge import merge_topk
from indexer.refine import check_metric, larger_is_better, normalize_rows

__all__ = [
    "recall_at_k",
    "k_recall_at_k",
    "evaluate",
    "exact_ground_truth",
]

logger = logging.getLogger(__name__)

#: The ks reported by :func:`evaluate` as R@k.
EVAL_KS = (1, 10, 100)


def _check_results(I: np.ndarray, gt: np.ndarray, k: int, gt_columns: int) -> None:
    """Raise ValueError unless I and gt are 2-D with equal rows and enough columns."""
    if I.ndim != 2 or gt.ndim != 2:
        raise ValueError(
            f"result ids and ground truth must be 2-D, got I{I.shape} and gt{gt.shape}"
        )
    if I.shape[0] != gt.shape[0]:
        raise ValueError(
            f"result ids and ground truth must have the same number of queries, "
            f"got I{I.shape} and gt{gt.shape}"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got k={k}")
    if k > I.shape[1]:
        raise ValueError(f"k={k} exceeds the result columns of I{I.shape}")
    if gt_columns > gt.shape[1]:
        raise ValueError(f"k={k} needs {gt_columns} ground-truth columns, gt is {gt.shape}")


def recall_at_k(I: np.ndarray, gt: np.ndarray, k: int) -> float:
    """R@k: fraction of queries whose true nearest neighbour gt[:, 0] is in I[:, :k]."""
    I = np.asarray(I)
    gt = np.asarray(gt)
    _check_results(I, gt, k, gt_columns=1)
    nq = I.shape[0]
    if nq == 0:
        raise ValueError(f"no queries: I{I.shape}")
    hits = (I[:, :k] == gt[:, :1]).any(axis=1)
    return float(hits.sum()) / nq


def k_recall_at_k(I: np.ndarray, gt: np.ndarray, k: int = 10) -> float:
    """big-ann k-recall@k: mean over queries of |I[:, :k] & gt[:, :k]| / k.

    Result ids are treated as a set per query: a repeated id counts once and
    the ``-1`` padding of missing results never matches.
    """
    I = np.asarray(I)
    gt = np.asarray(gt)
    _check_results(I, gt, k, gt_columns=k)
    nq = I.shape[0]
    if nq == 0:
        raise ValueError(f"no queries: I{I.shape}")
    found = 0
    chunk = max(1, 4_000_000 // (k * k))  # bound the (chunk, k, k) comparison
    for i0 in range(0, nq, chunk):
        ids = np.sort(I[i0 : i0 + chunk, :k], axis=1)
        first = np.ones(ids.shape, dtype=bool)
        first[:, 1:] = ids[:, 1:] != ids[:, :-1]
        truth = gt[i0 : i0 + chunk, :k]
        match = (ids[:, :, None] == truth[:, None, :]).any(axis=2) & first & (ids >= 0)
        found += int(match.sum())
    return found / (nq * k)


def evaluate(I: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Every recall figure the benchmark reports.

    Returns ``{"recall@1", "recall@10", "recall@100", "10recall@10"}``. When I has
    fewer than k columns, recall@k is computed over all columns that are there
    (so a k=50 search reports recall@100 == recall@50); likewise 10recall@10
    uses ``min(10, I columns, gt columns)`` when either has fewer than 10.
    """
    I = np.asarray(I)
    gt = np.asarray(gt)
    _check_results(I, gt, 1, gt_columns=1)
    out = {f"recall@{k}": recall_at_k(I, gt, min(k, I.shape[1])) for k in EVAL_KS}
    out["10recall@10"] = k_recall_at_k(I, gt, min(10, I.shape[1], gt.shape[1]))
    return out


def _as_float32_rows(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"{name} must be an integer or float array, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


def exact_ground_truth(
    xb: np.ndarray, xq: np.ndarray, k: int, batch_size: int = 131_072, metric: str = "l2"
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every query in xb: by squared L2, or for
    metric="ip"/"cosine" the k largest inner products (of the normalised rows for cosine;
    D holds the similarities, largest first).

    xb may be a np.memmap of uint8/int8/float rows: it is sliced ``batch_size``
    rows at a time and only that slice is converted to float32. Returns
    ``(D float32 (nq, k), I int64 (nq, k))``, nearest first, equal distances in id
    order.
    """
    if np.ndim(xb) != 2 or np.ndim(xq) != 2:
        raise ValueError(f"xb and xq must be 2-D, got xb{np.shape(xb)} and xq{np.shape(xq)}")
    nb, d = xb.shape
    if xq.shape[1] != d:
        raise ValueError(f"dimension mismatch: xb{xb.shape} and xq{xq.shape}")
    if not 1 <= k <= nb:
        raise ValueError(f"k must be in [1, {nb}] for xb{xb.shape}, got k={k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got batch_size={batch_size}")
    check_metric(metric)
    queries = _as_float32_rows(xq, "xq")
    if metric == "cosine":
        queries = normalize_rows(queries, "xq")
    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    sign = np.float32(-1.0 if larger_is_better(metric) else 1.0)   # merge_topk keeps the smallest
    nq = queries.shape[0]
    D = np.empty((nq, 0), dtype=np.float32)
    I = np.empty((nq, 0), dtype=np.int64)
    for i0 in range(0, nb, batch_size):
        i1 = min(nb, i0 + batch_size)
        block = _as_float32_rows(xb[i0:i1], "xb")
        if metric == "cosine":
            block = normalize_rows(block, "xb", i0)
        Db, Ib = faiss.knn(queries, block, min(k, i1 - i0), metric=faiss_metric)
        D, I = merge_topk([D, sign * Db], [I, Ib.astype(np.int64) + i0], k)
        logger.debug("ground truth: merged base rows %d..%d of %d", i0, i1, nb)
    return np.ascontiguousarray(sign * D, dtype=np.float32), np.ascontiguousarray(I, dtype=np.int64)

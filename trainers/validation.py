"""Held-out validation of a trained model: one rule for the build's recorded figure and for
GSL's choice of round.

`hold_out` sets `fraction` of a sample's rows aside as queries (at least 1, at most
`MAX_ROWS`, chosen by a seeded permutation, both parts kept in row order) with each
query's exact nearest training row. `validation_recall` adds the training rows to an
empty index of the model and measures R@1/R@10 of the held-out queries at the index's
default search setting (`VLQIndex.search`: nprobe 32, nlines 256, capped by the index's
nlist and nedge): a measure of the model at the setting a user gets, not of a tuned index.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from indexer import VLQIndex
from indexer.evaluation import exact_ground_truth, recall_at_k

MAX_ROWS = 1000
NPROBE = 32
NLINES = 256


@dataclass(frozen=True, eq=False)
class HeldOut:
    """A sample split into training rows and held-out queries (rows of the sample)."""

    train: np.ndarray       # (n - nq, d), the sample's dtype
    queries: np.ndarray     # (nq, d)
    gt: np.ndarray          # (nq, 1) int64: position of each query's nearest training row


def split_rows(n: int, fraction: float, seed: int,
               most: int = MAX_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of an n-row sample, each ascending: int(n * fraction)
    rows held out, at least 1 and at most `most` (none when n <= 1)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got fraction={fraction}")
    n_val = min(most, max(1, int(n * fraction))) if n > 1 else 0
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def hold_out(x: np.ndarray, fraction: float, seed: int, metric: str = "l2") -> HeldOut:
    """Split the rows of x (`split_rows`) and find each held-out row's exact nearest
    training row by `metric`."""
    train_rows, val_rows = split_rows(x.shape[0], fraction, seed)
    train, queries = x[train_rows], x[val_rows]
    if val_rows.size == 0:
        return HeldOut(train, queries, np.empty((0, 1), np.int64))
    _, gt = exact_ground_truth(train, queries, 1, metric=metric)
    return HeldOut(train, queries, gt)


def validation_recall(index: VLQIndex, held: HeldOut, k: int = 10) -> dict:
    """R@1/R@k of the held-out queries against the training rows, added to `index` (a
    trained, empty index of the model). Empty when nothing was held out."""
    if held.queries.shape[0] == 0:
        return {}
    index.add(held.train)
    nprobe = min(index.nlist, NPROBE)
    nlines = min(nprobe * index.nedge, NLINES)
    _, ids = index.search(held.queries, k=k, nprobe=nprobe, nlines=nlines)
    return {"queries": int(held.queries.shape[0]), "nprobe": nprobe,
            "recall@1": recall_at_k(ids, held.gt, 1), "recall@10": recall_at_k(ids, held.gt, k)}

"""What a live index adds to a search (SPEC 7): the row set a query may return (live rows,
and those a filter keeps) and the exhaustive scan of a small row set.

The scans take the row set as a bitset (indexer.rowsets) and skip the rows outside it
before they take a place among the candidates. A filter that keeps a fraction s of the rows
widens the probe by 1/s (`filtered_plan`), so that the scan meets about as many matching
rows as an unfiltered scan meets rows; when that widened scan would meet more rows than
match, `exhaustive_search` scores every matching row instead (exact ADC over their decoded
vectors), and so does a query left with fewer than k hits: a selective filter still
returns k hits when k rows match.
"""
from __future__ import annotations

from collections import OrderedDict

import faiss
import numpy as np

from indexer.filters import check_attributes, matching_rows
from indexer.rowsets import bitset_of, rows_of

__all__ = ["RowSets", "check_new_attributes", "exhaustive_search", "filtered_plan", "remove_ids",
           "search_plan", "short_rows", "EXHAUSTIVE_CHUNK"]

EXHAUSTIVE_CHUNK = 32768   # rows decoded at a time by exhaustive_search
FILTER_CACHE = 8           # row sets of the last filters kept per index


class RowSets:
    """The allowed-row bitsets of an index's lists, by filter clause, cached until the rows
    change (`invalidate`)."""

    def __init__(self):
        self._cache: OrderedDict[str, tuple[np.ndarray, int]] = OrderedDict()

    def invalidate(self) -> None:
        self._cache.clear()

    def allowed(self, lists, where: str | None) -> tuple[np.ndarray | None, int]:
        """(bitset or None for every row, number of allowed rows) of the compacted lists."""
        if where is None:
            return lists.live, len(lists)
        hit = self._cache.get(where)
        if hit is None:
            mask = matching_rows(lists.attributes, where)
            if lists.live is not None:
                mask &= rows_of(lists.live, lists.nrows)
            hit = (bitset_of(mask), int(mask.sum()))
            self._cache[where] = hit
            while len(self._cache) > FILTER_CACHE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(where)
        return hit


def exhaustive_search(quantizer, lists, q: np.ndarray, allowed: np.ndarray | None,
                      k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best allowed rows of encoded queries q by exact ADC over every allowed row
    (decoded EXHAUSTIVE_CHUNK at a time, faiss' exact k-NN over them): (distances,
    positions) ascending as the scans give them (l2: squared distance; ip: -<q, x_hat>),
    padded with (inf, -1)."""
    nq = q.shape[0]
    rows = (np.arange(lists.nrows) if allowed is None
            else np.flatnonzero(rows_of(allowed, lists.nrows)))
    best_d = np.full((nq, k), np.inf, dtype=np.float32)
    best_p = np.full((nq, k), -1, dtype=np.int64)
    ip = quantizer.metric == "ip"
    q = np.ascontiguousarray(q, dtype=np.float32)
    for s in range(0, rows.shape[0], EXHAUSTIVE_CHUNK):
        chunk = rows[s:s + EXHAUSTIVE_CHUNK]
        x_hat = quantizer.decode(lists.list_ids_at(chunk), lists.lambda_idx[chunk],
                                 lists.codes_at(chunk))
        kk = min(k, chunk.shape[0])
        dist, pos = faiss.knn(q, np.ascontiguousarray(x_hat, dtype=np.float32), kk,
                              metric=faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2)
        if ip:
            dist = -dist
        all_d = np.concatenate([best_d, dist], axis=1)
        all_p = np.concatenate([best_p, np.where(pos >= 0, chunk[np.maximum(pos, 0)], -1)], axis=1)
        keep = np.argpartition(all_d, k - 1, axis=1)[:, :k]
        best_d = np.take_along_axis(all_d, keep, axis=1)
        best_p = np.take_along_axis(all_p, keep, axis=1)
    order = np.argsort(best_d, axis=1, kind="stable")
    best_d = np.take_along_axis(best_d, order, axis=1)
    best_p = np.take_along_axis(best_p, order, axis=1)
    best_p[~np.isfinite(best_d)] = -1
    best_d[best_p < 0] = np.inf
    return best_d, best_p


def filtered_plan(nlist: int, nedge: int, ntotal: int, n_allowed: int, nprobe: int,
                  nlines: int) -> tuple[int, int, bool]:
    """(nprobe, nlines, exhaustive) of a search whose filter keeps n_allowed of ntotal rows:
    the probe widened by 1/selectivity (capped at every list), or, when that widened scan
    would meet more rows than match, the exhaustive scan of the matching rows."""
    if n_allowed == 0:
        return nprobe, nlines, True
    widen = max(1, ntotal) / n_allowed
    wide_probe = int(min(nlist, np.ceil(nprobe * widen)))
    wide_lines = int(min(wide_probe * nedge, np.ceil(nlines * widen)))
    scanned = ntotal * wide_lines / (nlist * nedge)      # rows the widened scan meets
    return wide_probe, wide_lines, n_allowed <= scanned


def short_rows(labels: np.ndarray, k: int, n_allowed: int) -> np.ndarray:
    """Queries that returned fewer hits than they can have (min(k, allowed rows))."""
    return np.flatnonzero((labels >= 0).sum(axis=1) < min(k, n_allowed))


def check_new_attributes(lists, attributes, n: int, what: str):
    """The attributes of n new rows (check_attributes), consistent with the rows held:
    an index has attribute columns from its first rows on, or never."""
    had = lists.attributes is not None or any(part[6] is not None for part in lists._pending)
    if attributes is None:
        if had and n:
            raise ValueError(f"{what}: this index has attribute columns; give attributes "
                             f"for the new vectors too")
        return None
    table = check_attributes(attributes, n, what)
    if len(lists) and not had:
        raise ValueError(f"{what}: this index holds vectors without attributes; attributes "
                         f"must come with every add, from the first")
    lists.compact()
    held = lists.attributes
    if held is not None and held.schema != table.schema:
        raise ValueError(f"{what}: attribute columns ({held.schema.to_string(show_schema_metadata=False)})"
                         f" expected, got ({table.schema.to_string(show_schema_metadata=False)})")
    return table


def search_plan(index, row_sets: RowSets, where: str | None, nprobe: int, nlines: int) -> tuple:
    """(nprobe, nlines, allowed rows bitset or None, matching rows (None without a
    filter), exhaustive) of a search of `index` (its lists compacted)."""
    allowed, n_allowed = row_sets.allowed(index.lists, where)
    if where is None:
        return nprobe, nlines, allowed, None, False
    nprobe, nlines, exhaustive = filtered_plan(index.nlist, index.nedge, index.ntotal,
                                               n_allowed, nprobe, nlines)
    return nprobe, nlines, allowed, n_allowed, exhaustive


def remove_ids(lists, ids) -> int:
    """Remove the rows of `lists` whose id is in ids (unknown ids ignored); how many."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
        raise ValueError(f"remove_ids: ids must be a 1-D array of integers, got "
                         f"{ids.dtype} of shape {ids.shape}")
    lists.compact()
    if ids.size == 0 or lists.nrows == 0:
        return 0
    return lists.remove_rows(np.flatnonzero(np.isin(lists.ids, ids.astype(np.int64))))

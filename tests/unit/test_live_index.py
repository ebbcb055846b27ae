"""Live indexes in one process (SPEC 7): removed rows and filters inside the scans, the
inner product, against brute force over the decoded live rows."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from indexer import VLQIndex
from tests.conftest import clustered

N, D = 3000, 32


def _attributes(n, seed):
    rng = np.random.default_rng(seed)
    return pa.table({"lang": rng.choice(["en", "fr", "de"], n, p=[0.6, 0.3, 0.1]),
                     "year": rng.integers(2000, 2025, n).astype(np.int32),
                     "tenant": np.arange(n, dtype=np.int64) % 1000})


def _index(pq_bits, metric="l2", backend="auto"):
    x = clustered(N, D, seed=3)
    index = VLQIndex(D, nlist=16, nedge=4, code_bytes=8, nlambda=16, pq_bits=pq_bits,
                     backend=backend, metric=metric)
    index.train(x)
    return index, x


def _brute(index, q, k, keep_ids):
    """Exact ADC top-k by decoding every live row whose id is in keep_ids."""
    lists = index.lists
    lists.compact()
    rows = np.flatnonzero(np.isin(lists.ids, keep_ids))
    if lists.live is not None:
        from indexer.rowsets import rows_of
        rows = rows[rows_of(lists.live, lists.nrows)[rows]]
    x_hat = index.quantizer.decode(lists.list_ids_at(rows), lists.lambda_idx[rows],
                                   lists.codes_at(rows)).astype(np.float64)
    if index.metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    qe = index.encoder.encode(q).astype(np.float64)
    if index.quantizer.metric == "ip":
        dist = -(qe @ x_hat.T)
    else:
        dist = ((qe[:, None, :] - x_hat[None]) ** 2).sum(-1)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, 1), lists.ids[rows][order]


def _exhaustive(index, q, k, **kw):
    return index.search(q, k=k, nprobe=index.nlist, nlines=index.nlist * index.nedge,
                        rerank=index.ntotal, **kw)


def _assert_same_topk(D, I, bd, bi):
    """Same distances rank by rank; the same ids up to ties (rows of equal distance, e.g.
    duplicated vectors, may come in another order or swap across the k-th place)."""
    np.testing.assert_allclose(D, bd, rtol=1e-4, atol=1e-3 * max(1.0, float(np.abs(bd).max())))
    for q in range(I.shape[0]):
        differ = I[q] != bi[q]
        tied = np.isclose(D[q][differ][:, None], bd[q][None, :], rtol=1e-4).any(axis=1)
        assert tied.all(), (I[q], bi[q])


@pytest.mark.parametrize("pq_bits,backend", [(4, "auto"), (8, "auto"), (8, "torch")])
def test_removed_ids_never_return_and_the_rest_equals_brute_force(pq_bits, backend):
    index, x = _index(pq_bits, backend=backend)
    index.add(x)
    rng = np.random.default_rng(1)
    gone = rng.choice(N, 500, replace=False)
    assert index.remove_ids(np.concatenate([gone, [10 ** 9, -5]])) == 500   # unknown ignored
    assert index.remove_ids(gone[:10]) == 0                                  # already gone
    assert index.ntotal == N - 500
    q = x[:20] + 0.01
    D, I = _exhaustive(index, q, 10)
    assert not np.isin(I, gone).any()
    bd, bi = _brute(index, q, 10, np.setdiff1d(np.arange(N), gone))
    _assert_same_topk(D, I, bd, bi)
    D2, I2 = index.search(q, k=10, nprobe=4, nlines=8)          # a partial search too
    assert not np.isin(I2, gone).any()


def test_many_removals_compact_the_arrays_and_readding_works():
    index, x = _index(4)
    index.add(x)
    index.remove_ids(np.arange(0, N, 2))           # half: dropped from the arrays
    assert index.lists.nrows == N // 2 and index.lists.live is None
    index.add(x[:5], ids=np.array([0, 2, 4, 6, 8]))  # removed ids may come back
    D, I = _exhaustive(index, x[:1], 1)
    assert I[0, 0] == 0
    with pytest.raises(ValueError, match="ids"):
        index.remove_ids(np.array([0.5]))


@pytest.mark.parametrize("pq_bits,metric", [(4, "l2"), (8, "l2"), (4, "ip"), (8, "cosine")])
def test_filters_equal_brute_force_over_the_matching_rows(pq_bits, metric):
    index, x = _index(pq_bits, metric)
    attrs = _attributes(N, 0)
    index.add(x, attributes=attrs)
    index.remove_ids(np.arange(100))
    q = x[200:215] + 0.01
    where = "lang = 'en' AND year >= 2010"
    keep = np.flatnonzero(((attrs["lang"].to_numpy(zero_copy_only=False) == "en")
                           & (attrs["year"].to_numpy() >= 2010)))
    D, I = _exhaustive(index, q, 10, filter=where)
    bd, bi = _brute(index, q, 10, keep)
    _assert_same_topk(D if metric == "l2" else -D, I, bd, bi)
    assert np.isin(I, keep).all() and not np.isin(I, np.arange(100)).any()


def test_a_selective_filter_still_returns_k_hits():
    index, x = _index(4)
    attrs = _attributes(N, 1)
    index.add(x, attributes=attrs)
    # 3 tenants of 1000: 0.3% of rows (9 rows), and a narrow probe
    D, I = index.search(x[:5], k=5, nprobe=1, nlines=1, filter="tenant IN (7, 500, 999)")
    assert (I >= 0).all() and np.isin(I % 1000, [7, 500, 999]).all()
    bd, bi = _brute(index, x[:5], 5, np.flatnonzero(np.isin(np.arange(N) % 1000, [7, 500, 999])))
    _assert_same_topk(D, I, bd, bi)
    # 5% of the rows and a probe that covers few of them: short queries scan them all
    D, I = index.search(x[:30], k=20, nprobe=1, nlines=2, filter="tenant < 50")
    assert (I >= 0).all() and (I % 1000 < 50).all()
    D, I = index.search(x[:2], k=20, nprobe=2, nlines=4, filter="tenant < 0")                 # nothing matches
    assert (I == -1).all() and np.isinf(D).all()


def test_filter_and_attribute_errors_are_clear():
    index, x = _index(4)
    index.add(x[:100], attributes=_attributes(100, 0))
    with pytest.raises(ValueError, match="not a valid SQL WHERE"):
        index.search(x[:1], nprobe=2, nlines=4, filter="lang = ")
    with pytest.raises(ValueError, match="colour"):
        index.search(x[:1], nprobe=2, nlines=4, filter="colour = 'red'")
    with pytest.raises(ValueError, match="50 rows for 100 vectors"):
        index.add(x[:100], ids=np.arange(100, 200), attributes=_attributes(50, 0))
    with pytest.raises(ValueError, match="give attributes"):
        index.add(x[:10], ids=np.arange(500, 510))
    with pytest.raises(ValueError, match="attribute columns"):
        index.add(x[:10], ids=np.arange(500, 510), attributes=pa.table({"other": np.arange(10)}))
    plain, _ = _index(4)
    plain.add(x[:10])
    with pytest.raises(ValueError, match="no attribute columns"):
        plain.search(x[:1], nprobe=2, nlines=4, filter="year > 1")


@pytest.mark.parametrize("pq_bits,backend", [(4, "auto"), (8, "auto"), (8, "torch")])
def test_inner_product_exhaustive_search_equals_brute_force(pq_bits, backend):
    index, x = _index(pq_bits, metric="ip", backend=backend)
    scale = np.random.default_rng(2).uniform(0.5, 2.0, N).astype(np.float32)
    index.add(x * scale[:, None])
    q = x[:20]
    D, I = _exhaustive(index, q, 10)
    bd, bi = _brute(index, q, 10, np.arange(N))
    _assert_same_topk(-D, I, bd, bi)      # D: inner products, largest first
    assert (np.diff(D, axis=1) <= 0).all()


def test_filtered_plan_widens_the_probe_or_scans_the_matching_rows():
    from indexer.live import filtered_plan
    # half the rows match: twice the probe, still a scan
    assert filtered_plan(1024, 32, 10 ** 6, 5 * 10 ** 5, 16, 128) == (32, 256, False)
    # 0.1%: 1000 matching rows, the widened scan would meet far more: scan the matching rows
    assert filtered_plan(1024, 32, 10 ** 6, 1000, 16, 128)[2]
    # capped at every list
    assert filtered_plan(64, 4, 10 ** 6, 10 ** 4, 16, 64)[:2] == (64, 256)
    assert filtered_plan(64, 4, 10 ** 6, 0, 16, 64)[2]


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_a_random_sequence_of_adds_and_removes_equals_brute_force(metric):
    """Appends (with attributes) and removals in random order, a removal burst that
    compacts the arrays, removed ids added again: an exhaustive search, with and without a
    filter, equals brute force over the live rows."""
    rng = np.random.default_rng(7)
    index, x = _index(4, metric)
    live, next_id = set(), 0
    attrs_of = {}
    for step in range(12):
        if step % 3 != 2 or not live:
            n = int(rng.integers(50, 400))
            ids = np.arange(next_id, next_id + n)
            if step == 9:     # bring back removed ids
                ids = np.array(sorted(set(range(next_id)) - live)[:n])
                n = ids.size
            rows = rng.integers(0, N, n)
            tag = rng.integers(0, 10, n).astype(np.int32)
            index.add(x[rows] * (1.0 if metric == "l2" else rng.uniform(0.5, 2, (n, 1))),
                      ids=ids, attributes=pa.table({"tag": tag}))
            live |= set(ids.tolist())
            attrs_of.update(zip(ids.tolist(), tag.tolist()))
            next_id = max(next_id, int(ids.max()) + 1)
        else:
            gone = rng.choice(sorted(live), size=len(live) // (2 if step == 5 else 6),
                              replace=False)
            assert index.remove_ids(gone) == gone.size
            live -= set(gone.tolist())
        assert index.ntotal == len(live)
    q = x[rng.integers(0, N, 12)]
    alive = np.array(sorted(live))
    D, I = _exhaustive(index, q, 10)
    bd, bi = _brute(index, q, 10, alive)
    _assert_same_topk(D if metric == "l2" else -D, I, bd, bi)
    tagged = np.array([i for i in alive if attrs_of[i] < 3])
    D, I = _exhaustive(index, q, 10, filter="tag < 3")
    bd, bi = _brute(index, q, 10, tagged)
    _assert_same_topk(D if metric == "l2" else -D, I, bd, bi)
    assert set(I.ravel().tolist()) <= set(tagged.tolist())

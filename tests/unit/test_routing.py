"""Routing and merging of the serving layer, without Ray."""
import numpy as np
import pytest

from cluster.serving.routing import merge_answers, replica_order, shard_groups
from indexer.merge import merge_topk


def test_shard_groups_cover_every_shard_once():
    for nshards in range(1, 12):
        for ngroups in range(1, 6):
            groups = shard_groups(nshards, ngroups)
            assert [s for g in groups for s in g] == list(range(nshards))
            sizes = [len(g) for g in groups]
            assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="ngroups > 0"):
        shard_groups(3, 0)


def test_replica_order_round_robin_with_failed_replicas_last():
    healthy = [0.0, 0.0, 0.0]
    assert [replica_order(t, healthy, now=10.0) for t in range(4)] == [
        [0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]
    down = [0.0, 12.0, 0.0]                      # replica 1 failed, cooling down until 12
    assert replica_order(0, down, now=10.0) == [0, 2, 1]
    assert replica_order(1, down, now=10.0) == [2, 0, 1]
    assert replica_order(1, down, now=12.5) == [1, 2, 0]   # cooled down: its turn again
    assert replica_order(5, [0.0], now=0.0) == [0]


def test_merge_answers_is_the_topk_of_the_answered_groups_and_lists_the_rest():
    rng = np.random.default_rng(0)
    nq, k = 4, 3
    parts = []
    for g in range(3):
        d = np.sort(rng.random((nq, k), dtype=np.float32), axis=1)
        parts.append((d, rng.integers(0, 100, (nq, k)) + 100 * g))
    groups = [(0, 1), (2,), (3, 4)]
    D, I, missing = merge_answers(groups, [parts[0], None, parts[2]], nq, k)
    D0, I0 = merge_topk([parts[0][0], parts[2][0]], [parts[0][1], parts[2][1]], k)
    np.testing.assert_array_equal(D, D0)
    np.testing.assert_array_equal(I, I0)
    assert missing == (2,)
    D, I, missing = merge_answers(groups, [None, None, None], nq, k)
    assert missing == (0, 1, 2, 3, 4) and D.shape == (nq, k) and np.isinf(D).all()
    assert (I == -1).all() and D.dtype == np.float32 and I.dtype == np.int64


def test_merge_answers_in_descending_order():
    """Similarities (ip, cosine): the largest win; no answer at all is (-inf, -1)."""
    a = (np.array([[0.9, 0.2]], np.float32), np.array([[1, 2]]))
    b = (np.array([[0.5, 0.4]], np.float32), np.array([[3, 4]]))
    D, I, missing = merge_answers([(0,), (1,), (2,)], [a, None, b], 1, 3, descending=True)
    assert I.tolist() == [[1, 3, 4]]
    np.testing.assert_array_equal(D, np.array([[0.9, 0.5, 0.4]], np.float32))
    assert missing == (1,)
    D, I, _ = merge_answers([(0,)], [None], 2, 3, descending=True)
    assert (D == -np.inf).all() and (I == -1).all()

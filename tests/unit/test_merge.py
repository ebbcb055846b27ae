import numpy as np
import pytest

from indexer.merge import merge_topk


def test_merge_equals_topk_of_the_union():
    rng = np.random.default_rng(0)
    nq, k = 7, 5
    parts_d, parts_i, all_d, all_i = [], [], [], []
    for p in range(3):
        d = rng.random((nq, 20), dtype=np.float32)
        ids = rng.permutation(1000)[:20] + 1000 * p
        i = np.tile(ids, (nq, 1))
        order = np.argsort(d, axis=1)[:, :k]
        parts_d.append(np.take_along_axis(d, order, 1))
        parts_i.append(np.take_along_axis(i, order, 1))
        all_d.append(d)
        all_i.append(i)
    D, I = merge_topk(parts_d, parts_i, k)
    full_d, full_i = np.hstack(all_d), np.hstack(all_i)
    best = np.argsort(full_d, axis=1)[:, :k]
    np.testing.assert_array_equal(I, np.take_along_axis(full_i, best, 1))
    np.testing.assert_array_equal(D, np.take_along_axis(full_d, best, 1))
    assert D.dtype == np.float32 and I.dtype == np.int64


def test_empty_slots_sort_last_and_pad():
    D1 = np.array([[1.0, np.inf]], np.float32)
    I1 = np.array([[4, -1]])
    D2 = np.array([[0.5]], np.float32)
    I2 = np.array([[9]])
    D, I = merge_topk([D1, D2], [I1, I2], 4)
    assert I.tolist() == [[9, 4, -1, -1]]
    assert D[0, :2].tolist() == [0.5, 1.0] and np.isinf(D[0, 2:]).all()


def test_single_part_is_returned_unchanged():
    D = np.array([[0.1, 0.2, 0.2]], np.float32)
    I = np.array([[3, 1, 2]])
    out_d, out_i = merge_topk([D], [I], 3)
    assert out_i.tolist() == [[3, 1, 2]]


@pytest.mark.parametrize("bad", [dict(k=0), dict(shapes=((2, 3), (3, 3)))])
def test_bad_arguments(bad):
    shapes = bad.get("shapes", ((2, 3), (2, 3)))
    Ds = [np.zeros(s, np.float32) for s in shapes]
    Is = [np.zeros(s, np.int64) for s in shapes]
    with pytest.raises(ValueError):
        merge_topk(Ds, Is, bad.get("k", 3))


def test_ties_are_ordered_by_id_whatever_the_split():
    D = np.array([[1.0, 2.0, 2.0, 3.0]], np.float32)
    a = merge_topk([D[:, [0, 2]], D[:, [1, 3]]], [np.array([[5, 9]]), np.array([[4, 7]])], 4)
    b = merge_topk([D[:, [1, 3]], D[:, [0, 2]]], [np.array([[4, 7]]), np.array([[5, 9]])], 4)
    assert a[1].tolist() == b[1].tolist() == [[5, 4, 9, 7]]


def test_order_ties_by_id_leaves_rows_without_ties():
    from indexer.merge import order_ties_by_id

    D = np.array([[1.0, 2.0, 2.0], [1.0, 2.0, 3.0]], np.float32)
    I = np.array([[3, 8, 6], [9, 1, 2]])
    out_d, out_i = order_ties_by_id(D, I)
    assert out_i.tolist() == [[3, 6, 8], [9, 1, 2]]
    same = I[1:]
    assert order_ties_by_id(D[1:], same)[1] is same


def test_descending_merge_is_the_topk_largest_of_the_union_with_ties_by_id():
    """ip/cosine answers are similarities sorted descending: the merge keeps the largest,
    equal values in id order whatever the split, and pads with (-inf, -1)."""
    from indexer.merge import ranks_descending

    rng = np.random.default_rng(1)
    nq, k = 6, 5
    sims = rng.integers(0, 8, (nq, 40)).astype(np.float32)     # many ties
    ids = np.tile(rng.permutation(1000)[:40], (nq, 1)).astype(np.int64)
    parts_d, parts_i = [], []
    for cols in (slice(0, 13), slice(13, 40)):
        d, i = sims[:, cols], ids[:, cols]
        order = np.lexsort((i, -d), axis=1)[:, :k]                  # each part: its best k
        parts_d.append(np.take_along_axis(d, order, 1))
        parts_i.append(np.take_along_axis(i, order, 1))
    D, I = merge_topk(parts_d, parts_i, k, descending=True)
    best = np.lexsort((ids, -sims), axis=1)[:, :k]
    np.testing.assert_array_equal(I, np.take_along_axis(ids, best, 1))
    np.testing.assert_array_equal(D, np.take_along_axis(sims, best, 1))
    assert (np.diff(D, axis=1) <= 0).all()
    swapped = merge_topk(parts_d[::-1], parts_i[::-1], k, descending=True)
    np.testing.assert_array_equal(swapped[1], I)
    # the ascending merge of the same parts would keep the smallest: a different answer
    assert not np.array_equal(merge_topk(parts_d, parts_i, k)[1], I)
    # empty slots sort last and padding is (-inf, -1)
    D, I = merge_topk([np.array([[0.5, 7.0]], np.float32)], [np.array([[3, -1]])], 3,
                      descending=True)
    assert I.tolist() == [[3, -1, -1]] and D[0, 0] == 0.5 and (D[0, 1:] == -np.inf).all()
    assert [ranks_descending(m) for m in ("l2", "ip", "cosine")] == [False, True, True]
    with pytest.raises(ValueError, match="metric must be one of"):
        ranks_descending("hamming")


def test_order_ties_by_id_equals_sorting_each_row_by_distance_then_id():
    from indexer.merge import order_ties_by_id
    rng = np.random.default_rng(5)
    for _ in range(300):
        nq, k = int(rng.integers(1, 6)), int(rng.integers(2, 12))
        D = rng.integers(0, 4, (nq, k)).astype(np.float32)
        D[rng.random((nq, k)) < 0.15] = np.inf
        D = np.sort(D, axis=1)
        I = rng.integers(-1, 30, (nq, k))
        out_d, out_i = order_ties_by_id(D, I)
        for row in range(nq):
            expect = sorted(zip(D[row].tolist(), I[row].tolist()))
            assert list(zip(out_d[row].tolist(), out_i[row].tolist())) == expect


def test_rows_equal_but_near_ties_tells_a_reordered_tie_from_another_neighbour():
    from tests.conftest import rows_equal_but_near_ties

    D = np.array([[1.0, 2.0, 2.0000001, 3.0], [1.0, 2.0, 3.0, 4.0]], np.float32)
    I = np.array([[5, 6, 7, 8], [5, 6, 7, 8]])
    swapped = np.array([[5, 7, 6, 8], [5, 6, 7, 9]])      # a tie reordered; the last slot
    assert rows_equal_but_near_ties(D, I, D, swapped).all()
    other = np.array([[9, 6, 7, 8], [5, 7, 6, 8]])         # a different nearest; no tie
    assert not rows_equal_but_near_ties(D, I, D, other).any()
    assert not rows_equal_but_near_ties(D, I, D * 1.01, swapped).any()   # other distances

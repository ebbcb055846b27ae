import numpy as np
import pytest

from indexer.evaluation import evaluate, exact_ground_truth, k_recall_at_k, recall_at_k


def _brute_force(xb, xq):
    xb = xb.astype(np.float64)
    xq = xq.astype(np.float64)
    return ((xq[:, None, :] - xb[None, :, :]) ** 2).sum(axis=2)


def test_recall_at_k_hand_computed():
    gt = np.array([[5, 1], [7, 2], [9, 3], [4, 0]])
    I = np.array([[5, 0, 1], [1, 7, 2], [0, 1, 2], [4, 4, 4]])
    assert recall_at_k(I, gt, 1) == 0.5  # queries 0 and 3
    assert recall_at_k(I, gt, 2) == 0.75  # + query 1
    assert recall_at_k(I, gt, 3) == 0.75  # query 2 never finds 9


def test_k_recall_at_k_hand_computed():
    gt = np.array([[1, 2, 3], [4, 5, 6]])
    I = np.array([[3, 9, 1], [6, 6, -1]])
    # query 0: {3, 1} of {1, 2, 3} -> 2/3; query 1: {6} (repeat counts once, -1 never) -> 1/3
    assert k_recall_at_k(I, gt, 3) == pytest.approx(0.5)
    assert k_recall_at_k(I, gt, 1) == pytest.approx(0.0)  # 3 not in {1}, 6 not in {4}


def test_recalls_match_explicit_count():
    rng = np.random.default_rng(0)
    nq, n = 300, 40
    gt = np.stack([rng.permutation(n)[:20] for _ in range(nq)])
    I = np.stack([rng.permutation(n)[:25] for _ in range(nq)])
    I[rng.random(I.shape) < 0.05] = -1
    for k in (1, 5, 10, 20):
        hits = sum(1 for q in range(nq) if gt[q, 0] in list(I[q, :k]))
        assert recall_at_k(I, gt, k) == hits / nq
        common = sum(len(set(I[q, :k].tolist()) & set(gt[q, :k].tolist())) for q in range(nq))
        assert k_recall_at_k(I, gt, k) == pytest.approx(common / (nq * k))


def test_evaluate_keys_and_narrow_results():
    rng = np.random.default_rng(1)
    gt = np.stack([rng.permutation(1000)[:100] for _ in range(50)])
    out = evaluate(gt.copy(), gt)
    assert set(out) == {"recall@1", "recall@10", "recall@100", "10recall@10"}
    assert all(v == 1.0 for v in out.values())
    narrow = gt[:, 5:25].copy()  # 20 columns: recall@100 is computed over all 20
    narrow[::2, 19] = gt[::2, 0]  # half the queries find their NN in column 20
    out = evaluate(narrow, gt)
    assert out["recall@10"] == 0.0
    assert out["recall@100"] == recall_at_k(narrow, gt, 20) == 0.5
    assert out["10recall@10"] == pytest.approx(0.5)  # gt[:, 5:10] of gt[:, :10]


@pytest.mark.parametrize(
    "I_shape, gt_shape, k, match",
    [((5, 10), (4, 10), 1, r"\(5, 10\).*\(4, 10\)"),
     ((5, 10), (5, 10), 11, r"k=11.*\(5, 10\)"),
     ((5, 10), (5, 3), 5, r"\(5, 3\)")],
)
def test_shape_errors_name_the_shapes(I_shape, gt_shape, k, match):
    with pytest.raises(ValueError, match=match):
        k_recall_at_k(np.zeros(I_shape, dtype=np.int64), np.zeros(gt_shape, dtype=np.int64), k)
    if gt_shape[0] != I_shape[0] or k > I_shape[1]:
        with pytest.raises(ValueError, match=match):
            recall_at_k(np.zeros(I_shape, dtype=np.int64), np.zeros(gt_shape, dtype=np.int64), k)


@pytest.mark.parametrize("batch_size", [7, 64, 100, 1000])
def test_exact_ground_truth_equals_brute_force(batch_size):
    rng = np.random.default_rng(2)
    xb = rng.standard_normal((333, 16)).astype(np.float32)
    xq = rng.standard_normal((40, 16)).astype(np.float32)
    D, I = exact_ground_truth(xb, xq, k=20, batch_size=batch_size)
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == I.shape == (40, 20)
    dist = _brute_force(xb, xq)
    expected = np.argsort(dist, axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(I, expected)
    np.testing.assert_allclose(D, np.take_along_axis(dist, expected, axis=1), rtol=1e-4, atol=1e-4)


def test_exact_ground_truth_uint8_and_k_larger_than_batch():
    rng = np.random.default_rng(3)
    xb = rng.integers(0, 256, size=(250, 8), dtype=np.uint8)
    xq = rng.integers(0, 256, size=(30, 8), dtype=np.uint8)
    D, I = exact_ground_truth(xb, xq, k=50, batch_size=16)  # k spans several batches
    dist = _brute_force(xb, xq)
    # integer distances tie, so check distances and that every id has its distance
    np.testing.assert_array_equal(D, np.sort(dist, axis=1)[:, :50])
    np.testing.assert_array_equal(np.take_along_axis(dist, I, axis=1), D)
    assert all(len(set(row)) == 50 for row in I.tolist())


def test_exact_ground_truth_errors():
    xb = np.zeros((10, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"\(10, 4\).*\(3, 5\)"):
        exact_ground_truth(xb, np.zeros((3, 5), dtype=np.float32), k=1)
    with pytest.raises(ValueError, match="k=11"):
        exact_ground_truth(xb, np.zeros((3, 4), dtype=np.float32), k=11)

"""Refinement by stored vectors (issue 15, point 5) and the metric outside the kernels:
exact re-ranking against brute force, the vector stores, their bytes, errors, persistence."""
import json

import numpy as np
import pytest

from indexer import VLQIndex
from indexer.refine import refine
from shards.shape import IndexShape
from shards.vector_store import decode_rows, encode_sq8, sq8_params, store_of

D_IN, NLIST, NEDGE = 32, 16, 4
EVERY_LIST = {"nprobe": NLIST, "nlines": NLIST * NEDGE}


def exact(q, x, metric):
    """Brute-force distances (float64), and the sign that makes smaller better."""
    q, x = q.astype(np.float64), x.astype(np.float64)
    if metric == "l2":
        return ((q[:, None, :] - x[None]) ** 2).sum(-1), 1.0
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return q @ x.T, -1.0


_TRAINED = {}


def make_index(data, metric="l2", store="float32", pq_bits=8, n=3000, base=None):
    """An index of the first n base rows (or `base`); one training per metric kind, code
    width and sample (l2 and ip train alike)."""
    key = (metric == "cosine", pq_bits, id(data["learn"]))
    if key not in _TRAINED:
        model = VLQIndex(D_IN, NLIST, NEDGE, code_bytes=8, nlambda=32, pq_bits=pq_bits,
                         metric=metric)
        model.train(data["learn"])
        _TRAINED[key] = (model, data["learn"])   # the sample kept alive: its id stays unique
    model = _TRAINED[key][0]
    index = VLQIndex.from_trained(model.encoder, model.quantizer, metric=metric,
                                  stored_vectors=store)
    index.add(data["base"][:n] if base is None else base)
    return index


def search_all(index, q, **kwargs):
    return index.search(q, **kwargs)


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
@pytest.mark.parametrize("pq_bits", [8, 4])
def test_refine_is_brute_force_among_the_scanned_candidates(small_data, metric, pq_bits):
    index = make_index(small_data, metric, pq_bits=pq_bits)
    q, k, r = small_data["query"][:25], 5, 40
    _, cand = search_all(index, q, k=r, rerank=r, **EVERY_LIST)
    D, I = index.search(q, k=k, refine=r, rerank=r, **EVERY_LIST)
    base = small_data["base"][:3000]
    for row in range(q.shape[0]):
        dist, sign = exact(q[row:row + 1], base[cand[row]], metric)
        best = np.argsort(sign * dist[0], kind="stable")[:k]
        np.testing.assert_array_equal(np.sort(I[row]), np.sort(cand[row][best]))
        np.testing.assert_allclose(D[row], dist[0][best], rtol=1e-4, atol=1e-4)
    assert (np.diff(D, axis=1) * (1 if metric == "l2" else -1) >= 0).all()


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_refine_over_every_vector_is_brute_force(small_data, metric):
    index = make_index(small_data, metric, n=2000)
    q, k = small_data["query"][:20], 10
    D, I = search_all(index, q, k=k, refine=index.ntotal, **EVERY_LIST)
    dist, sign = exact(q, small_data["base"][:2000], metric)
    ref = np.argsort(sign * dist, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(I, ref)
    np.testing.assert_allclose(D, np.take_along_axis(dist, ref, axis=1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("store", ["uint8", "float16"])
def test_narrow_stores_rank_by_the_stored_values(small_data, store):
    raw = small_data["base"][:2000]
    base = np.clip(np.rint(raw * 8 + 128), 0, 255).astype(np.uint8) if store == "uint8" else raw
    learn = small_data["learn"] * 8 + 128 if store == "uint8" else small_data["learn"]
    index = make_index({"learn": learn}, store=store, base=base)
    assert index.lists.vectors.dtype == np.dtype(store)
    q = (small_data["query"][:20] * 8 + 128) if store == "uint8" else small_data["query"][:20]
    D, I = index.search(q, k=10, refine=index.ntotal, **EVERY_LIST)
    dist, _ = exact(q, base.astype(np.dtype(store)).astype(np.float32), "l2")
    ref = np.argsort(dist, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(I, ref)


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_an_sq8_store_ranks_by_its_decoded_rows(small_data, metric):
    """Refining every row = brute force over the decoded sq8 rows (what the store holds)."""
    index = make_index(small_data, metric, store="sq8", n=2000)
    assert index.to_arrays().vectors.shape == (2000, D_IN + 2)
    decoded = decode_rows(encode_sq8(small_data["base"][:2000]), "sq8", D_IN)
    q, k = small_data["query"][:20], 10
    D, I = index.search(q, k=k, refine=index.ntotal, **EVERY_LIST)
    dist, sign = exact(q, decoded, metric)
    ref = np.argsort(sign * dist, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(I, ref)
    np.testing.assert_allclose(D, np.take_along_axis(dist, ref, axis=1), rtol=1e-4, atol=1e-4)
    # and near the exact ranking: the true nearest is among sq8's best 3
    truth, _ = exact(q, small_data["base"][:2000], metric)
    first = np.argsort(sign * truth, axis=1)[:, 0]
    assert (I[:, :3] == first[:, None]).any(axis=1).mean() >= 0.95


def test_sq8_rows_are_within_half_a_step():
    """sq8 rows: dim codes and a float16 step (its sign bit: base 0, for a row without
    negative values); every value within half a step; the step the smallest float16 that
    covers the row."""
    rng = np.random.default_rng(3)
    scale = rng.uniform(1e-3, 1e3, (500, 1))
    x = np.vstack([rng.normal(size=(500, 24)) * scale, np.abs(rng.normal(size=(500, 24))) * scale,
                   np.full((1, 24), 7.3), np.zeros((1, 24)), -np.abs(rng.normal(size=(1, 24))),
                   np.r_[np.full(23, -65504.0 * 128), 65504.0 * 127][None],
                   rng.normal(size=(1, 24)) * 1e-9]).astype(np.float32)
    rows = encode_sq8(x)
    assert rows.dtype == np.uint8 and rows.shape == (x.shape[0], 26)
    assert store_of(rows, 24) == "sq8" and store_of(rows[:, :24], 24) == "uint8"
    base, step = sq8_params(rows, 24)
    decoded = decode_rows(rows, "sq8", 24)
    err = np.abs(decoded.astype(np.float64) - x)
    assert (err <= step[:, None] * (0.5 + 1e-6)).all()
    unsigned = x.min(axis=1) >= 0
    np.testing.assert_array_equal(base, np.where(unsigned, 0, 128))
    # the step covers the row, and the next smaller float16 would not
    smaller = np.nextafter(step.astype(np.float16), np.float16(0)).astype(np.float32)
    cover = np.where(unsigned, x.max(axis=1) / 255,
                     np.maximum(-x.min(axis=1) / 128, x.max(axis=1) / 127))
    assert (step >= cover).all() and (smaller[step > 0] < cover[step > 0]).all()
    assert decoded[1000, 0] == pytest.approx(7.3, abs=float(step[1000]) / 2)
    np.testing.assert_array_equal(decoded[1001], 0)
    with pytest.raises(ValueError, match="add: row 12 has values beyond"):
        encode_sq8(np.full((1, 24), -1e7, np.float32), "add", row_offset=12)
    with pytest.raises(ValueError, match=r"sq8 \(uint8\[26\]\), got uint8 \(3, 27\)"):
        store_of(np.zeros((3, 27), np.uint8), 24)


def test_stored_vectors_count_in_bytes_per_vector(small_data):
    plain = make_index(small_data, store=None, n=2000)
    for store, width in (("uint8", 1), ("float16", 2), ("float32", 4)):
        learn = np.rint(np.abs(small_data["learn"])) if store == "uint8" else small_data["learn"]
        base = np.rint(np.abs(small_data["base"][:2000])) if store == "uint8" else None
        empty = VLQIndex(D_IN, NLIST, NEDGE, code_bytes=8, nlambda=32, stored_vectors=store)
        assert empty.bytes_per_vector == VLQIndex(
            D_IN, NLIST, NEDGE, code_bytes=8, nlambda=32).bytes_per_vector + D_IN * width
        index = make_index({"learn": learn, "base": small_data["base"]}, store=store, n=2000,
                           base=base)
        extra = index.bytes_per_vector - plain.bytes_per_vector
        # the same codes except for the uint8 case (other data): compare the stored part
        assert index.lists.vectors.nbytes == 2000 * D_IN * width
        if store != "uint8":
            assert extra == pytest.approx(D_IN * width)
    sq8 = make_index(small_data, store="sq8", n=2000)
    assert sq8.bytes_per_vector - plain.bytes_per_vector == pytest.approx(D_IN + 2)
    assert VLQIndex(D_IN, NLIST, NEDGE, code_bytes=8, stored_vectors="sq8").bytes_per_vector == \
        VLQIndex(D_IN, NLIST, NEDGE, code_bytes=8).bytes_per_vector + D_IN + 2


def test_refine_errors(small_data, index):
    q = small_data["query"][:3]
    with pytest.raises(ValueError, match="refine=20 needs stored vectors"):
        index.search(q, k=5, refine=20, **EVERY_LIST)
    stored = make_index(small_data, n=500)
    with pytest.raises(ValueError, match="refine=3 must be >= k=5"):
        stored.search(q, k=5, refine=3, **EVERY_LIST)
    with pytest.raises(ValueError, match="refine must be a positive integer"):
        stored.search(q, k=5, refine=0, **EVERY_LIST)
    with pytest.raises(ValueError, match="stored_vectors='uint8' keeps integers in 0..255, but "
                                         "row 1 "):
        u8 = VLQIndex(D_IN, NLIST, NEDGE, code_bytes=8, nlambda=32, stored_vectors="uint8")
        u8.train(small_data["learn"])
        u8.add(np.vstack([np.full((1, D_IN), 3.0, np.float32), small_data["base"][:5]]))
    assert u8.ntotal == 0                       # nothing added
    with pytest.raises(ValueError, match="stored_vectors must be None"):
        VLQIndex(D_IN, NLIST, NEDGE, code_bytes=8, stored_vectors="int8")
    with pytest.raises(ValueError, match="metric must be one of l2, ip, cosine, got "
                                         "metric='dot'"):
        VLQIndex(D_IN, NLIST, NEDGE, code_bytes=8, metric="dot")
    with pytest.raises(ValueError, match="float16"):
        f16 = VLQIndex(D_IN, NLIST, NEDGE, code_bytes=8, nlambda=32, stored_vectors="float16")
        f16.train(small_data["learn"])
        f16.add(np.full((2, D_IN), 1e6, np.float32))
    with pytest.raises(ValueError, match="the index has stored_vectors='float32'; pass vectors"):
        stored.add_encoded(*stored.encode(small_data["base"][:4]), np.arange(9000, 9004))


def test_cosine_refuses_zero_rows(small_data):
    index = make_index(small_data, "cosine", store=None, n=500)
    bad = small_data["base"][:4].copy()
    bad[2] = 0
    with pytest.raises(ValueError, match="add: row 2 is zero; the cosine metric"):
        index.add(bad)
    with pytest.raises(ValueError, match="queries: row 2 is zero"):
        index.search(bad, k=3, **EVERY_LIST)
    D, _ = index.search(small_data["query"][:5], k=10, **EVERY_LIST)
    assert (np.diff(D, axis=1) <= 0).all() and (D <= 1.0 + 1e-4).all()


def test_arrays_round_trip_keeps_vectors_and_metric(small_data):
    index = make_index(small_data, "cosine", store="float16", n=1500)
    index.add(small_data["base"][3000:3100], ids=np.arange(5000, 5100))   # pending rows too
    data = index.to_arrays()
    assert data.vectors.dtype == np.float16 and data.vectors.shape == (1600, D_IN)
    row = int(np.flatnonzero(data.ids == 5007)[0])
    np.testing.assert_array_equal(data.vectors[row], small_data["base"][3007].astype(np.float16))
    again = VLQIndex.from_arrays(data)
    assert (again.metric, again.stored_vectors, again.shape) == ("cosine", "float16", index.shape)
    q = small_data["query"][:10]
    for a, b in zip(index.search(q, k=5, refine=50, **EVERY_LIST),
                    again.search(q, k=5, refine=50, **EVERY_LIST)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="pass vectors"):
        VLQIndex.from_arrays(data, stored_vectors=None).add_encoded(
            data.list_ids[:2], data.lambda_idx[:2], data.codes[:2], np.arange(7000, 7002))


def test_an_sq8_store_round_trips_through_parquet(small_data, tmp_path):
    index = make_index(small_data, "ip", store="sq8", n=1500)
    index.save(tmp_path / "copy")
    again = VLQIndex.load(tmp_path / "copy")
    assert again.stored_vectors == "sq8"
    np.testing.assert_array_equal(np.sort(again.lists.vectors, axis=0),
                                  np.sort(index.lists.vectors, axis=0))
    q = small_data["query"][:10]
    for a, b in zip(index.search(q, k=5, refine=40, **EVERY_LIST),
                    again.search(q, k=5, refine=40, **EVERY_LIST)):
        np.testing.assert_array_equal(a, b)
    # codes encoded elsewhere: raw vectors are encoded, sq8 rows are taken as they are
    rows = small_data["base"][3000:3004]
    again.add_encoded(*again.encode(rows), np.array([9000, 9001, 9002, 9003]), vectors=rows)
    again.add_encoded(*again.encode(rows), np.array([9010, 9011, 9012, 9013]),
                      vectors=encode_sq8(rows))
    data = again.to_arrays()
    kept = data.vectors[np.argsort(data.ids)][-8:]
    np.testing.assert_array_equal(kept[:4], encode_sq8(rows))
    np.testing.assert_array_equal(kept[4:], encode_sq8(rows))
    with pytest.raises(ValueError, match=r"vectors must be an \(n=4, dim=32\) numpy array "
                                         r"or sq8 rows \(n, 34\)"):
        again.add_encoded(*again.encode(rows), np.array([9020, 9021, 9022, 9023]),
                          vectors=encode_sq8(rows)[:, :33])


def test_refine_function_orders_and_pads():
    vectors = np.array([[0, 0], [1, 0], [3, 0]], np.float32)
    q = np.array([[0.9, 0]], np.float32)
    D, pos = refine(q, np.array([[2, -1, 0, 1]]), vectors, "l2", 3)
    np.testing.assert_array_equal(pos, [[1, 0, 2]])
    np.testing.assert_allclose(D, [[0.01, 0.81, 4.41]], rtol=1e-5)
    D, pos = refine(q, np.array([[2, -1]]), vectors, "ip", 2)
    np.testing.assert_array_equal(pos, [[2, -1]])
    assert D[0, 0] == pytest.approx(2.7) and D[0, 1] == -np.inf


def test_shape_metric_round_trips_and_defaults_to_l2():
    shape = IndexShape(32, 16, 4, 8, metric="cosine")
    assert IndexShape.from_dict(shape.to_dict(), "here") == shape
    old = {k: v for k, v in shape.to_dict().items() if k != "metric"}
    assert IndexShape.from_dict(old, "old file").metric == "l2"
    with pytest.raises(ValueError, match="old file: bad index shape .*metric='dot'"):
        IndexShape.from_dict({**old, "metric": "dot"}, "old file")


def test_a_cosine_model_refuses_an_index_declared_l2(small_data, tmp_path):
    index = make_index(small_data, "cosine", store=None, n=500)
    index.save(tmp_path / "copy")
    assert VLQIndex.load(tmp_path / "copy").metric == "cosine"
    manifest = tmp_path / "copy" / "manifest.json"
    doc = json.loads(manifest.read_text())
    assert doc["shape"]["metric"] == "cosine"
    doc["shape"]["metric"] = "l2"
    manifest.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"disagrees with its model .*metric='l2' "
                                         r"\(model: 'cosine'\)"):
        VLQIndex.load(tmp_path / "copy")


def test_l2_and_ip_models_of_the_same_arrays_are_distinct_versions(small_data, tmp_path):
    l2 = make_index(small_data, "l2", store=None, n=10)
    ip = VLQIndex.from_arrays(l2.to_arrays())
    ip.metric = "ip"   # the same trained arrays, declared ip
    v_l2, v_ip = l2.save_model(tmp_path), ip.save_model(tmp_path)
    assert v_l2 != v_ip
    assert VLQIndex.from_model(tmp_path, v_ip).metric == "ip"
    assert VLQIndex.from_model(tmp_path, v_l2).metric == "l2"


def _levels():
    from indexer import native
    return native.LEVELS[: native.LEVELS.index(native.cpu_level()) + 1]


@pytest.mark.parametrize("store", ["uint8", "float16", "float32", "sq8"])
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_native_refine_orders_as_the_numba_kernel_at_every_level(store, metric):
    """indexer._fastscan.refine (AVX-512 or portable C++) against the numba kernel: the same
    distances (to float rounding; exactly for integer rows and queries), the same order
    except between near-equal distances, padding (-1), an overflowing row, a dim that is
    not a multiple of 16, k = r; a candidate past the end is a ValueError."""
    from indexer import native
    from indexer.refine_kernel import refine_rows
    if not native.native_available():
        pytest.skip("native kernel not built")
    rng = np.random.default_rng(11)
    d, n, nq, r = 37, 3000, 40, 60
    if store == "uint8":
        x, q = rng.integers(1, 256, (n, d)).astype(np.float32), rng.integers(0, 256, (nq, d))
    else:
        x, q = rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(nq, d))
        if store == "float32" and metric == "l2":
            x[5] = 1e20                           # overflows to inf: ties at inf
    rows = encode_sq8(x) if store == "sq8" else x.astype(store)
    q = q.astype(np.float32)
    pos = rng.integers(0, n, (nq, r))
    pos[:, 0] = 5
    pos[3, 9:] = -1                               # 9 candidates: padded
    pos[4, 1:] = pos[4, 0]                        # one row 60 times: ties in candidate order
    empty = np.float32(np.inf if metric == "l2" else -np.inf)
    previous = native.simd_level()
    for k in (10, r):
        want_d, want_p = refine_rows(q, pos, rows, store, metric, k, empty, backend="numba")
        try:
            for level in _levels():
                native.set_level(level)
                got_d, got_p = refine_rows(q, pos, rows, store, metric, k, empty,
                                           backend="native", threads=2)
                if store == "uint8" and metric != "cosine":        # integer sums: exact
                    np.testing.assert_array_equal(got_d, want_d)
                    np.testing.assert_array_equal(got_p, want_p)
                    continue
                np.testing.assert_allclose(got_d, want_d, rtol=2e-5, atol=1e-6)
                swapped = got_p != want_p
                assert swapped.mean() < 0.01
                np.testing.assert_allclose(got_d[swapped], want_d[swapped], rtol=2e-5, atol=1e-6)
        finally:
            native.set_level(previous)
    assert (got_p[3, 9:] == -1).all() and (got_d[3, 9:] == empty).all()
    assert (want_p[4] == pos[4, 0]).all()
    bad = pos.copy()
    bad[1, 2] = n
    with pytest.raises(ValueError, match="out of range"):
        refine_rows(q, bad, rows, store, metric, 10, empty, backend="native")

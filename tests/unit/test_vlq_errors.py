"""Bad input gets a ValueError naming the problem and leaves the index as it was."""
import numpy as np
import pytest

from indexer import VLQIndex


# `index`: the small trained index of tests/conftest.py (unchanged by these tests)


def snapshot(idx, q):
    return idx.ntotal, idx.search(q, k=5, nprobe=4, nlines=8)


def assert_unchanged(idx, q, before):
    n, (d, i) = before
    assert idx.ntotal == n
    d2, i2 = idx.search(q, k=5, nprobe=4, nlines=8)
    np.testing.assert_array_equal(i, i2)
    np.testing.assert_array_equal(d, d2)


def bad_rows(small_data, value):
    x = small_data["base"][2000:3000].copy()
    x[700, 3] = value
    return x


@pytest.mark.parametrize("make_x, match", [
    (lambda s: s["base"][:10, :-1], "wrong dimension"),
    (lambda s: s["base"][:10].astype(np.int32), "unsupported dtype"),
    (lambda s: s["base"][:10].astype(np.complex64), "unsupported dtype"),
    (lambda s: s["base"][:0], "empty"),
    (lambda s: s["base"][0], "2-D"),
    (lambda s: bad_rows(s, np.nan), "row 700 contains NaN or inf"),
    (lambda s: bad_rows(s, np.inf), "row 700 contains NaN or inf"),
    (lambda s: s["base"][:10].tolist(), "numpy array"),
])
def test_bad_add_input(index, small_data, make_x, match):
    q = small_data["query"][:4]
    before = snapshot(index, q)
    with pytest.raises(ValueError, match=match):
        index.add(make_x(small_data))
    assert_unchanged(index, q, before)


def test_nan_in_a_later_batch_adds_nothing(small_data):
    idx = VLQIndex(small_data["d"], nlist=16, nedge=4, code_bytes=8, add_batch_size=256)
    idx.train(small_data["learn"])
    x = small_data["base"][:2000].copy()
    x[1900, 0] = np.nan
    with pytest.raises(ValueError, match="row 1900"):
        idx.add(x)
    assert idx.ntotal == 0


@pytest.mark.parametrize("ids, match", [
    (np.arange(5), "shape"),
    (np.arange(1000, dtype=np.float64), "integer"),
    (-np.arange(1000), "negative"),
])
def test_bad_ids(index, small_data, ids, match):
    q = small_data["query"][:4]
    before = snapshot(index, q)
    with pytest.raises(ValueError, match=match):
        index.add(small_data["base"][2000:3000], ids=ids)
    assert_unchanged(index, q, before)


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, "k must be > 0"),
    ({"k": 2001}, "k=2001 exceeds its maximum 2000"),
    ({"k": 2.5}, "k must be an integer"),
    ({"nprobe": 17}, "nprobe=17 exceeds its maximum 16"),
    ({"nprobe": 2, "nlines": 9}, "nlines=9 exceeds its maximum 8"),
    ({"nlines": 0}, "nlines must be > 0"),
])
def test_bad_search_parameters(index, small_data, kwargs, match):
    q = small_data["query"][:4]
    before = snapshot(index, q)
    with pytest.raises(ValueError, match=match):
        index.search(q, **{"k": 5, "nprobe": 4, "nlines": 8, **kwargs})
    assert_unchanged(index, q, before)


@pytest.mark.parametrize("make_q, match", [
    (lambda s: s["query"][:3, :5], "wrong dimension"),
    (lambda s: np.full((2, s["d"]), np.nan, np.float32), "NaN or inf"),
    (lambda s: s["query"][:0], "empty"),
    (lambda s: s["query"][:3].astype(np.int64), "unsupported dtype"),
])
def test_bad_queries(index, small_data, make_q, match):
    with pytest.raises(ValueError, match=match):
        index.search(make_q(small_data), k=5, nprobe=4, nlines=8)


def test_search_before_train_or_add(small_data):
    idx = VLQIndex(small_data["d"], nlist=16, nedge=4, code_bytes=8)
    with pytest.raises(ValueError, match="not trained"):
        idx.search(small_data["query"], k=1)
    with pytest.raises(ValueError, match="not trained"):
        idx.add(small_data["base"][:10])
    idx.train(small_data["learn"])
    with pytest.raises(ValueError, match="empty"):
        idx.search(small_data["query"], k=1, nprobe=2, nlines=2)


def test_train_refuses_too_few_points_and_retrain(small_data, index):
    idx = VLQIndex(small_data["d"], nlist=16, nedge=4, code_bytes=8)
    with pytest.raises(ValueError, match="training vectors for nlist=16"):
        idx.train(small_data["learn"][:10])
    assert not idx.is_trained
    with pytest.raises(ValueError, match="already holds 2000 vectors"):
        index.train(small_data["learn"])


@pytest.mark.parametrize("kwargs, match", [
    ({"dim": 0}, "dim must be > 0"),
    ({"nlist": 1}, "nlist must be >= 2"),
    ({"nedge": 16}, "nedge=16 exceeds its maximum 15"),
    ({"code_bytes": 5}, "must divide dim=32"),
    ({"nlambda": 300}, "nlambda=300 exceeds its maximum 256"),
    ({"backend": "cuda"}, "backend must be"),
])
def test_bad_constructor_arguments(kwargs, match):
    args = {"dim": 32, "nlist": 16, "nedge": 4, "code_bytes": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        VLQIndex(**args)


def test_load_refuses_tampered_files(index, tmp_path):
    path = tmp_path / "idx"
    index.save(str(path))
    centroids = path / "model" / "centroids.npy.zst"
    blob = bytearray(centroids.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    centroids.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="centroids.npy.zst: sha256 checksum mismatch"):
        VLQIndex.load(str(path))
    with pytest.raises(FileNotFoundError, match="neither manifest.json nor CURRENT"):
        VLQIndex.load(str(tmp_path / "nothing"))


def test_the_index_and_the_serving_layer_check_queries_alike(index, small_data):
    """One rule: VLQIndex.search refuses what check_queries (client, coordinator) refuses."""
    from indexer.validation import check_queries

    q = small_data["query"][:3]
    assert check_queries(q.astype(np.uint8), q.shape[1]).dtype == np.float32
    for bad, match in [(q[:0], "non-empty 2-D"), (q[0], "non-empty 2-D"),
                       (q.astype(np.int64), "unsupported dtype"), (q[:, :5], "wrong dimension")]:
        with pytest.raises(ValueError, match=match):
            check_queries(bad, q.shape[1])
        with pytest.raises(ValueError, match=match):
            index.search(bad, k=5, nprobe=4, nlines=8)

"""Issue 12, items 2 and 9 and the index's silent casts: duplicate ids, repeated shards,
encoded rows out of range, bad batch sizes and broken model bundles are refused with a
ValueError naming the id, array, key or file, and the index is left as it was."""
import numpy as np
import pytest

from indexer import VLQIndex
from shards import IndexArrays, Store, publish
from shards.artifacts import write_array_bundle_at
from shards.models import MODEL_KIND, model_version_of

SEARCH = {"k": 5, "nprobe": 4, "nlines": 8}


@pytest.fixture()
def fresh(index):
    """A private copy of the conftest index (2,000 vectors, ids 0..1999)."""
    return VLQIndex.from_arrays(index.to_arrays())


def state(idx, q):
    return idx.ntotal, idx._next_id, idx.search(q, **SEARCH)


def assert_same(before, after):
    assert before[:2] == after[:2]
    np.testing.assert_array_equal(before[2][0], after[2][0])
    np.testing.assert_array_equal(before[2][1], after[2][1])


# -- item 2: duplicate ids ----------------------------------------------------------------
@pytest.mark.parametrize("ids, match", [
    (np.r_[np.arange(5000, 5999), 5003], "id 5003 appears more than once"),
    (np.arange(1000, 2000), "id 1000 is already in the index"),
    (np.r_[np.arange(9000, 9999), 1999], "id 1999 is already in the index"),
    (np.arange(0, 1000, dtype=np.uint64), "id 0 is already in the index"),
])
def test_add_refuses_duplicate_ids_and_changes_nothing(fresh, small_data, ids, match):
    q = small_data["query"][:4]
    before = state(fresh, q)
    with pytest.raises(ValueError, match=match):
        fresh.add(small_data["base"][2000:3000], ids=ids)
    assert_same(before, state(fresh, q))


def test_duplicates_across_adds_before_a_search(fresh, small_data):
    """Pending (not yet compacted) rows count as in the index too."""
    fresh.add(small_data["base"][2000:2100], ids=np.arange(50_000, 50_100))
    with pytest.raises(ValueError, match="id 50099 is already in the index"):
        fresh.add(small_data["base"][2100:2200], ids=np.arange(50_099, 50_199))
    fresh.add(small_data["base"][2100:2200])                  # default ids: new ones
    _, ids = fresh.search(small_data["query"], k=50, nprobe=16, nlines=64)
    for row in ids:
        assert np.unique(row).size == row.size
    assert fresh.ntotal == 2200 and np.unique(fresh.lists.ids).size == 2200


def test_add_encoded_and_from_arrays_refuse_duplicate_ids(fresh, small_data):
    q = small_data["query"][:4]
    list_ids, lam, codes = fresh.encode(small_data["base"][2000:2010])
    before = state(fresh, q)
    with pytest.raises(ValueError, match="id 0 is already in the index"):
        fresh.add_encoded(list_ids, lam, codes, np.arange(10))
    with pytest.raises(ValueError, match="id 3000 appears more than once"):
        fresh.add_encoded(list_ids, lam, codes, np.full(10, 3000))
    assert_same(before, state(fresh, q))
    data = fresh.to_arrays()
    ids = data.ids.copy()
    ids[5] = ids[6]
    with pytest.raises(ValueError, match=f"id {ids[6]} appears more than once"):
        VLQIndex.from_arrays(IndexArrays(data.model_meta, data.model_arrays, ids, data.list_ids,
                                         data.lambda_idx, data.codes, data.next_id))


def test_load_refuses_a_shard_listed_twice(index, tmp_path):
    root = Store(str(tmp_path)).index("demo")
    publish(root, index.to_arrays(), rows_per_shard=700)
    assert VLQIndex.load(root, shards=[0, 2]).ntotal == 1300
    for shards, match in [([0, 0], r"shard 0 is listed twice in shards=\[0, 0\]"),
                          ([2, 1, np.int64(2)], "shard 2 is listed twice"),
                          ([0.0], "shard numbers must be integers, got 0.0"),
                          ([True], "shard numbers must be integers, got True"),
                          ("0", "shards must be a sequence of shard numbers"),
                          (3, "shards must be a sequence of shard numbers")]:
        with pytest.raises(ValueError, match=match):
            VLQIndex.load(root, shards=shards)


# -- add_encoded: no silent casts -----------------------------------------------------------
def _encoded(idx, small_data):
    list_ids, lam, codes = idx.encode(small_data["base"][2000:2010])
    return {"list_ids": list_ids, "lambda_idx": lam, "codes": codes,
            "ids": np.arange(10_000, 10_010)}


@pytest.mark.parametrize("change, match", [
    (lambda a: {**a, "lambda_idx": a["lambda_idx"].astype(np.int16) - 1 - a["lambda_idx"]},
     r"add_encoded: lambda_idx: values must lie in \[0, 32\), got \[-1, -1\]"),
    (lambda a: {**a, "lambda_idx": np.full(10, 32, np.uint8)},
     r"lambda_idx: values must lie in \[0, 32\), got \[32, 32\]"),
    (lambda a: {**a, "lambda_idx": a["lambda_idx"].astype(np.float32)},
     "add_encoded: lambda_idx: expected an integer numpy array, got float32"),
    (lambda a: {**a, "lambda_idx": a["lambda_idx"].tolist()},
     "lambda_idx: expected an integer numpy array, got list"),
    (lambda a: {**a, "codes": a["codes"].astype(np.float64) + 0.5},
     "add_encoded: codes: expected an integer numpy array, got float64"),
    (lambda a: {**a, "codes": a["codes"].astype(np.int16) + 256},
     r"add_encoded: codes: values must lie in \[0, 256\)"),
    (lambda a: {**a, "codes": a["codes"][:, :4]}, r"codes: expected shape \(10, 8\), got \(10, 4\)"),
    (lambda a: {**a, "list_ids": a["list_ids"].astype(np.float64)},
     "add_encoded: list_ids: expected an integer numpy array, got float64"),
    (lambda a: {**a, "list_ids": a["list_ids"] + 64}, r"list_ids: values must lie in \[0, 64\)"),
    (lambda a: {**a, "list_ids": a["list_ids"][:9]}, r"list_ids: expected shape \(10,\)"),
    (lambda a: {**a, "ids": a["ids"].astype(np.float64)}, "ids: expected an integer numpy array"),
    (lambda a: {**a, "ids": list(a["ids"])}, "add_encoded: ids must be a 1-D integer numpy array"),
])
def test_add_encoded_refuses_what_it_used_to_cast(fresh, small_data, change, match):
    q = small_data["query"][:4]
    before = state(fresh, q)
    with pytest.raises(ValueError, match=match):
        fresh.add_encoded(**change(_encoded(fresh, small_data)))
    assert_same(before, state(fresh, q))


def test_add_encoded_accepts_what_encode_gives(fresh, small_data):
    fresh.add_encoded(**_encoded(fresh, small_data))
    assert fresh.ntotal == 2010


@pytest.mark.parametrize("batch_size, match", [
    (0, "batch_size must be > 0, got 0"), (-3, "batch_size must be > 0, got -3"),
    (2.5, "batch_size must be an integer, got 2.5"), (True, "batch_size must be an integer"),
    ("8", "batch_size must be an integer, got '8'"),
])
def test_search_refuses_bad_batch_sizes(index, small_data, batch_size, match):
    with pytest.raises(ValueError, match=match):
        index.search(small_data["query"][:4], batch_size=batch_size, **SEARCH)


def test_search_in_batches_equals_one_batch(index, small_data):
    q = small_data["query"]
    d1, _ = index.search(q, batch_size=7, **SEARCH)
    d2, _ = index.search(q, **SEARCH)
    np.testing.assert_allclose(d1, d2, rtol=1e-5)     # query tables: GEMMs of other sizes


# -- item 9: a broken model bundle (its hash recomputed) is refused at load ----------------
def _write_model(store, meta, arrays):
    version = model_version_of(arrays)
    loc = Store(store).model_location(version)
    write_array_bundle_at(loc, {**meta, "kind": MODEL_KIND, "model_version": version}, arrays)
    return version, loc.uri


def _put(name, where, value):
    def change(arrays):
        a = np.array(arrays[name])
        a[where] = value
        return {**arrays, name: a}
    return change


@pytest.mark.parametrize("change_arrays, change_meta, match", [
    (_put("centroids", (3, 5), np.nan), None, "centroids.npy.zst: holds NaN or inf"),
    (_put("centroids", (0, 0), -np.inf), None, "centroids.npy.zst: holds NaN or inf"),
    (_put("pq_codebook", (1, 2, 3), np.nan), None, "pq_codebook.npy.zst: holds NaN or inf"),
    (_put("edge_len2", (2, 1), np.inf), None, "edge_len2.npy.zst: holds NaN or inf"),
    (_put("lambda_values", 4, np.nan), None, "lambda_values.npy.zst: holds NaN or inf"),
    (_put("edges", (2, 1), 16), None, r"edges.npy.zst: edge ids must lie in \[0, 16\)"),
    (lambda a: {**a, "lambda_values": a["lambda_values"][:10]}, None,
     r"lambda_values.npy.zst: holds float32 \(10,\).* needs float \(32,\)"),
    (lambda a: {k: v for k, v in a.items() if k != "edge_len2"}, None,
     r"the model lacks the arrays \['edge_len2'\]"),
    (None, lambda m: {k: v for k, v in m.items() if k != "shape"},
     "model metadata lacks its 'shape' mapping"),
    (None, lambda m: {**m, "shape": {k: v for k, v in m["shape"].items() if k != "nlist"}},
     r"model metadata 'shape' lacks \['nlist'\]"),
    (None, lambda m: {**m, "shape": {**m["shape"], "nlambda": 64}},
     r"lambda_values.npy.zst: holds float32 \(32,\).* needs float \(64,\)"),
    (None, lambda m: {**m, "encoder": {"dim": 32}}, "model metadata 'encoder' must be a mapping with a 'kind'"),
])
def test_a_broken_model_is_refused_at_load_naming_the_file(index, tmp_path, change_arrays,
                                                           change_meta, match):
    arrays = (change_arrays or (lambda a: a))(dict(index.to_arrays().model_arrays))
    meta = (change_meta or (lambda m: m))(index.model_meta())
    version, uri = _write_model(str(tmp_path), meta, arrays)
    with pytest.raises(ValueError, match=match) as err:
        VLQIndex.from_model(str(tmp_path), version)
    assert uri in str(err.value)


def test_a_model_with_nan_is_not_written(index, tmp_path):
    from shards import save_model

    arrays = _put("centroids", (1, 1), np.nan)(dict(index.to_arrays().model_arrays))
    with pytest.raises(ValueError, match="model to write: array 'centroids': holds NaN or inf"):
        save_model(str(tmp_path), index.model_meta(), arrays)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())

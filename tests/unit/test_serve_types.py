import numpy as np
import pytest

from cluster.serving.routing import shard_groups
from cluster.serving.searcher import ShardSearcher
from cluster.serving.types import (PartialResultError, SearchParams, SearchResult, ServeConfig,
                                 check_queries)


def test_shard_groups_are_contiguous_balanced_and_cover_every_shard():
    assert shard_groups(4, 2) == [(0, 1), (2, 3)]
    assert shard_groups(5, 2) == [(0, 1, 2), (3, 4)]
    assert shard_groups(2, 4) == [(0,), (1,)]          # never an empty group
    with pytest.raises(ValueError):
        shard_groups(0, 1)


@pytest.mark.parametrize("bad, message", [
    (dict(searchers=0), "searchers must be > 0"), (dict(replicas=1.5), "replicas must be an"),
    (dict(timeout_s=0), "timeout_s must be > 0"), (dict(poll_s=-1), "poll_s must be"),
    (dict(backend="gpu"), "backend must be"), (dict(name=""), "store and name are required"),
])
def test_serve_config_names_the_bad_field(bad, message):
    with pytest.raises(ValueError, match=message):
        ServeConfig(**{"store": "/s", "name": "n", **bad})


@pytest.mark.parametrize("bad, message", [
    (dict(filter=""), "filter must be a non-empty SQL WHERE clause string"),
    (dict(filter="   "), "filter must be a non-empty"),
    (dict(filter=3), "filter must be a non-empty SQL WHERE clause string or None, got 3"),
    (dict(refine=0), "refine must be > 0"), (dict(refine=True), "refine must be an integer"),
    (dict(refine=2.5), "refine must be an integer"),
    (dict(k=10, refine=5), "refine must be >= k .* got refine=5 with k=10"),
])
def test_search_params_check_filter_and_refine(bad, message):
    with pytest.raises(ValueError, match=message):
        SearchParams(**bad)


def test_search_params_carry_filter_and_refine():
    params = SearchParams(k=10, filter="lang = 'en'", refine=10)
    assert (params.filter, params.refine) == ("lang = 'en'", 10)
    assert SearchParams().filter is None and SearchParams().refine is None


def test_search_params_and_queries_are_checked():
    with pytest.raises(ValueError, match="k must be > 0"):
        SearchParams(k=0)
    with pytest.raises(ValueError, match="nprobe must be an integer"):
        SearchParams(nprobe=2.0)
    q = np.zeros((3, 4), np.uint8)
    assert check_queries(q, 4).dtype == np.float32
    with pytest.raises(ValueError, match=r"wrong dimension: got shape \(3, 4\)"):
        check_queries(q, 8)
    with pytest.raises(ValueError, match="row 1 contains NaN"):
        check_queries(np.array([[0.0], [np.nan]]), 1)


def test_search_result_unpacks_and_marks_partial():
    result = SearchResult(np.zeros((1, 2), np.float32), np.zeros((1, 2), np.int64), "v000001", (3,))
    D, I = result
    assert D.shape == I.shape == (1, 2) and result.partial
    assert "shards [3]" in str(PartialResultError(result))


def test_shard_searcher_answers_like_the_index_of_its_shards(tmp_path, trained_index, small_data):
    """The searcher class without Ray: its answer is that of VLQIndex.load(..., shards=...)."""
    from indexer import VLQIndex
    from shards import Store, publish

    publish(Store(str(tmp_path)).index("idx"), trained_index.to_arrays(), rows_per_shard=7000)
    uri = f"{tmp_path}/indexes/idx/v000001"
    searcher = ShardSearcher(uri, [1, 2])
    assert searcher.info()["version"] == "v000001" and searcher.info()["shards"] == [1, 2]
    assert searcher.info()["metric"] == "l2"          # what the coordinator merges by
    q = small_data["query"]
    D, I = searcher.search(q, SearchParams(k=5, nprobe=8, nlines=32))
    D0, I0 = VLQIndex.load(uri, shards=[1, 2]).search(q, 5, 8, 32)
    np.testing.assert_array_equal(I, I0)
    # more neighbours asked than the shards hold: only what they hold comes back
    tiny = ShardSearcher(uri, [2])
    D, I = tiny.search(q[:2], SearchParams(k=10_000, nprobe=8, nlines=32))
    assert I.shape == (2, tiny.index.ntotal)


@pytest.mark.parametrize("field", ["timeout_s", "load_timeout_s", "poll_s", "searcher_cpus",
                                   "searcher_gpus"])
def test_serve_config_refuses_non_finite_numbers(field):
    for value in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"{field} must be"):
            ServeConfig(store="s", name="n", **{field: value})

"""The store handles (Store, IndexRoot), the versions API and the index shape."""
import pickle

import numpy as np
import pytest

from indexer import VLQIndex
from shards import IndexRoot, IndexShape, Store, publish
from shards.claims import claim_build
from shards.store import as_root, version_number


def test_store_of_takes_a_uri_or_a_store():
    store = Store("/tmp/s", {"anon": True})
    assert Store.of(store) is store
    assert Store.of("/tmp/s") == store                 # options do not make another store
    assert Store.of("s3://b/p", {"endpoint_url": "x"}).storage_options == {"endpoint_url": "x"}
    for bad in ("", None, 3):
        with pytest.raises(ValueError, match="store must be a non-empty URI or a Store"):
            Store.of(bad)


def test_paths_of_a_store_and_an_index(tmp_path):
    store = Store(str(tmp_path))
    assert Store.of(tmp_path) == store                      # a pathlib.Path is a local URI
    root = store.index("sift")
    assert root == IndexRoot(store, "sift")
    assert root.uri == f"{tmp_path}/indexes/sift"
    assert root.version_uri("v000002") == f"{tmp_path}/indexes/sift/v000002"
    assert store.model_location("m-0123").uri == f"{tmp_path}/models/m-0123"
    s3 = Store("s3://bucket/prefix").index("sift")
    assert s3.version_uri("v000001") == "s3://bucket/prefix/indexes/sift/v000001"
    for bad in ("../x", "a/b", ""):
        with pytest.raises(ValueError, match="index name"):
            store.index(bad)
    with pytest.raises(ValueError, match="version"):
        root.version_uri("../../etc")
    with pytest.raises(TypeError, match="needs a Store"):
        IndexRoot(str(tmp_path), "sift")
    with pytest.raises(TypeError, match=r"expected an IndexRoot \(Store\(uri\).index\(name\)\)"):
        as_root(str(tmp_path))
    assert pickle.loads(pickle.dumps(root)) == root          # travels into Ray actors


def test_version_number():
    assert version_number("v000042") == 42 and version_number("v1234567") == 1234567
    assert version_number(None) == version_number("copy") == version_number("v42") == -1


def test_versions_and_current(tmp_path, small_data):
    root = Store(str(tmp_path)).index("idx")
    assert root.versions() == [] and root.folders() == [] and root.current_version() is None
    index = VLQIndex(small_data["d"], nlist=8, nedge=4, code_bytes=8)
    index.train(small_data["learn"][:2000])
    index.add(small_data["base"][:300])
    claim = claim_build(root, {"a": 1})                    # a build's unpublished folder
    publish(root, index.to_arrays())
    assert publish(root, index.to_arrays()).version == "v000002"   # the same: no new version
    index.add(small_data["base"][300:310])
    publish(root, index.to_arrays())
    assert root.versions() == ["v000002", "v000003"]       # published: with a manifest
    assert root.folders() == ["v000001", "v000002", "v000003"]
    assert root.claimed(claim.version) and not root.claimed("v000002")
    assert root.current_version() == "v000003"


def test_index_shape_round_trip_and_checks():
    shape = IndexShape(dim=128, nlist=64, nedge=8, code_bytes=16, encoder="opq")
    assert shape.code_dim == 128 and shape.nlists == 512 and shape.nlambda == 256
    assert IndexShape.from_dict(shape.to_dict(), "here") == shape
    with pytest.raises(ValueError, match="here: bad index shape .*code_bytes=12 must divide"):
        IndexShape.from_dict({**shape.to_dict(), "code_bytes": 12}, "here")
    with pytest.raises(ValueError, match="there: index shape must be a mapping"):
        IndexShape.from_dict(None, "there")


def test_vlq_index_shape_is_what_its_model_records(small_data):
    index = VLQIndex(small_data["d"], nlist=8, nedge=4, code_bytes=8, nlambda=16)
    assert index.shape == IndexShape(small_data["d"], 8, 4, 8, 16, encoder="none")
    index.train(small_data["learn"][:2000])
    data = index.to_arrays()
    assert data.shape == index.shape
    assert IndexShape.from_dict(index.model_meta()["shape"], "meta") == index.shape
    assert VLQIndex.from_arrays(data).shape == index.shape
    assert np.array_equal(data.part_rows(3)[0], np.empty(0, np.int64))   # no rows: one empty shard

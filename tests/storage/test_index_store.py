"""Shards, manifests, models and atomic publish on a local folder and on S3 (moto)."""
import hashlib
import io
import json
import threading

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
import zstandard

from indexer import VLQIndex
from shards import PublishConflict, Store, load_arrays, publish

ROWS_PER_SHARD = 700
SEARCH = {"k": 10, "nprobe": 8, "nlines": 24}


@pytest.fixture(scope="module")
def other_index(small_data):
    idx = VLQIndex(small_data["d"], nlist=16, nedge=4, code_bytes=8, nlambda=32, seed=1)
    idx.train(small_data["learn"][::2])
    idx.add(small_data["base"][2000:3500])
    return idx


def root_of(store_uri, name="demo"):
    return Store(store_uri).index(name)


def fs_of(uri):
    return fsspec.core.url_to_fs(uri)


def assert_same_search(a, b, q):
    da, ia = a.search(q, **SEARCH)
    db, ib = b.search(q, **SEARCH)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(da, db)


def test_save_load_round_trip(index, small_data, store_uri):
    uri = f"{store_uri}/copy"
    index.save(uri, rows_per_shard=ROWS_PER_SHARD)
    loaded = VLQIndex.load(uri)
    assert loaded.ntotal == index.ntotal
    assert_same_search(index, loaded, small_data["query"])
    fs, path = fs_of(uri)
    shards = sorted(p for p in fs.ls(f"{path}/shards", detail=False))
    assert len(shards) == 3


def test_shard_file_schema_and_metadata(index, tmp_path):
    index.save(str(tmp_path / "copy"), rows_per_shard=ROWS_PER_SHARD)
    first = sorted((tmp_path / "copy" / "shards").iterdir())[0]
    f = pq.ParquetFile(first)
    schema = f.schema_arrow
    assert [str(t) for t in schema.types] == ["uint64", "uint32", "uint8", "fixed_size_binary[8]"]
    assert schema.names == ["id", "list_id", "lambda", "code"]
    assert f.metadata.row_group(0).column(0).compression == "ZSTD"
    kv = {k.decode(): json.loads(v) for k, v in schema.metadata.items()
          if k.startswith(b"snapline.")}
    assert kv["snapline.format_version"] == 3 and kv["snapline.code_bytes"] == 8
    assert kv["snapline.nlist"] == 16 and kv["snapline.nedge"] == 4
    assert kv["snapline.model_version"].startswith("m-")
    table = f.read()
    lists = table.column("list_id").to_numpy()
    assert (np.diff(lists.astype(np.int64)) >= 0).all()
    # row groups hold whole lists: no list id spans two row groups
    seen = set()
    for g in range(f.num_row_groups):
        group_lists = set(f.read_row_group(g, columns=["list_id"]).column(0).to_pylist())
        assert not group_lists & seen
        seen |= group_lists


def test_publish_and_load_index_root(index, other_index, small_data, store_uri):
    m1 = publish(root_of(store_uri), index.to_arrays(), rows_per_shard=ROWS_PER_SHARD)
    assert m1.version == "v000001" and root_of(store_uri).current_version() == "v000001"
    root = f"{store_uri}/indexes/demo"
    assert_same_search(index, VLQIndex.load(root), small_data["query"])
    m2 = publish(root_of(store_uri), other_index.to_arrays(), rows_per_shard=ROWS_PER_SHARD)
    assert m2.version == "v000002" and m2.model_version != m1.model_version
    assert_same_search(other_index, VLQIndex.load(root), small_data["query"])
    # the old version stays readable by its folder
    assert_same_search(index, VLQIndex.load(f"{root}/v000001"), small_data["query"])
    fs, path = fs_of(store_uri)
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{path}/models", detail=False)) == \
        sorted([m1.model_version, m2.model_version])


def test_subset_of_shards_loads_those_rows(index, store_uri, small_data):
    publish(root_of(store_uri), index.to_arrays(), rows_per_shard=ROWS_PER_SHARD)
    root = f"{store_uri}/indexes/demo"
    parts = [VLQIndex.load(root, shards=[i]) for i in range(3)]
    assert [p.ntotal for p in parts] == [700, 700, 600]
    ids = np.concatenate([p.lists.ids for p in parts])
    np.testing.assert_array_equal(np.sort(ids), np.arange(2000))
    both = VLQIndex.load(root, shards=[0, 2])
    assert both.ntotal == 1300
    with pytest.raises(ValueError, match="shard 3 out of range"):
        VLQIndex.load(root, shards=[3])


# -- hostile or broken files: a clear error naming the file -------------------------------
def _copy(index, store_uri):
    uri = f"{store_uri}/copy"
    index.save(uri, rows_per_shard=ROWS_PER_SHARD)
    fs, path = fs_of(uri)
    manifest = json.loads(fs.cat_file(f"{path}/manifest.json"))
    return uri, fs, path, manifest


def _rewrite_manifest(fs, path, manifest):
    manifest.pop("content_id", None)
    fs.pipe_file(f"{path}/manifest.json", json.dumps(manifest).encode())


def test_flipped_byte_in_shard(index, store_uri):
    uri, fs, path, manifest = _copy(index, store_uri)
    shard = f"{path}/{manifest['shards'][1]['path']}"
    blob = bytearray(fs.cat_file(shard))
    blob[len(blob) // 3] ^= 0x01
    fs.pipe_file(shard, bytes(blob))
    with pytest.raises(ValueError, match=manifest["shards"][1]["path"] + ".*checksum mismatch"):
        VLQIndex.load(uri)


def test_truncated_shard(index, store_uri):
    uri, fs, path, manifest = _copy(index, store_uri)
    shard = f"{path}/{manifest['shards'][0]['path']}"
    fs.pipe_file(shard, fs.cat_file(shard)[:-100])
    with pytest.raises(ValueError, match=manifest["shards"][0]["path"] + ".*truncated"):
        VLQIndex.load(uri)


def test_missing_shard(index, store_uri):
    uri, fs, path, manifest = _copy(index, store_uri)
    fs.rm(f"{path}/{manifest['shards'][2]['path']}")
    with pytest.raises(FileNotFoundError, match=manifest["shards"][2]["path"]):
        VLQIndex.load(uri)


@pytest.mark.parametrize("bad_path", ["../../etc/passwd.parquet", "/tmp/x.parquet",
                                      "s3://other-bucket/shards/x.parquet",
                                      "shards/../../x.parquet", "model/centroids.parquet"])
def test_manifest_paths_must_stay_inside(index, store_uri, bad_path):
    uri, fs, path, manifest = _copy(index, store_uri)
    manifest["shards"][0]["path"] = bad_path
    _rewrite_manifest(fs, path, manifest)
    with pytest.raises(ValueError, match="leaves the index folder"):
        VLQIndex.load(uri)


def test_unknown_manifest_format_version(index, store_uri):
    uri, fs, path, manifest = _copy(index, store_uri)
    manifest["format_version"] = 99
    _rewrite_manifest(fs, path, manifest)
    with pytest.raises(ValueError, match="manifest.json: unknown manifest format version 99"):
        VLQIndex.load(uri)


def test_manifest_of_another_model_version(index, other_index, store_uri):
    publish(root_of(store_uri, "a"), index.to_arrays())
    publish(root_of(store_uri, "b"), other_index.to_arrays())
    fs, path = fs_of(store_uri)
    ma = json.loads(fs.cat_file(f"{path}/indexes/a/v000001/manifest.json"))
    mb = json.loads(fs.cat_file(f"{path}/indexes/b/v000001/manifest.json"))
    ma["model_version"] = mb["model_version"]       # shards of model A, model B named
    _rewrite_manifest(fs, f"{path}/indexes/a/v000001", ma)
    with pytest.raises(ValueError, match="encoded with model"):
        VLQIndex.load(f"{store_uri}/indexes/a")


def test_pickle_bearing_artifact_is_refused(index, store_uri):
    uri, fs, path, manifest = _copy(index, store_uri)
    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    blob = zstandard.ZstdCompressor().compress(buf.getvalue())
    fs.pipe_file(f"{path}/model/centroids.npy.zst", blob)
    meta = json.loads(fs.cat_file(f"{path}/model/meta.json"))
    meta["arrays"]["centroids"]["sha256"] = hashlib.sha256(blob).hexdigest()  # checksum passes
    fs.pipe_file(f"{path}/model/meta.json", json.dumps(meta).encode())
    with pytest.raises(ValueError, match="centroids.npy.zst: not a plain numpy array"):
        VLQIndex.load(uri)


# -- atomic publish ------------------------------------------------------------------------
class Interrupt(Exception):
    pass


@pytest.mark.parametrize("step", ["shard", "manifest", "current"])
def test_interrupted_publish_keeps_previous_version_and_rerun_completes(
        index, other_index, small_data, store_uri, step):
    publish(root_of(store_uri), index.to_arrays(), rows_per_shard=ROWS_PER_SHARD)
    new = other_index.to_arrays()

    def crash(name, *args):
        if name == step and (name != "shard" or args[0] == 1):
            raise Interrupt(name)

    with pytest.raises(Interrupt):
        publish(root_of(store_uri), new, rows_per_shard=ROWS_PER_SHARD, on_step=crash)
    root = f"{store_uri}/indexes/demo"
    assert root_of(store_uri).current_version() == "v000001"
    assert_same_search(index, VLQIndex.load(root), small_data["query"])
    manifest = publish(root_of(store_uri), new, rows_per_shard=ROWS_PER_SHARD)  # the rerun
    assert manifest.version == "v000002" == root_of(store_uri).current_version()
    assert_same_search(other_index, VLQIndex.load(root), small_data["query"])


def test_racing_writers_one_wins_the_other_is_told(index, other_index, store_uri):
    publish(root_of(store_uri), index.to_arrays(), rows_per_shard=ROWS_PER_SHARD)
    barrier = threading.Barrier(2, timeout=60)
    outcomes = {}

    def writer(name, data):
        def sync(step, *args):
            if step == "manifest":
                barrier.wait()      # both have written their shards; both commit now
        try:
            outcomes[name] = publish(root_of(store_uri), data, rows_per_shard=ROWS_PER_SHARD,
                                     on_step=sync)
        except PublishConflict as exc:
            outcomes[name] = exc

    a_data = other_index.to_arrays()
    b_index = VLQIndex.from_arrays(index.to_arrays())
    b_index.add(np.ones((5, index.dim), np.float32))
    threads = [threading.Thread(target=writer, args=("a", a_data)),
               threading.Thread(target=writer, args=("b", b_index.to_arrays()))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conflicts = [o for o in outcomes.values() if isinstance(o, PublishConflict)]
    winners = [o for o in outcomes.values() if not isinstance(o, PublishConflict)]
    assert len(conflicts) == 1 and len(winners) == 1
    assert "published by another writer" in str(conflicts[0])
    assert root_of(store_uri).current_version() == winners[0].version == "v000002"
    manifest, data = load_arrays(f"{store_uri}/indexes/demo")
    assert manifest.content_id == winners[0].content_id       # never a mix
    assert data.ids.shape[0] == winners[0].ntotal
    fs, path = fs_of(store_uri)
    listed = {s.path.split("/")[-1] for s in winners[0].shards}
    on_disk = {p.rsplit("/", 1)[1] for p in fs.ls(f"{path}/indexes/demo/v000002/shards",
                                                  detail=False)}
    assert on_disk == listed                                   # the loser cleaned up


def test_no_secret_in_anything_written(index, store_uri, caplog):
    import logging
    caplog.set_level(logging.DEBUG)
    publish(root_of(store_uri), index.to_arrays(), source={"uri": "s3://data/base.u8bin"})
    fs, path = fs_of(store_uri)
    for f in fs.find(path):
        assert b"snapline-test-secret" not in fs.cat_file(f)
    assert "snapline-test-secret" not in caplog.text

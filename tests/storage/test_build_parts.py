"""Part-by-part versions: claims, resumable parts, publish (local folder and S3)."""
import numpy as np
import pytest

from indexer import VLQIndex
from shards import Store, publish, publish_parts
from shards.claims import claim_build, record_build
from shards.shard_file import ShardMeta
from shards.shard_writer import find_part, write_part


@pytest.fixture(scope="module")
def model_index(small_data):
    index = VLQIndex(small_data["d"], nlist=16, nedge=4, code_bytes=8, nlambda=16)
    index.train(small_data["learn"])
    return index


def _parts(index, root, version, x, rows_per_part):
    model_version = index.save_model(root.store)
    entries = []
    for number, start in enumerate(range(0, x.shape[0], rows_per_part)):
        stop = min(x.shape[0], start + rows_per_part)
        meta = ShardMeta(model_version, index.shape, "src", start, stop)
        entries.append(write_part(root, version, number,
                                  np.arange(start, stop), *index.encode(x[start:stop]), meta))
    return model_version, entries


def test_claims_resume_the_same_build_and_never_share_a_folder(store_uri):
    root = Store(store_uri).index("idx")
    first = claim_build(root, {"a": 1})
    assert (first.version, first.resumed) == ("v000001", False)
    first = record_build(root, first, model_version="m-x")
    again = claim_build(root, {"a": 1})
    assert (again.version, again.resumed, again.record["model_version"]) == ("v000001", True, "m-x")
    other = claim_build(root, {"a": 2})
    assert (other.version, other.resumed) == ("v000002", False)


def test_parts_publish_and_a_rerun_finds_them(store_uri, model_index, small_data):
    x = small_data["base"][:3000]
    root = Store(store_uri).index("idx")
    claim = claim_build(root, {"a": 1})
    model_version, entries = _parts(model_index, root, claim.version, x, 1000)
    meta = ShardMeta(model_version, model_index.shape, "src", 1000, 2000)
    assert find_part(root, claim.version, 1, meta) == entries[1]
    wrong_range = ShardMeta(model_version, model_index.shape, "src", 1000, 1999)
    assert find_part(root, claim.version, 1, wrong_range) is None  # and removed
    assert find_part(root, claim.version, 1, meta) is None
    entries[1] = _parts(model_index, root, claim.version, x, 1000)[1][1]
    assert root.current_version() is None     # nothing visible before publish
    manifest = publish_parts(root, claim.version, model_version, model_index.shape, entries,
                             {"uri": "src", "rows": 3000})
    assert root.current_version() == claim.version == manifest.version
    loaded = VLQIndex.load(f"{store_uri}/indexes/idx")
    assert loaded.ntotal == 3000
    assert np.array_equal(np.sort(loaded.to_arrays().ids), np.arange(3000))
    single = VLQIndex.from_model(store_uri, model_version)
    single.add(x)
    _, i1 = loaded.search(small_data["query"], k=10, nprobe=8, nlines=32)
    _, i2 = single.search(small_data["query"], k=10, nprobe=8, nlines=32)
    assert np.array_equal(i1, i2)


def test_corrupted_part_is_rewritten_not_reused(tmp_path, model_index, small_data):
    root = Store(str(tmp_path / "store")).index("idx")
    claim = claim_build(root, {"a": 1})
    model_version, entries = _parts(model_index, root, claim.version,
                                    small_data["base"][:1000], 1000)
    loc = root.version_location(claim.version)
    blob = bytearray(loc.read_bytes(entries[0].path))
    blob[len(blob) // 2] ^= 0xFF
    loc.write_bytes(entries[0].path, bytes(blob))
    meta = ShardMeta(model_version, model_index.shape, "src", 0, 1000)
    assert find_part(root, claim.version, 0, meta) is None
    assert loc.listdir("shards") == []


def test_publish_skips_a_claimed_version(tmp_path, model_index, small_data):
    store = Store(str(tmp_path / "store"))
    root = store.index("idx")
    claim = claim_build(root, {"a": 1})
    index = VLQIndex.from_model(store, model_index.save_model(store))
    index.add(small_data["base"][:500])
    manifest = publish(root, index.to_arrays())
    assert claim.version == "v000001" and manifest.version == "v000002"
    # the unfinished build is older than what is published now: a rerun claims anew
    assert claim_build(root, {"a": 1}).version == "v000003"

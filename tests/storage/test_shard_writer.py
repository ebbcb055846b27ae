"""The one write path: publish and a build's parts write identically named shards through
one writer; manifests and shard metadata carry the index shape."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexer import VLQIndex
from shards import Store, load_arrays, publish, publish_parts
from shards.claims import claim_build
from shards.commit import make_manifest
from shards.manifest import Manifest
from shards.models import load_model, model_shape, read_model_meta
from shards.shard_file import SHARD_FORMAT_VERSION, ShardMeta
from shards.shard_writer import encode_part, part_path, save_part, write_part

ROWS = 800


def test_publish_and_publish_parts_name_the_same_rows_alike(tmp_path, index):
    store = Store(str(tmp_path))
    data = index.to_arrays()
    single = publish(store.index("single"), data, rows_per_shard=ROWS)

    parts_root = store.index("parts")
    claim = claim_build(parts_root, {"a": 1})
    meta = ShardMeta(data.model_version, data.shape)
    entries = [write_part(parts_root, claim.version, number, data.ids[rows], data.list_ids[rows],
                          data.lambda_idx[rows], data.codes[rows], meta)
               for number, rows in enumerate(data.part_rows(ROWS))]
    built = publish_parts(parts_root, claim.version, data.model_version, data.shape, entries,
                          {"rows": data.next_id})
    assert [e.path for e in built.shards] == [e.path for e in single.shards]
    assert built.shards == single.shards and len(single.shards) == 3
    assert built.shape == single.shape == index.shape
    assert built.content_id == single.content_id
    _, a = load_arrays(store.index("single"))
    _, b = load_arrays(parts_root)
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.codes, b.codes)


def test_a_part_is_named_after_its_content_and_written_once(tmp_path, index):
    data = index.to_arrays()
    rows = data.part_rows(ROWS)[1]
    part = encode_part(1, data.ids[rows], data.list_ids[rows], data.lambda_idx[rows],
                       data.codes[rows], ShardMeta(data.model_version, data.shape))
    assert part.entry.path == part_path(1, part.entry.sha256)
    assert part.entry.path.startswith("shards/part-00001-") and part.entry.rows == ROWS
    loc = Store(str(tmp_path)).location
    assert save_part(loc, part) is True
    assert save_part(loc, part) is False                    # already there: skipped
    (tmp_path / part.entry.path).write_bytes(part.blob[:-10])  # damaged: written again
    assert save_part(loc, part) is True
    assert (tmp_path / part.entry.path).read_bytes() == part.blob


def test_manifest_json_carries_the_shape(index):
    data = index.to_arrays()
    manifest = make_manifest("v000001", data.model_version, data.shape, [], 0, name="idx")
    doc = json.loads(manifest.to_json())
    assert doc["format_version"] == 3 and doc["shape"] == data.shape.to_dict()
    assert "dim" not in doc                                 # one place for the shape
    again = Manifest.from_json(manifest.to_json(), "m.json")
    assert again == manifest and again.shape == index.shape
    doc["shape"]["nedge"] = 99
    with pytest.raises(ValueError, match="m.json: bad index shape .*nedge"):
        Manifest.from_json(json.dumps(doc).encode(), "m.json")


def test_shard_metadata_carries_the_shape(index):
    data = index.to_arrays()
    meta = ShardMeta(data.model_version, data.shape, "src", 0, 10)
    assert ShardMeta.from_kv(meta.to_kv(), "x") == meta
    rows = data.part_rows(ROWS)[0]
    blob = encode_part(0, data.ids[rows], data.list_ids[rows], data.lambda_idx[rows],
                       data.codes[rows], meta).blob
    kv = pq.read_schema(pa.BufferReader(blob)).metadata
    assert ShardMeta.from_kv(kv, "x") == meta
    assert json.loads(kv[b"snapline.format_version"]) == SHARD_FORMAT_VERSION
    old = {**kv, b"snapline.format_version": b"1"}
    with pytest.raises(ValueError, match="x: unsupported shard format version 1"):
        ShardMeta.from_kv(old, "x")


def test_model_meta_carries_the_shape(tmp_path, index):
    store = Store(str(tmp_path))
    version = index.save_model(store)
    assert model_shape(read_model_meta(store, version)) == index.shape
    meta, _ = load_model(str(tmp_path), version)
    assert model_shape(meta) == index.shape and meta["encoder"]["kind"] == "none"

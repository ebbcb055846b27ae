"""Hostile or broken stores (issue 12, items 8 and 10 and the raw errors): nothing is read,
written or removed outside the store, CURRENT never moves back or sideways, and every
broken file is named in a ValueError (never echoing its content)."""
import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from indexer import VLQIndex
from shards import PublishConflict, Store, load_arrays, publish
from shards.fsio import Location, OutsideStoreError
from shards.registry import retain_versions

SECRET = b"TOP-SECRET-CONTENT\n"


@pytest.fixture()
def store(index, tmp_path):
    """A local store with index 'demo' published twice (v000001, v000002)."""
    root = Store(str(tmp_path / "store")).index("demo")
    publish(root, index.to_arrays(), rows_per_shard=700)
    more = VLQIndex.from_arrays(index.to_arrays())
    more.add(np.ones((3, index.dim), np.float32))
    publish(root, more.to_arrays(), rows_per_shard=700)
    return root


def _outside(tmp_path):
    out = tmp_path / "outside"
    out.mkdir(exist_ok=True)
    return out


# -- symlinks out of the store (item 8) ---------------------------------------------------
def test_retention_never_deletes_through_a_linked_version_folder(store, index, tmp_path):
    publish(store, VLQIndex.from_arrays(index.to_arrays()).to_arrays(), rows_per_shard=500)
    folder = tmp_path / "store" / "indexes" / "demo" / "v000001"
    target = _outside(tmp_path) / "v000001"
    shutil.move(folder, target)
    folder.symlink_to(target)
    with pytest.raises(OutsideStoreError, match="v000001.*outside the store"):
        retain_versions(store, keep=1)
    assert (target / "manifest.json").exists()


def test_publish_never_writes_through_a_linked_version_folder(store, index, tmp_path):
    target = _outside(tmp_path)
    (tmp_path / "store" / "indexes" / "demo" / "v000003").symlink_to(target)
    data = VLQIndex.from_arrays(index.to_arrays()).to_arrays()
    with pytest.raises(OutsideStoreError, match="outside the store"):
        publish(store, data, rows_per_shard=500)
    assert list(target.iterdir()) == []
    assert store.current_version() == "v000002"


@pytest.mark.parametrize("how", ["current", "api"])
def test_current_linked_to_another_file_is_refused_without_its_content(store, tmp_path, how):
    secret = _outside(tmp_path) / "secret.txt"
    secret.write_bytes(SECRET)
    current = tmp_path / "store" / "indexes" / "demo" / "CURRENT"
    current.unlink()
    current.symlink_to(secret)
    with pytest.raises(OutsideStoreError) as err:
        store.current_version() if how == "current" else VLQIndex.load(store.uri)
    assert "TOP-SECRET" not in str(err.value)


def test_current_linked_inside_the_store_is_not_echoed(store, tmp_path):
    current = tmp_path / "store" / "indexes" / "demo" / "CURRENT"
    (tmp_path / "store" / "indexes" / "demo" / "note").write_bytes(SECRET)
    current.unlink()
    current.symlink_to(tmp_path / "store" / "indexes" / "demo" / "note")
    with pytest.raises(ValueError, match="CURRENT: does not hold a version name") as err:
        store.current_version()
    assert "TOP-SECRET" not in str(err.value)


@pytest.mark.parametrize("what", ["shard", "model", "index"])
def test_linked_files_and_folders_are_refused(store, tmp_path, what):
    base = tmp_path / "store"
    manifest = json.loads((base / "indexes/demo/v000002/manifest.json").read_bytes())
    path = {"shard": base / "indexes/demo/v000002" / manifest["shards"][0]["path"],
            "model": base / "models" / manifest["model_version"],
            "index": base / "indexes" / "demo"}[what]
    target = _outside(tmp_path) / path.name
    shutil.move(path, target)
    path.symlink_to(target)
    with pytest.raises(OutsideStoreError, match="outside the store"):
        load_arrays(store)


def test_a_store_that_is_itself_a_link_works(store, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "store")
    assert Store(str(link)).index("demo").current_version() == "v000002"
    assert load_arrays(Store(str(link)).index("demo"))[0].version == "v000002"


def test_a_link_inside_the_store_is_removed_not_followed(tmp_path):
    loc = Location.of(str(tmp_path / "store"))
    loc.write_bytes("a/file", b"x")
    target = _outside(tmp_path) / "keep"
    target.write_bytes(b"keep")
    os.symlink(target, tmp_path / "store" / "a" / "link")
    loc.remove("a", recursive=True)
    assert target.read_bytes() == b"keep" and not (tmp_path / "store" / "a").exists()


# -- publish(version=...) (item 10) -------------------------------------------------------
@pytest.mark.parametrize("version", ["latest", "v1", "V000003", "v00003", "../v000003", "",
                                     "v000003/x", "v-00003"])
def test_publish_refuses_a_version_that_is_not_a_version_name(store, index, version):
    with pytest.raises(ValueError, match="is not a version name like v000001"):
        publish(store, index.to_arrays(), version=version)
    assert store.current_version() == "v000002"


@pytest.mark.parametrize("version", ["v000000", "v000001", "v000002"])
def test_publish_refuses_a_version_not_above_current(store, index, version):
    data = VLQIndex.from_arrays(index.to_arrays()).to_arrays()
    with pytest.raises(PublishConflict, match=f"{version} is not above CURRENT v000002"):
        publish(store, data, version=version, rows_per_shard=500)
    assert store.current_version() == "v000002"


def test_publish_to_a_later_version_moves_current(store, index):
    data = VLQIndex.from_arrays(index.to_arrays()).to_arrays()
    assert publish(store, data, version="v000010", rows_per_shard=500).version == "v000010"
    assert store.current_version() == "v000010"


# -- raw errors now naming the file ---------------------------------------------------------
def _rewrite(path, change):
    doc = json.loads(path.read_bytes())
    change(doc)
    doc.pop("content_id", None)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("key,value", [("next_id", "abc"), ("next_id", None), ("next_id", 1.5),
                                       ("ntotal", True), ("next_id", -1)])
def test_manifest_counts_must_be_integers(store, tmp_path, key, value):
    path = tmp_path / "store/indexes/demo/v000002/manifest.json"
    _rewrite(path, lambda d: d.__setitem__(key, value))
    with pytest.raises(ValueError, match=f"manifest.json: {key} must be a non-negative integer"):
        load_arrays(store)


@pytest.mark.parametrize("field,value", [("rows", "7"), ("bytes", None), ("sha256", 5),
                                         ("sha256", "xyz")])
def test_manifest_shard_entries_are_checked(store, tmp_path, field, value):
    path = tmp_path / "store/indexes/demo/v000002/manifest.json"
    _rewrite(path, lambda d: d["shards"][0].__setitem__(field, value))
    with pytest.raises(ValueError, match=r"manifest.json: shards\[0\]"):
        load_arrays(store)


@pytest.mark.parametrize("blob", [b"\xff\xfe\x00v", b"v000002\x80", b"", b"latest\n",
                                  b"v000002\nv000003\n", SECRET])
def test_current_that_is_not_a_version_name(store, tmp_path, blob):
    (tmp_path / "store/indexes/demo/CURRENT").write_bytes(blob)
    with pytest.raises(ValueError, match="demo/CURRENT: ") as err:
        load_arrays(store.uri)
    assert "TOP-SECRET" not in str(err.value)


def test_shard_that_is_a_directory(store, tmp_path):
    manifest = json.loads((tmp_path / "store/indexes/demo/v000002/manifest.json").read_bytes())
    shard = tmp_path / "store/indexes/demo/v000002" / manifest["shards"][1]["path"]
    shard.unlink()
    shard.mkdir()
    with pytest.raises(ValueError, match=f"{shard.name}: is a directory"):
        load_arrays(store)


@pytest.mark.parametrize("blob", [b"not parquet at all", b"PAR1" + b"\x00" * 64 + b"PAR1"])
def test_shard_that_is_not_parquet(store, tmp_path, blob):
    version = tmp_path / "store/indexes/demo/v000002"
    manifest_path = version / "manifest.json"
    manifest = json.loads(manifest_path.read_bytes())
    (version / manifest["shards"][0]["path"]).write_bytes(blob)

    def change(doc):
        doc["shards"][0].update(bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest())
    _rewrite(manifest_path, change)
    with pytest.raises(ValueError, match=manifest["shards"][0]["path"] + ": not a readable"):
        load_arrays(store)


@pytest.mark.parametrize("uri", ["foo://bucket/x", "nosuchproto://a", "gs://bucket/x"])
def test_unknown_protocol_is_refused_at_creation(uri, index):
    with pytest.raises(ValueError, match=f"store {uri!r}: unknown or unavailable protocol"):
        Store(uri)
    with pytest.raises(ValueError, match="unknown or unavailable protocol"):
        Location.of(uri)
    with pytest.raises(ValueError, match="unknown or unavailable protocol"):
        index.save(uri)


def test_manifest_shape_that_disagrees_with_its_model(store, tmp_path):
    path = tmp_path / "store/indexes/demo/v000002/manifest.json"
    _rewrite(path, lambda d: d["shape"].__setitem__("nlist", d["shape"]["nlist"] * 2))
    with pytest.raises(ValueError, match="manifest.json: the manifest's shape disagrees with "
                                         "its model m-.*: nlist=32 \\(model: 16\\)"):
        load_arrays(store)

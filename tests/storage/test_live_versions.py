"""Live versions (SPEC 7): append, delete, compaction, tombstones, attribute and vector
columns, references across versions and retention, on a local folder and on S3 (moto)."""
import json

import fsspec
import numpy as np
import pyarrow as pa
import pytest

from shards import (EncodedRows, IndexArrays, PublishConflict, Store, load_arrays, publish,
                    publish_append, publish_compaction, publish_delete, referenced_versions,
                    save_copy)
from shards import shard_file
from shards.compaction import plan_compaction
from shards.fsck import fsck
from shards.registry import retain_versions
from shards.vector_store import encode_sq8

BASE_ROWS = 1200
ROWS_PER_SHARD = 300


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def encoded(index):
    """The module index's 2,000 encoded rows (ids 0..1999) with attribute columns of
    several types and float16 stored vectors, in id order."""
    data = index.to_arrays()
    order = np.argsort(data.ids)
    n = order.size
    rng = np.random.default_rng(7)
    attributes = pa.table({
        "year": pa.array(rng.integers(1990, 2030, n), pa.int32()),
        "lang": pa.array(rng.choice(["en", "fr", "de", None], n).tolist(), pa.string()),
        "score": pa.array(rng.random(n), pa.float64()),
        "flag": pa.array(rng.random(n) < 0.5, pa.bool_()),
        "at": pa.array(rng.integers(0, 10**15, n), pa.timestamp("us")),
    })
    vectors = rng.normal(size=(n, data.shape.dim)).astype(np.float16)
    return IndexArrays(model_meta=data.model_meta, model_arrays=data.model_arrays,
                       ids=data.ids[order], list_ids=data.list_ids[order],
                       lambda_idx=data.lambda_idx[order], codes=data.codes[order],
                       next_id=BASE_ROWS, attributes=attributes, vectors=vectors)


def rows_of(data: IndexArrays, ids, **extra) -> EncodedRows:
    """The rows of `data` (in id order 0..n-1) with these ids, as rows to append."""
    ids = np.asarray(ids)
    return EncodedRows(ids=ids, list_ids=data.list_ids[ids], lambda_idx=data.lambda_idx[ids],
                       codes=data.codes[ids], attributes=data.attributes.take(pa.array(ids)),
                       vectors=data.vectors[ids], **extra)


def base_of(data: IndexArrays, n: int = BASE_ROWS) -> IndexArrays:
    ids = np.arange(n)
    return IndexArrays(model_meta=data.model_meta, model_arrays=data.model_arrays, ids=ids,
                       list_ids=data.list_ids[ids], lambda_idx=data.lambda_idx[ids],
                       codes=data.codes[ids], next_id=n,
                       attributes=data.attributes.take(pa.array(ids)), vectors=data.vectors[ids])


def root_of(store_uri, name="live"):
    return Store(store_uri).index(name)


def assert_rows(loaded: IndexArrays, full: IndexArrays, ids) -> None:
    """`loaded` holds exactly the rows of `full` with these ids (any order), every column."""
    order = np.argsort(loaded.ids)
    ids = np.sort(np.asarray(ids))
    np.testing.assert_array_equal(loaded.ids[order], ids)
    np.testing.assert_array_equal(loaded.list_ids[order], full.list_ids[ids])
    np.testing.assert_array_equal(loaded.lambda_idx[order], full.lambda_idx[ids])
    np.testing.assert_array_equal(loaded.codes[order], full.codes[ids])
    assert loaded.vectors.dtype == np.float16
    np.testing.assert_array_equal(loaded.vectors[order], full.vectors[ids])
    got = loaded.attributes.take(pa.array(order))
    assert got.schema == full.attributes.schema
    assert got.equals(full.attributes.take(pa.array(ids)))


def files_under(uri):
    fs, path = fsspec.core.url_to_fs(uri)
    return {p[len(path) + 1:]: fs.cat_file(p) for p in fs.find(path)}


def test_append_lists_old_shards_unchanged(encoded, store_uri):
    root = root_of(store_uri)
    publish(root, base_of(encoded), rows_per_shard=ROWS_PER_SHARD)
    v1_files = files_under(root.version_uri("v000001"))
    manifest = publish_append(root, rows_of(encoded, range(BASE_ROWS, 1500)))
    assert manifest.version == "v000002" == root.current_version()
    assert [s.version for s in manifest.shards] == ["v000001"] * 4 + [None]
    assert files_under(root.version_uri("v000001")) == v1_files      # byte-identical
    v2_files = set(files_under(root.version_uri("v000002")))
    assert v2_files == {"manifest.json", manifest.shards[-1].path}   # no copy of old shards
    assert manifest.next_id == 1500 and manifest.ntotal == 1500
    loaded_manifest, loaded = load_arrays(root)
    assert loaded_manifest.attributes == {"year": "int32", "lang": "string", "score": "double",
                                          "flag": "bool", "at": "timestamp[us]"}
    assert_rows(loaded, encoded, np.arange(1500))
    assert_rows(load_arrays(root.version_uri("v000002"))[1], encoded, np.arange(1500))
    report = fsck(store_uri)
    assert report.clean, [str(f) for f in report.findings]


def test_duplicate_ids_and_columns_are_refused(encoded, tmp_path):
    root = root_of(str(tmp_path))
    publish(root, base_of(encoded), rows_per_shard=ROWS_PER_SHARD)
    with pytest.raises(ValueError, match="id 17 is already in index 'live' v000001"):
        publish_append(root, rows_of(encoded, [1300, 17, 1301]))
    with pytest.raises(ValueError, match="id 1300 appears 2 times among the new rows"):
        publish_append(root, rows_of(encoded, [1300, 1301, 1300]))
    rows = rows_of(encoded, [1300, 1301])
    without_lang = EncodedRows(rows.ids, rows.list_ids, rows.lambda_idx, rows.codes,
                               rows.attributes.drop_columns(["lang"]), rows.vectors)
    with pytest.raises(ValueError, match="attribute column 'lang' .* is missing"):
        publish_append(root, without_lang)
    no_vectors = EncodedRows(rows.ids, rows.list_ids, rows.lambda_idx, rows.codes,
                             rows.attributes)
    with pytest.raises(ValueError, match="stores vectors as float16, the new rows bring None"):
        publish_append(root, no_vectors)
    other_model = rows_of(encoded, [1300], model_version="m-0000")
    with pytest.raises(ValueError, match="encoded with model m-0000"):
        publish_append(root, other_model)
    assert root.current_version() == "v000001" and root.versions() == ["v000001"]


def test_attribute_names_and_vector_types_are_checked(encoded):
    bad = encoded.attributes.rename_columns(["year", "lang", "score", "flag", "a b"])
    with pytest.raises(ValueError, match="column name 'a b' is not a plain identifier"):
        IndexArrays(**{**vars_of(encoded), "attributes": bad})
    with pytest.raises(ValueError, match=r"uint8\[32\], float16\[32\], float32\[32\] or sq8"):
        IndexArrays(**{**vars_of(encoded), "vectors": encoded.vectors.astype(np.float64)})
    with pytest.raises(ValueError, match="has 3 rows, expected one per row"):
        IndexArrays(**{**vars_of(encoded), "attributes": encoded.attributes.slice(0, 3)})


def vars_of(data: IndexArrays) -> dict:
    return {k: getattr(data, k) for k in ("model_meta", "model_arrays", "ids", "list_ids",
                                          "lambda_idx", "codes", "next_id", "attributes",
                                          "vectors")}


def test_delete_drops_exactly_the_deleted_rows(encoded, store_uri):
    root = root_of(store_uri)
    publish(root, base_of(encoded), rows_per_shard=ROWS_PER_SHARD)
    version, removed = publish_delete(root, [3, 700, 5000, 3, 1199])
    assert (version, removed) == ("v000002", 3)         # 5000 is unknown: not counted
    manifest, loaded = load_arrays(root)
    np.testing.assert_array_equal(loaded.tombstones, np.array([3, 700, 1199], np.uint64))
    assert_rows(loaded, encoded, np.setdiff1d(np.arange(BASE_ROWS), [3, 700, 1199]))
    assert all(s.version == "v000001" for s in manifest.shards)
    assert manifest.tombstones.version is None and manifest.deleted == 3
    assert publish_delete(root, [3, 4000]) == ("v000002", 0)     # nothing live: no version
    assert root.versions() == ["v000001", "v000002"]
    appended = publish_append(root, rows_of(encoded, range(BASE_ROWS, 1250)))
    assert appended.tombstones.version == "v000002"              # carried over, referenced
    _, loaded = load_arrays(root)
    assert_rows(loaded, encoded, np.setdiff1d(np.arange(1250), [3, 700, 1199]))
    with pytest.raises(ValueError, match="id 700 was deleted but its row is still stored"):
        publish_append(root, rows_of(encoded, [700]))


def test_shard_subsets_drop_their_deleted_rows(encoded, tmp_path):
    root = root_of(str(tmp_path))
    publish(root, base_of(encoded), rows_per_shard=ROWS_PER_SHARD)
    publish_delete(root, np.arange(0, BASE_ROWS, 7))
    parts = [load_arrays(root, [i])[1] for i in range(4)]
    ids = np.concatenate([p.ids for p in parts])
    assert sorted(ids.tolist()) == [i for i in range(BASE_ROWS) if i % 7]


def test_compaction_keeps_the_live_rows_in_fewer_shards(encoded, store_uri):
    root = root_of(store_uri)
    publish(root, base_of(encoded), rows_per_shard=ROWS_PER_SHARD)
    for start in range(BASE_ROWS, 1600, 50):                    # 8 small appended shards
        publish_append(root, rows_of(encoded, range(start, start + 50)))
    first_shard = load_arrays(root, [0])[1].ids
    deleted = np.concatenate([first_shard[: len(first_shard) // 2], [1210, 1590]])
    publish_delete(root, deleted)
    live = np.setdiff1d(np.arange(1600), deleted)
    manifest_before, before = load_arrays(root)
    assert len(manifest_before.shards) == 12
    report = publish_compaction(root, min_deleted=0.2)
    assert report.changed and report.previous_version == manifest_before.version
    assert report.version == root.current_version()
    assert report.shards_before == 12 and report.shards_after == 6
    assert report.groups == ((0,), (4, 5, 6, 7, 8, 9), (10, 11))
    assert report.rows_removed == deleted.size and report.tombstones_after == 0
    manifest, after = load_arrays(root)
    assert [s.version for s in manifest.shards[1:4]] == ["v000001"] * 3   # untouched
    assert manifest.tombstones is None and after.tombstones.size == 0
    assert_rows(after, encoded, live)
    assert_rows(before, encoded, live)
    capped = publish_compaction(root, min_deleted=0.2, max_shards=2)
    assert capped.shards_after == 2
    assert_rows(load_arrays(root)[1], encoded, live)
    again = publish_compaction(root, max_shards=2)
    assert not again.changed and again.version == capped.version


def test_compaction_plan_bounds_the_shard_count():
    assert plan_compaction([100, 10, 10, 10, 100, 40, 40], 100, None) == \
        [[0], [1, 2, 3], [4], [5, 6]]
    assert plan_compaction([10] * 25, 100, None) == [list(range(i, i + 10)) for i in (0, 10)] \
        + [list(range(20, 25))]
    assert plan_compaction([100, 100, 5, 100], 100, 2) == [[0, 1, 2], [3]]   # ties: first


STEPS = {"append": ["shard", "manifest", "current", "swap"],
         "delete": ["tombstones", "manifest", "current"],
         "compaction": ["shard", "manifest", "current"]}


def _run(op, root, encoded, on_step):
    if op == "append":
        return publish_append(root, rows_of(encoded, range(BASE_ROWS, 1400)),
                              rows_per_shard=100, on_step=on_step).version
    if op == "delete":
        return publish_delete(root, range(0, 600, 3), on_step=on_step)[0]
    return publish_compaction(root, max_shards=2, on_step=on_step).version


@pytest.mark.parametrize("op,step", [(op, step) for op, steps in STEPS.items() for step in steps])
def test_a_crash_leaves_current_and_a_rerun_completes(encoded, tmp_path, op, step):
    root = root_of(str(tmp_path))
    publish(root, base_of(encoded), rows_per_shard=ROWS_PER_SHARD)
    publish_delete(root, [1, 2, 899])                             # v000002
    _, served = load_arrays(root)

    def crash(name, *args):
        if name == step and (name != "shard" or args[0] == 1):
            raise Interrupt(name)

    with pytest.raises(Interrupt):
        _run(op, root, encoded, crash)
    assert root.current_version() == "v000002"
    assert_rows(load_arrays(root)[1], encoded, served.ids)
    assert _run(op, root, encoded, lambda *a: None) == "v000003" == root.current_version()
    expected = {"append": np.concatenate([served.ids, np.arange(BASE_ROWS, 1400)]),
                "delete": np.setdiff1d(served.ids, np.arange(0, 600, 3)),
                "compaction": served.ids}[op]
    assert_rows(load_arrays(root)[1], encoded, expected)


def test_a_crash_on_s3_leaves_current_and_a_rerun_completes(encoded, s3_bucket):
    root = root_of(f"s3://{s3_bucket}/store")
    publish(root, base_of(encoded), rows_per_shard=ROWS_PER_SHARD)

    def crash(name, *args):
        if name == "current":
            raise Interrupt(name)

    with pytest.raises(Interrupt):
        _run("append", root, encoded, crash)
    assert root.current_version() == "v000001"
    assert _run("append", root, encoded, lambda *a: None) == "v000002"
    assert_rows(load_arrays(root)[1], encoded, np.arange(1400))


def test_a_concurrent_version_makes_the_append_fail_cleanly(encoded, tmp_path):
    root = root_of(str(tmp_path))
    publish(root, base_of(encoded), rows_per_shard=ROWS_PER_SHARD)

    def delete_meanwhile(name, *args):
        if name == "manifest":
            assert publish_delete(root, [5]) == ("v000002", 1)

    with pytest.raises(PublishConflict):
        _run("append", root, encoded, delete_meanwhile)
    assert root.current_version() == "v000002"
    assert set(files_under(root.version_uri("v000002"))) == \
        {"manifest.json", load_arrays(root)[0].tombstones.path}   # the loser's shards removed
    assert _run("append", root, encoded, lambda *a: None) == "v000003"
    assert_rows(load_arrays(root)[1], encoded, np.setdiff1d(np.arange(1400), [5]))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_tombstone_file_is_refused(encoded, store_uri, damage):
    root = root_of(store_uri)
    publish(root, base_of(encoded), rows_per_shard=ROWS_PER_SHARD)
    publish_delete(root, [10, 20, 30])
    manifest, _ = load_arrays(root)
    fs, path = fsspec.core.url_to_fs(f"{root.version_uri('v000002')}/{manifest.tombstones.path}")
    blob = bytearray(fs.cat_file(path))
    blob[8] ^= 1                                       # 20 -> 21: still sorted
    fs.pipe_file(path, bytes(blob) if damage == "flip" else bytes(blob[:-8]))
    message = "sha256 checksum mismatch" if damage == "flip" else "truncated or replaced"
    with pytest.raises(ValueError, match=f"tombstones/.*u64: .*{message}"):
        load_arrays(root)


def test_format_2_manifest_and_shards_still_load(encoded, tmp_path, monkeypatch):
    data = encoded
    plain = IndexArrays(data.model_meta, data.model_arrays, data.ids[:500], data.list_ids[:500],
                        data.lambda_idx[:500], data.codes[:500], 500)
    monkeypatch.setattr(shard_file, "SHARD_FORMAT_VERSION", 2)   # an older snapline's files
    root = root_of(str(tmp_path))
    publish(root, plain, rows_per_shard=ROWS_PER_SHARD)
    monkeypatch.undo()
    path = tmp_path / "indexes" / "live" / "v000001" / "manifest.json"
    doc = json.loads(path.read_text())
    doc["format_version"] = 2
    for key in ("tombstones", "attributes", "vectors"):
        doc.pop(key)
    for shard in doc["shards"]:
        shard.pop("version")
    path.write_text(json.dumps(doc))
    manifest, loaded = load_arrays(root)
    np.testing.assert_array_equal(np.sort(loaded.ids), np.arange(500))
    assert loaded.attributes is None and loaded.vectors is None and loaded.tombstones.size == 0
    doc["shards"][0]["version"] = "v000000"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="malformed manifest"):
        load_arrays(root)


def test_retention_keeps_the_folders_a_kept_version_references(encoded, store_uri):
    root = root_of(store_uri)
    publish(root, base_of(encoded), rows_per_shard=ROWS_PER_SHARD)
    publish_append(root, rows_of(encoded, range(BASE_ROWS, 1300)))
    publish_delete(root, [1, 1250])                               # v000003
    assert referenced_versions(root, ["v000003"]) == {"v000001", "v000002"}
    assert retain_versions(root, keep=1) == []
    assert_rows(load_arrays(root)[1], encoded, np.setdiff1d(np.arange(1300), [1, 1250]))
    report = publish_compaction(root, max_shards=1)               # v000004: all rewritten
    assert report.shards_after == 1
    assert retain_versions(root, keep=1) == ["v000001", "v000002", "v000003"]
    assert_rows(load_arrays(root)[1], encoded, np.setdiff1d(np.arange(1300), [1, 1250]))


def test_copies_hold_columns_and_tombstones_but_no_references(encoded, tmp_path):
    data = IndexArrays(**{**vars_of(base_of(encoded, 400)), "tombstones": [9, 3]})
    save_copy(str(tmp_path / "copy"), data, rows_per_shard=ROWS_PER_SHARD)
    _, loaded = load_arrays(str(tmp_path / "copy"))
    np.testing.assert_array_equal(loaded.tombstones, [3, 9])
    assert_rows(loaded, encoded, np.setdiff1d(np.arange(400), [3, 9]))
    path = tmp_path / "copy" / "manifest.json"
    doc = json.loads(path.read_text())
    doc["shards"][0]["version"] = "v000001"
    doc.pop("content_id")
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="self-contained copy may only list its own files"):
        load_arrays(str(tmp_path / "copy"))


def test_a_random_sequence_of_changes_keeps_exactly_the_live_rows(encoded, tmp_path):
    """Appends, deletes (live, deleted and unknown ids) and compactions in a seeded random
    order: after each, loading gives exactly the rows still live, every column."""
    rng = np.random.default_rng(11)
    root = root_of(str(tmp_path))
    publish(root, base_of(encoded, 400), rows_per_shard=100)
    live, next_new, done = set(range(400)), 400, []
    for step in range(14):
        op = rng.choice(["append", "delete", "compact"], p=[0.45, 0.35, 0.2])
        if op == "append" and next_new < 2000:
            count = int(rng.integers(1, 120))
            ids = np.arange(next_new, min(next_new + count, 2000))
            rng.shuffle(ids)
            publish_append(root, rows_of(encoded, ids), rows_per_shard=60)
            live |= set(ids.tolist())
            next_new += ids.size
        elif op == "delete":
            ids = rng.integers(0, next_new + 50, int(rng.integers(1, 80)))
            _, removed = publish_delete(root, ids)
            assert removed == len(live & set(ids.tolist()))
            live -= set(ids.tolist())
        else:
            cap = int(rng.integers(3, 8))
            report = publish_compaction(root, min_deleted=float(rng.choice([0.0, 0.2, 0.5])),
                                        max_shards=cap, rows_per_shard=100)
            assert report.shards_after <= cap
        done.append(str(op))
        manifest, loaded = load_arrays(root)
        assert_rows(loaded, encoded, sorted(live))
        assert manifest.ntotal - manifest.deleted == len(live)    # every tombstone hides a row
    assert {"append", "delete", "compact"} <= set(done)
    assert fsck(str(tmp_path)).clean


def test_a_shard_without_the_index_columns_is_refused_on_load(encoded, tmp_path):
    """Every shard of a version holds the columns its manifest records: a shard of an
    index without attributes, slipped into one with them, is an error naming it."""
    data = encoded
    plain = IndexArrays(data.model_meta, data.model_arrays, data.ids[:100], data.list_ids[:100],
                        data.lambda_idx[:100], data.codes[:100], 100)
    publish(root_of(str(tmp_path), "plain"), plain)
    publish(root_of(str(tmp_path)), base_of(encoded, 300), rows_per_shard=ROWS_PER_SHARD)
    src = tmp_path / "indexes" / "plain" / "v000001"
    dst = tmp_path / "indexes" / "live" / "v000001"
    entry = json.loads((src / "manifest.json").read_text())["shards"][0]
    (dst / entry["path"]).write_bytes((src / entry["path"]).read_bytes())
    doc = json.loads((dst / "manifest.json").read_text())
    doc["shards"].append(entry)
    doc["ntotal"] += entry["rows"]
    doc.pop("content_id")
    (dst / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"shard 1 \(shards/part-00000-.*attribute columns "
                                         r"missing \['at', 'flag', 'lang', 'score', 'year'\]"):
        load_arrays(root_of(str(tmp_path)))


def test_sq8_rows_append_compact_and_load_bitwise(encoded, store_uri):
    """An sq8 store (dim + 2 bytes a row) is a format like the others: published,
    appended, compacted and loaded as written; another format's rows are refused."""
    rows = encode_sq8(encoded.vectors.astype(np.float32))
    sq8 = IndexArrays(**{**vars_of(encoded), "vectors": rows})
    root = root_of(store_uri, "sq8")
    publish(root, IndexArrays(**{**vars_of(base_of(encoded)), "vectors": rows[:BASE_ROWS]}),
            rows_per_shard=ROWS_PER_SHARD)
    appended = rows_of(encoded, range(BASE_ROWS, 1600))
    manifest = publish_append(root, EncodedRows(**{**vars(appended),
                                                   "vectors": rows[BASE_ROWS:1600]}))
    assert manifest.vectors == "sq8"
    with pytest.raises(ValueError, match="stores vectors as sq8, the new rows bring float16"):
        publish_append(root, rows_of(encoded, range(1600, 1700)))
    publish_delete(root, np.arange(0, 1600, 3))
    assert publish_compaction(root, min_deleted=0.1, max_shards=2).changed
    m, loaded = load_arrays(root)
    assert m.vectors == "sq8" and loaded.store == "sq8"
    order = np.argsort(loaded.ids)
    live = np.setdiff1d(np.arange(1600), np.arange(0, 1600, 3))
    np.testing.assert_array_equal(loaded.ids[order], live)
    np.testing.assert_array_equal(loaded.vectors[order], sq8.vectors[live])
    report = fsck(store_uri)
    assert report.clean, [str(f) for f in report.findings]

"""Re-encoding a live index on a real local Ray (issue 15 point 6): appended rows,
attribute columns and stored vectors are kept, deleted ids stay gone, a shard whose
vectors cannot be recovered is refused before any work, and a re-encode whose base
version was replaced meanwhile publishes nothing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import ray

from cluster.build.config import build_config_from_dict
from cluster.build.pipeline import check_build, run_build
from cluster.exit_status import exit_code, one_line
from cluster.updates.reencode import (CurrentMovedError, ReencodeRequest, StaleCheckError,
                                      check_reencode, reencode, run_reencode, train_for_index)
from indexer import VLQIndex
from shards import (EncodedRows, Store, load_arrays, open_vectors, publish, publish_append,
                    publish_delete, write_vectors)
from shards.live_versions import read_base
from shards.vector_store import decode_rows, encode_sq8

pytestmark = pytest.mark.slow
BUNDLED = Path(__file__).resolve().parents[2] / "data" / "sift-small"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, namespace="snapline-test")
    yield
    ray.shutdown()


def attributes(ids: np.ndarray) -> pa.Table:
    return pa.table({"lang": pa.array(np.array(["en", "fr", "de"])[ids % 3]),
                     "year": pa.array((2000 + ids % 25).astype(np.int32))})


def encoded(model_index: VLQIndex, x: np.ndarray, ids: np.ndarray, with_columns: bool):
    list_ids, lambda_idx, codes = model_index.encode(x)
    return EncodedRows(ids=ids, list_ids=list_ids, lambda_idx=lambda_idx, codes=codes,
                       attributes=attributes(ids) if with_columns else None,
                       vectors=x if with_columns else None)


def exhaustive(index: VLQIndex) -> dict:
    return {"nprobe": index.nlist, "nlines": index.nlist * index.nedge}


def test_reencode_keeps_appended_rows_attributes_and_stored_vectors_and_drops_deleted(
        local_ray, tmp_path, small_data):
    """No source at all: every vector comes from the stored column."""
    store, d = str(tmp_path / "store"), small_data["d"]
    root = Store(store).index("live")
    x = small_data["base"][:9000]
    ids = np.concatenate([np.arange(6000), 100_000 + np.arange(3000)])
    old = VLQIndex(d, nlist=16, nedge=4, code_bytes=8, nlambda=32, stored_vectors="float32")
    old.train(small_data["learn"])
    old.add(x[:6000], attributes=attributes(ids[:6000]))
    publish(root, old.to_arrays(), rows_per_shard=2000)                 # v1: 3 shards
    publish_append(root, encoded(old, x[6000:], ids[6000:], True), rows_per_shard=1000)
    base = read_base(root)                                              # v2: + 3 appended
    last_shard = base.stored[-1].astype(np.int64)
    deleted = np.unique(np.concatenate([ids[:6000:7], ids[6000::11], last_shard]))
    publish_delete(root, deleted)                                       # v3: last shard all gone
    new = VLQIndex(d, nlist=24, nedge=4, code_bytes=16, nlambda=32)
    new.train(small_data["base"][10_000:16_000])
    new_model = new.save_model(store, extra_meta={"build": {"name": "live"}})
    wrong = VLQIndex(d, nlist=16, nedge=4, code_bytes=8, nlambda=32, metric="ip")
    wrong.train(small_data["learn"])
    with pytest.raises(StaleCheckError, match="metric 'ip', index 'live' ranks by 'l2'"):
        check_reencode(ReencodeRequest(store, "live", model=wrong.save_model(store)))
    # this Ray runs no dashboard, hence no job server: the scheduler (which submits its
    # re-encodes as Ray jobs) is refused before any actor starts
    from cluster.updates.scheduler import SCHEDULER_NAMESPACE, scheduler_name, start_scheduler
    with pytest.raises(ConnectionError, match="runs no job server"):
        start_scheduler(ReencodeRequest(store, "live", if_stale=True), every_s=60)
    with pytest.raises(ValueError):
        ray.get_actor(scheduler_name("live"), namespace=SCHEDULER_NAMESPACE)

    summary = reencode(ReencodeRequest(store, "live", model=new_model))
    assert (summary["previous_version"], summary["version"]) == ("v000003", "v000004")
    assert summary["vectors_from"] == "stored" and summary["rows_dropped"] == deleted.size
    assert summary["shards"] == 5 and summary["shards_dropped"] == 1
    manifest, data = load_arrays(root)
    assert manifest.model_version == new_model and manifest.tombstones is None
    assert manifest.vectors == "float32" and manifest.attributes == {"lang": "string",
                                                                     "year": "int32"}
    live = np.setdiff1d(ids, deleted)
    order = np.argsort(data.ids)
    assert np.array_equal(data.ids[order], live)                        # each live id once
    at = np.searchsorted(ids, data.ids)                                 # ids are sorted
    assert np.array_equal(data.vectors, x[at])
    assert data.attributes.equals(attributes(data.ids))
    assert manifest.next_id == 103_000
    codes = new.encode(x[at])                                           # the new model's codes
    assert all(np.array_equal(a, b) for a, b in
               zip(codes, (data.list_ids, data.lambda_idx, data.codes)))

    index = VLQIndex.load(root)
    _, found = index.search(x[np.searchsorted(ids, deleted[:300])], k=10, **exhaustive(index))
    assert not np.isin(found, deleted).any()                            # deleted: not findable
    queries = x[np.searchsorted(ids, live[::40])]
    _, top = index.search(queries, k=1, refine=50, **exhaustive(index))
    assert np.array_equal(top[:, 0], live[::40])                        # its own stored vector
    _, hits = index.search(queries, k=10, filter="lang = 'en' AND year >= 2010",
                           **exhaustive(index))
    hits = hits[hits >= 0]
    assert hits.size == queries.shape[0] * 10 and not np.isin(hits, deleted).any()
    assert ((hits % 3 == 0) & (hits % 25 >= 10)).all()


def test_reencode_from_the_source_refuses_a_moved_current_and_an_unrecoverable_shard(
        local_ray, tmp_path):
    """Built by the distributed build (no stored vectors): vectors from the source rows."""
    source = str(tmp_path / "base.u8bin")
    x = open_vectors(str(BUNDLED / "base.u8bin")).read()
    write_vectors(source, x)
    store = str(tmp_path / "store")
    root = Store(store).index("sift")
    run_build(check_build(build_config_from_dict({
        "name": "sift", "store": store, "source": {"uri": source},
        "sample": {"size": 6000, "seed": 0}, "index": {"nlist": 48, "nedge": 8, "code_bytes": 16},
        "shards": {"rows_per_shard": 5000}, "workers": {"encode": 2}})))
    new_model = train_for_index(store, "sift", sample_size=7000, seed=5)["model_version"]
    first, second = np.arange(0, 20000, 9), np.arange(5, 5000, 4)
    assert publish_delete(root, first)[0] == "v000002"

    def delete_meanwhile(step, *_):
        if step == "commit":
            publish_delete(root, second)                                # lands as v000004

    with pytest.raises(CurrentMovedError) as refused:
        run_reencode(check_reencode(ReencodeRequest(store, "sift", model=new_model)),
                     on_step=delete_meanwhile)
    line = one_line("snapline reencode", refused.value)
    assert "CURRENT moved from v000002 to v000004" in line and "\n" not in line
    assert exit_code(refused.value) == 1
    assert root.current_version() == "v000004"
    assert not (Path(store) / "indexes/sift/v000003").exists()          # the claim is gone

    summary = reencode(ReencodeRequest(store, "sift", model=new_model))  # the newer one
    assert (summary["previous_version"], summary["version"]) == ("v000004", "v000005")
    assert summary["vectors_from"] == "source"
    deleted = np.union1d(first, second)
    assert summary["rows_dropped"] == deleted.size
    manifest, data = load_arrays(root)
    assert manifest.model_version == new_model and manifest.tombstones is None
    assert np.array_equal(np.sort(data.ids), np.setdiff1d(np.arange(20000), deleted))
    fresh = VLQIndex.from_model(store, new_model)
    codes = fresh.encode(x[data.ids])                                   # id == source row
    assert all(np.array_equal(a, b) for a, b in
               zip(codes, (data.list_ids, data.lambda_idx, data.codes)))
    index = VLQIndex.load(root)
    _, found = index.search(x[deleted[:300]], k=10, **exhaustive(index))
    assert not np.isin(found, deleted).any()

    appended = encoded(fresh, x[:500], 50_000 + np.arange(500), False)
    publish_append(root, appended, source_uri="")                       # v000006, no source
    with pytest.raises(StaleCheckError, match=r"shard 4 \(v000006/shards/part-00004-.*no "
                                              r"recoverable source"):
        reencode(ReencodeRequest(store, "sift", model=new_model))
    assert root.current_version() == "v000006"
    assert sorted(p.name for p in Path(store).glob("indexes/sift/v*")) == \
        [f"v{i:06d}" for i in (1, 2, 4, 5, 6)]                          # no folder claimed


def test_the_check_reads_where_each_shard_came_from(store_uri, tmp_path, small_data):
    """No Ray: the plan from each shard's footer, on a local folder and on S3."""
    source = str(tmp_path / "base.fbin")
    x = small_data["base"][:3000]
    write_vectors(source, x)
    index = VLQIndex(small_data["d"], nlist=16, nedge=4, code_bytes=8, nlambda=32)
    index.train(small_data["learn"])
    index.add(x)
    root = Store(store_uri).index("idx")
    model = publish(root, index.to_arrays(), rows_per_shard=1000,
                    source={"uri": source, "rows": 3000}).model_version
    plan = check_reencode(ReencodeRequest(store_uri, "idx", model=model)).plan
    assert plan.vectors_from == "source"
    assert [(s.shard, s.source["uri"], s.row_start, s.row_stop) for s in plan.inputs] == \
        [(i, source, 0, 3000) for i in range(3)]
    publish_append(root, encoded(index, x[:10], 9000 + np.arange(10), False),
                   source_uri="s3://elsewhere/new.fbin")
    with pytest.raises(StaleCheckError, match=r"shard 3 \(v000002/shards/part-00003-.*written "
                                              r"from 's3://elsewhere/new.fbin' without a "
                                              r"source row range"):
        check_reencode(ReencodeRequest(store_uri, "idx", model=model))


def test_reencode_of_an_sq8_store_encodes_its_decoded_rows_and_keeps_them(
        local_ray, tmp_path, small_data):
    store, d = str(tmp_path / "store"), small_data["d"]
    root = Store(store).index("sq8")
    x = small_data["base"][:4000]
    old = VLQIndex(d, nlist=16, nedge=4, code_bytes=8, nlambda=32, stored_vectors="sq8")
    old.train(small_data["learn"])
    old.add(x)
    publish(root, old.to_arrays(), rows_per_shard=1500)
    new = VLQIndex(d, nlist=24, nedge=4, code_bytes=16, nlambda=32)
    new.train(small_data["base"][10_000:16_000])
    new_model = new.save_model(store, extra_meta={"build": {"name": "sq8"}})
    summary = reencode(ReencodeRequest(store, "sq8", model=new_model))
    assert summary["vectors_from"] == "stored"
    manifest, data = load_arrays(root)
    assert manifest.model_version == new_model and manifest.vectors == "sq8"
    order = np.argsort(data.ids)
    np.testing.assert_array_equal(data.vectors[order], encode_sq8(x))   # kept as stored
    codes = new.encode(decode_rows(data.vectors, "sq8", d))             # from the decoded rows
    assert all(np.array_equal(a, b) for a, b in
               zip(codes, (data.list_ids, data.lambda_idx, data.codes)))
    index = VLQIndex.load(root)
    _, top = index.search(x[::50], k=1, refine=50, **exhaustive(index))
    assert np.array_equal(top[:, 0], np.arange(0, 4000, 50))

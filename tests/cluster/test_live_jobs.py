"""The live jobs (cluster.live) on a real local Ray: append (encode actors, one publish),
delete and compact through the `snapline` entry (`cluster.cli.main`, in-process), on a
local store and on S3 (moto); the published index searched exhaustively equals brute
force over the live rows, with and without a filter."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from cluster import cli
from cluster.build.config import build_config_from_dict
from cluster.build.pipeline import check_build, run_build
from cluster.live import AppendRequest, append
from indexer import VLQIndex
from shards import EncodedRows, Store, publish, publish_append, resolve, write_vectors

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
D, NLIST, NEDGE = 32, 16, 4
EVERY_LINE = dict(nprobe=NLIST, nlines=NLIST * NEDGE)
LANGS = ["en", "fr", "de"]


class Interrupt(Exception):
    pass


def blobs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(size=(20, D)).astype(np.float32) * 4
    return (centers[rng.integers(0, 20, n)] + rng.normal(size=(n, D))).astype(np.float32)


def attrs(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"lang": pa.array(rng.choice(LANGS, n).tolist(), pa.string()),
                     "year": pa.array(rng.integers(1990, 2030, n), pa.int64())})


@pytest.fixture(scope="module")
def local_ray(s3_endpoint):
    """One Ray for the module, started after the S3 endpoint (its workers see it)."""
    ray.init(num_cpus=2, include_dashboard=False, namespace="snapline-live-test")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def models():
    """A trained model per metric (no rows): the arrays an index starts from."""
    out = {}
    for metric in ("l2", "cosine"):
        index = VLQIndex(D, nlist=NLIST, nedge=NEDGE, code_bytes=8, nlambda=32, metric=metric,
                         stored_vectors="float32")
        index.train(blobs(3000, 1))
        out[metric] = index.to_arrays()
    return out


class Live:
    """A published index with attribute columns and stored vectors, and what it should
    hold: every row ever added (id -> vector, attributes) and the deleted ids."""

    def __init__(self, store: str, data, n: int = 1200, rows_per_shard: int = 400):
        self.store, self.name = store, "live"
        self.root = Store(store).index(self.name)
        index = VLQIndex.from_arrays(data)
        self.x, self.ids, self.table = blobs(n, 2), np.arange(n), attrs(n, 3)
        index.add(self.x, attributes=self.table)
        self.metric = index.metric
        publish(self.root, index.to_arrays(), rows_per_shard=rows_per_shard)
        self.deleted = np.empty(0, np.int64)

    def added(self, x, ids, table) -> None:
        self.x = np.concatenate([self.x, x])
        self.ids = np.concatenate([self.ids, ids])
        self.table = pa.concat_tables([self.table, table])

    def cli(self, command: str, *args: str, code: int = 0, capsys=None) -> dict:
        status = cli.main([command, "--store", self.store, "--name", self.name, *args])
        out = capsys.readouterr()
        assert status == code, out.err
        if code:
            return {"err": out.err}
        assert out.out.strip().splitlines()[-1].startswith(f"snapline {command}")
        return json.loads(out.out[:out.out.rstrip().rindex("\n")])

    def live(self, where=None) -> tuple[np.ndarray, np.ndarray]:
        keep = ~np.isin(self.ids, self.deleted)
        if where is not None:
            keep &= where(self.table)
        return self.x[keep], self.ids[keep]

    def check_search(self, where_sql=None, where=None, k=10) -> None:
        """Exhaustive search, refined over every candidate (exact), equals brute force."""
        index = VLQIndex.load(self.root)
        x, ids = self.live(where)
        assert index.ntotal == len(self.live()[1])
        q = blobs(20, 4)
        _, got = index.search(q, k=k, refine=index.ntotal, filter=where_sql, **EVERY_LINE)
        if self.metric == "cosine":
            unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)   # noqa: E731
            score = -(unit(q) @ unit(x).T)
        else:
            score = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        want = ids[np.argsort(score, axis=1, kind="stable")[:, :k]]
        np.testing.assert_array_equal(got, want)


def write_ids(path: Path, ids) -> str:
    if path.suffix == ".npy":
        np.save(path, np.asarray(ids, dtype=np.int64))
    else:
        pq.write_table(pa.table({"id": pa.array(ids, pa.int64())}), path)
    return str(path)


def put(local: Path, store: str) -> str:
    """The file as the jobs read it: beside the store (on S3 for an S3 store)."""
    if not store.startswith("s3://"):
        return str(local)
    import fsspec

    uri = f"{store.rsplit('/', 1)[0]}/inputs/{local.name}"
    fsspec.filesystem("s3").put(str(local), uri)
    return uri


@pytest.mark.parametrize("where, metric", [("local", "l2"), ("s3", "cosine")])
def test_append_delete_compact_equal_brute_force(local_ray, models, tmp_path, request,
                                                 capsys, where, metric):
    store = str(tmp_path / "store") if where == "local" else \
        f"s3://{request.getfixturevalue('s3_bucket')}/store"
    live = Live(store, models[metric])
    # append 1: a .fbin source, shuffled --ids (.npy), attributes keyed by id (other order)
    x1, ids1, t1 = blobs(900, 5), 5000 + np.random.default_rng(6).permutation(900), attrs(900, 7)
    write_vectors(str(tmp_path / "new.fbin"), x1)
    order = np.random.default_rng(8).permutation(900)
    pq.write_table(t1.take(pa.array(order)).append_column("id", pa.array(ids1[order])),
                   tmp_path / "attrs.parquet")
    s = live.cli("append", "--source", put(tmp_path / "new.fbin", store), "--ids",
                 put(Path(write_ids(tmp_path / "ids.npy", ids1)), store), "--attributes",
                 put(tmp_path / "attrs.parquet", store), "--workers", "2", capsys=capsys)
    live.added(x1, ids1, t1)
    assert (s["version"], s["previous_version"], s["rows_appended"]) == ("v000002", "v000001", 900)
    assert s["new_shards"] == 3 and s["shards"] == 6      # 400-row shards, old ones kept
    manifest, _, _ = resolve(live.root)
    assert [e.version for e in manifest.shards[:3]] == ["v000001"] * 3
    # append 2: a Parquet source whose other columns are the attributes, default ids
    x2, t2 = blobs(300, 9), attrs(300, 10)
    pq.write_table(t2.append_column("emb", pa.FixedSizeListArray.from_arrays(
        pa.array(x2.ravel()), D)).append_column("note", pa.array(["x"] * 300)),
        tmp_path / "more.parquet")
    s = live.cli("append", "--source", put(tmp_path / "more.parquet", store), capsys=capsys)
    live.added(x2, np.arange(5900, 6200), t2)         # next_id was past the largest id
    assert (s["first_id"], s["last_id"], s["ntotal"]) == (5900, 6199, 2400)
    # delete: base rows (most of shard 0), appended rows, and unknown ids
    gone = np.concatenate([np.arange(0, 350), ids1[:50], [6150]])
    s = live.cli("delete", "--ids", put(Path(write_ids(tmp_path / "del.parquet", np.concatenate(
        [gone, [10**9, 7777]]))), store), capsys=capsys)
    live.deleted = gone
    assert (s["version"], s["removed"], s["ignored"]) == ("v000004", gone.size, 2)
    live.check_search()
    live.check_search("lang = 'en' AND year >= 2005",
                      lambda t: (np.array(t["lang"].to_pylist()) == "en")
                      & (t["year"].to_numpy() >= 2005))
    s = live.cli("compact", "--min-deleted", "0.1", capsys=capsys)
    assert s["changed"] and s["version"] == "v000005" and 0 in s["rewritten"]
    assert s["rows_removed"] >= 350 and s["shards_after"] <= s["shards_before"]
    live.check_search()
    live.check_search("year < 2000", lambda t: t["year"].to_numpy() < 2000)
    assert live.cli("compact", capsys=capsys)["changed"] is False


def test_build_then_a_killed_append_and_its_rerun(local_ray, tmp_path, capsys):
    """A Ray build (no attributes, no stored vectors), then an append stopped between
    encode and publish: CURRENT stays, the rerun completes the version."""
    store = str(tmp_path / "store")
    base = blobs(3000, 11)
    write_vectors(str(tmp_path / "base.fbin"), base)
    built = run_build(check_build(build_config_from_dict({
        "name": "live", "store": store, "source": {"uri": str(tmp_path / "base.fbin")},
        "sample": {"size": 3000, "seed": 0}, "index": {"nlist": NLIST, "nedge": NEDGE,
                                                       "code_bytes": 8, "nlambda": 32},
        "shards": {"rows_per_shard": 1000}, "workers": {"encode": 1}})))
    x = blobs(700, 12)
    write_vectors(str(tmp_path / "new.fbin"), x)
    request = AppendRequest(store=store, name="live", source=str(tmp_path / "new.fbin"),
                            workers=1)

    def stop_at(step):
        raise Interrupt(step)

    root = Store(store).index("live")
    for step in ("encoded", "manifest"):         # before any file, after the shards
        with pytest.raises(Interrupt):
            append(request, on_step=lambda at, *_: stop_at(at) if at == step else None)
        assert root.current_version() == "v000001"
    assert len(list((tmp_path / "store/indexes/live/v000002/shards").glob("*.parquet"))) == 1
    assert VLQIndex.load(root).ntotal == 3000
    s = cli.main(["append", "--store", store, "--name", "live", "--source",
                  str(tmp_path / "new.fbin"), "--workers", "1"])
    assert s == 0 and root.current_version() == "v000002"
    assert "snapline append: published live/v000002" in capsys.readouterr().out
    loaded = VLQIndex.load(root)
    single = VLQIndex.from_model(store, built["model_version"])
    single.add(np.concatenate([base, x]))
    q = blobs(30, 13)
    d_got, i_got = loaded.search(q, k=10, **EVERY_LINE)
    d_want, i_want = single.search(q, k=10, **EVERY_LINE)
    np.testing.assert_array_equal(i_got, i_want)
    np.testing.assert_allclose(d_got, d_want, rtol=1e-5)


def test_twenty_appends_then_compaction_bounds_the_shards(local_ray, models, tmp_path, capsys):
    live = Live(str(tmp_path / "store"), models["l2"], n=800, rows_per_shard=400)
    encoder = VLQIndex.from_arrays(models["l2"])
    for i in range(20):
        x, t = blobs(40, 100 + i), attrs(40, 200 + i)
        first = 800 + 40 * i
        if i < 2:    # through the job; the other 18 the same publish, encoded here (faster)
            path = tmp_path / f"a{i}.parquet"
            pq.write_table(t.append_column("v", pa.FixedSizeListArray.from_arrays(
                pa.array(x.ravel()), D)), path)
            version = append(AppendRequest(live.store, live.name, str(path), workers=1))["version"]
        else:
            list_ids, lam, codes = encoder.encode(x)
            version = publish_append(live.root, EncodedRows(
                np.arange(first, first + 40), list_ids, lam, codes, attributes=t,
                vectors=x.astype(np.float32))).version
        assert version == f"v{i + 2:06d}"
        live.added(x, np.arange(first, first + 40), t)
    manifest, _, _ = resolve(live.root)
    assert len(manifest.shards) == 22
    s = live.cli("compact", capsys=capsys)
    # the rule (shards.compaction): at most 2 L / target + (big shards + 1) shards
    rows, target, big = 1600, 400, 2
    assert s["shards_after"] <= 2 * rows / target + big + 1
    assert s["shards_after"] == 4        # 2 kept + the 20 appended merged in 2 (10 x 40 = target)
    live.check_search()
    live.check_search("lang IN ('fr', 'de')",
                      lambda t: np.isin(np.array(t["lang"].to_pylist()), ["fr", "de"]))
    assert live.cli("compact", "--max-shards", "2", capsys=capsys)["shards_after"] == 2
    live.check_search()


@pytest.fixture(scope="module")
def bad_inputs(models, tmp_path_factory):
    """A published index (attributes lang, year; ids 0..1199) and files that are wrong."""
    root = tmp_path_factory.mktemp("bad-live")
    live = Live(str(root / "store"), models["l2"])
    write_vectors(str(root / "good.fbin"), blobs(40, 20))
    write_vectors(str(root / "d16.fbin"), blobs(40, 21)[:, :16])
    np.save(root / "short.npy", np.arange(2000, 2039))
    np.save(root / "dup.npy", np.r_[np.arange(2000, 2039), 2003])
    np.save(root / "taken.npy", np.r_[5, np.arange(2000, 2039)])
    np.save(root / "ids.npy", np.arange(2000, 2040))
    (root / "ids.txt").write_text("1\n2\n")
    good = attrs(40, 22)
    pq.write_table(good, root / "good.parquet")
    pq.write_table(good.slice(0, 39), root / "rows39.parquet")
    pq.write_table(good.drop_columns(["year"]), root / "noyear.parquet")
    pq.write_table(good.append_column("tenant", pa.array(range(40))), root / "extra.parquet")
    pq.write_table(good.set_column(1, "year", pa.array(["abc"] * 40)), root / "badtype.parquet")
    pq.write_table(good.append_column("id", pa.array(np.r_[np.arange(2000, 2039), 2000])),
                   root / "dupkey.parquet")
    return root, live


BAD_LIVE = [  # (argv after the command's --store/--name, what the one line must name)
    (["append", "--source", "{root}/missing.fbin"], "--source: {root}/missing.fbin: no such file"),
    (["append", "--source", "{root}/d16.fbin"], "16-d vectors, index 'live' holds 32-d ones"),
    (["append", "--source", "{root}/good.fbin", "--ids", "{root}/short.npy"],
     "--ids {root}/short.npy: 39 ids for the 40 rows"),
    (["append", "--source", "{root}/good.fbin", "--ids", "{root}/dup.npy"],
     "id 2003 appears more than once"),
    (["append", "--source", "{root}/good.fbin", "--ids", "{root}/taken.npy"],
     "id 5 is already in index 'live' v000001"),
    (["append", "--source", "{root}/good.fbin", "--ids", "{root}/ids.txt"],
     "unsupported ids file .txt"),
    (["append", "--source", "{root}/good.fbin"], "has attribute columns ['lang', 'year']"),
    (["append", "--source", "{root}/good.fbin", "--attributes", "{root}/rows39.parquet"],
     "39 rows for 40 appended rows"),
    (["append", "--source", "{root}/good.fbin", "--attributes", "{root}/noyear.parquet"],
     "no column 'year' (int64), an attribute column of index 'live'"),
    (["append", "--source", "{root}/good.fbin", "--attributes", "{root}/extra.parquet"],
     "column 'tenant' is not an attribute column of index 'live'"),
    (["append", "--source", "{root}/good.fbin", "--attributes", "{root}/badtype.parquet"],
     "column 'year' is string, index stores int64"),
    (["append", "--source", "{root}/good.fbin", "--ids", "{root}/ids.npy", "--attributes",
      "{root}/dupkey.parquet"], "id 2000 has more than one row"),
    (["append", "--source", "{root}/good.fbin", "--workers", "0"], "--workers must be"),
    (["delete", "--ids", "{root}/missing.npy"], "--ids {root}/missing.npy: no such file"),
    (["compact", "--min-deleted", "1.5"], "--min-deleted must be a fraction"),
    (["compact", "--max-shards", "0"], "--max-shards must be >= 1"),
]


@pytest.mark.parametrize("argv, culprit", BAD_LIVE, ids=[" ".join(a[:1] + a[-1:]) for a, _ in
                                                         BAD_LIVE])
def test_bad_input_is_exit_2_naming_it(bad_inputs, argv, culprit, capsys):
    root, live = bad_inputs
    argv = [a.format(root=root) for a in argv]
    err = live.cli(argv[0], *argv[1:], code=2, capsys=capsys)["err"].strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"snapline {argv[0]}: error: ") and culprit.format(root=root) in err
    assert live.root.current_version() == "v000001"


def test_unknown_index_and_metric_mismatch_are_refused(bad_inputs, tmp_path, capsys):
    root, live = bad_inputs
    for command, args in (("append", ["--source", f"{root}/good.fbin"]),
                          ("delete", ["--ids", f"{root}/ids.npy"]), ("compact", [])):
        assert cli.main([command, "--store", live.store, "--name", "nope", *args]) == 2
        assert "no published index named 'nope'" in capsys.readouterr().err
    # a manifest whose metric is not its model's (forged: the model is l2)
    shutil.copytree(live.store, tmp_path / "store")
    path = tmp_path / "store/indexes/live/v000001/manifest.json"
    doc = json.loads(path.read_text())
    doc["shape"]["metric"] = "ip"
    path.write_text(json.dumps(doc))
    assert cli.main(["append", "--store", str(tmp_path / "store"), "--name", "live",
                     "--source", f"{root}/good.fbin", "--attributes", f"{root}/extra.parquet"]) == 2
    err = capsys.readouterr().err
    assert "ranks by metric 'ip' but its model" in err and "trained for 'l2'" in err


def test_an_empty_source_publishes_nothing(bad_inputs, capsys):
    root, live = bad_inputs
    write_vectors(str(root / "empty.fbin"), np.zeros((0, D), np.float32))
    s = live.cli("append", "--source", f"{root}/empty.fbin", capsys=capsys)
    assert (s["rows_appended"], s["version"], s["new_shards"]) == (0, "v000001", 0)
    assert live.root.current_version() == "v000001"


def test_the_job_entry_is_python_m_cluster_live(bad_inputs):
    """What `ray job submit ... -- python -m cluster.live ...` runs: same exit status and line."""
    root, live = bad_inputs
    done = subprocess.run([sys.executable, "-m", "cluster.live", "append", "--store", live.store,
                           "--name", "live", "--source", f"{root}/d16.fbin"], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(
        "python -m cluster.live append: error: --source")


def test_a_bad_row_found_by_an_encode_actor_is_exit_2_naming_it(local_ray, bad_inputs, capsys):
    root, live = bad_inputs
    x = blobs(40, 23)
    x[33, 5] = np.nan
    write_vectors(str(root / "nan.fbin"), x)
    err = live.cli("append", "--source", f"{root}/nan.fbin", "--attributes",
                   f"{root}/good.parquet", code=2, capsys=capsys)["err"]
    assert err.strip() == (f"snapline append: error: --source {root}/nan.fbin, rows [20, 40) "
                           f"counted from 20: encode: row 13 contains NaN or inf")
    assert live.root.current_version() == "v000001"


def test_the_append_memory_bound_is_the_documented_one():
    """README: 10M rows of 16-byte codes, no stored vectors: ~0.9 GB besides the interpreter."""
    from cluster.estimate import PROCESS_BYTES, append_memory
    from shards import IndexShape

    shape = IndexShape(128, 1024, 32, 16, 256)
    need = append_memory(shape, 10_000_000, 0, 0)
    assert 0.85e9 < need.bytes - PROCESS_BYTES < 0.95e9
    with_vectors = append_memory(shape, 10_000_000, 128, 10**9)    # uint8 store, 1 GB attributes
    assert with_vectors.bytes - need.bytes == 3 * 10_000_000 * 128 + 2 * 10**9

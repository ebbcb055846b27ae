"""Serving on a real local Ray: distributed answers equal the single-process index,
failover with replicas, explicit partial results, bad input, hot reload under load, and
a bounded load run. Services are module-scoped (starting actors is the slow part)."""
from __future__ import annotations

import dataclasses
import json
import re
import threading
import time

import numpy as np
import pytest
import ray

from cluster import cli
from cluster.client import Client
from cluster.serving.coordinator import get_coordinator, start_service, stop_service
from cluster.serving.types import (PartialResultError, SearchParams, ServeConfig,
                                 ServiceUnavailableError)
from tests.serve.conftest import BUNDLED, NB, PARAMS

pytestmark = pytest.mark.usefixtures("ray_local")
TIMEOUT_S = 60.0          # generous: the 2 cores are shared with other work
WAIT_S = 180.0            # bound on waiting for a restart or a reload


@pytest.fixture(scope="module")
def reference(trained, sift):
    return trained.search(sift["query"], **PARAMS)


def _serve(store, name, **kw):
    cfg = ServeConfig(store=store, name=name, timeout_s=TIMEOUT_S, poll_s=0, **kw)
    stats = start_service(cfg)
    return Client.connect(name), stats


@pytest.fixture(scope="module")
def served_1(store):
    """Started with `snapline serve`, stopped by test_stopped_service_is_a_clear_error."""
    assert cli.main(["serve", "--store", store, "--name", "sift-1", "--searchers", "1",
                     "--replicas", "1", "--poll-s", "0", "--timeout-s", str(TIMEOUT_S)]) == 0
    yield Client.connect("sift-1")


@pytest.fixture(scope="module")
def served_2(store):
    client, _ = _serve(store, "sift-2", searchers=2, replicas=2, http_port=0)
    yield client
    stop_service("sift-2")


@pytest.fixture(scope="module")
def served_4(store):
    client, _ = _serve(store, "sift-4", searchers=2, replicas=1, http_port=0)
    yield client
    stop_service("sift-4")


def _identical(ids, ref_ids) -> float:
    return float((ids == ref_ids).mean())


@pytest.mark.parametrize("service", ["served_1", "served_2", "served_4"])
def test_distributed_equals_single_process(request, service, sift, reference):
    client = request.getfixturevalue(service)
    result = client.search(sift["query"], **PARAMS)
    D, I = result
    assert not result.partial and result.version == "v000001"
    assert I.shape == reference[1].shape and I.dtype == np.int64 and D.dtype == np.float32
    assert _identical(I, reference[1]) >= 0.999
    stats = client.stats()
    assert stats["version"] == "v000001" and stats["queries_served"] >= sift["query"].shape[0]
    assert stats["shards"] == int(service[-1])


def test_cli_status_and_search(served_2, sift, reference, tmp_path, capsys):
    assert cli.main(["status", "--name", "sift-2"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["searchers"] == 2 and stats["replicas"] == 2 and "latency_ms" in stats
    out = tmp_path / "answer.npz"
    queries = str(BUNDLED / "query.u8bin")
    assert cli.main(["search", "--name", "sift-2", "--queries", queries, "--k", "10",
                     "--nprobe", "16", "--nlines", "128", "--out", str(out)]) == 0
    assert _identical(np.load(out)["ids"], reference[1]) >= 0.999
    assert cli.main(["status", "--name", "no-such-index"]) == 2
    assert "no snapline service for index 'no-such-index'" in capsys.readouterr().err


def _query_loop(client, queries, stop, answers, errors, batch=10, **kw):
    i = 0
    while not stop.is_set():
        start = (i * batch) % (queries.shape[0] - batch)
        try:
            answers.append((start, client.search(queries[start:start + batch], **PARAMS, **kw)))
        except Exception as exc:                    # every failure is counted
            errors.append(exc)
        i += 1


def _run_threads(n, target, *args):
    threads = [threading.Thread(target=target, args=args, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def test_killed_replica_fails_no_query(served_2, sift, reference):
    """R=2: kill a searcher during a query load; zero failed or partial queries."""
    handles = ray.get(get_coordinator("sift-2").searchers.remote())
    victim = handles[0]["handle"]
    stop, answers, errors = threading.Event(), [], []
    threads = _run_threads(2, _query_loop, served_2, sift["query"], stop, answers, errors)
    while len(answers) < 5 and not errors:
        time.sleep(0.05)
    before = len(answers)
    ray.kill(victim, no_restart=False)               # Ray restarts it (max_restarts)
    _wait_restarted(victim)                          # back up, answering
    after = len(answers)
    deadline = time.monotonic() + WAIT_S
    while len(answers) < after + 5 and time.monotonic() < deadline and not errors:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=WAIT_S)
    assert errors == []
    assert len(answers) > before
    for start, result in answers:
        assert not result.partial
        assert _identical(result.ids, reference[1][start:start + 10]) >= 0.99
    assert served_2.stats()["replica_failures"] >= 1    # the failover path did run


def _wait_restarted(handle) -> dict:
    """The searcher's info once Ray has restarted it (calls fail while it restarts)."""
    def probe():
        try:
            return ray.get(handle.info.remote(), timeout=WAIT_S)
        except ray.exceptions.RayActorError:
            return None
    return _until(probe, "restarted searcher")


def _until(predicate, what):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = predicate()
        if value is not None:
            return value
        time.sleep(0.02)
    raise AssertionError(f"no {what} within {WAIT_S} s")


def test_single_replica_gives_marked_partial_then_full(served_4, store, sift, reference):
    """R=1: while the killed searcher restarts, its shards are reported missing (or
    PartialResultError is raised); full answers come back after the restart."""
    q = sift["query"][:10]
    group0 = get_coordinator("sift-4").searchers.remote()
    victim = next(s for s in ray.get(group0) if s["group"] == 0)
    assert victim["shards"] == [0, 1]

    def raised():
        try:
            served_4.search(q, **PARAMS, timeout_s=1.0)
        except PartialResultError as exc:
            return exc
        return None

    ray.kill(victim["handle"], no_restart=False)
    exc = _until(raised, "PartialResultError")
    assert {0, 1} <= set(exc.result.missing_shards)
    assert "partial result: shards" in str(exc)
    _wait_restarted(victim["handle"])

    ray.kill(victim["handle"], no_restart=False)
    partial = _until(lambda: (lambda r: r if r.partial else None)(
        served_4.search(q, **PARAMS, on_partial="partial", timeout_s=1.0)), "partial result")
    assert {0, 1} <= set(partial.missing_shards)
    assert partial.ids.shape == (10, PARAMS["k"])
    # what did answer is exactly the other group's top-k (shards 2 and 3 alone)
    from indexer import VLQIndex
    _, other_ids = VLQIndex.load(f"{store}/indexes/sift-4", shards=[2, 3]).search(q, **PARAMS)
    assert _identical(partial.ids, other_ids) >= 0.99

    full = _until(lambda: (lambda r: None if r.partial else r)(
        served_4.search(q, **PARAMS, on_partial="partial", timeout_s=TIMEOUT_S)), "full answer")
    assert _identical(full.ids, reference[1][:10]) >= 0.99
    assert served_4.stats()["partial_batches"] >= 2


@pytest.mark.parametrize("make, message", [
    (lambda q: q[:, :64], "wrong dimension"),
    (lambda q: np.where(np.arange(128) == 3, np.nan, q.astype(np.float32)), "NaN"),
    (lambda q: q.tolist(), "numpy array"),
    (lambda q: q[:0], "non-empty"),
])
def test_bad_queries_are_clear_errors(served_2, sift, reference, make, message):
    with pytest.raises(ValueError, match=message):
        served_2.search(make(sift["query"][:5]), **PARAMS)
    # the coordinator checks too (a client that skipped its own checks)
    coordinator = get_coordinator("sift-2")
    bad = make(sift["query"][:5])
    if isinstance(bad, np.ndarray):
        with pytest.raises(ValueError, match=message):
            ray.get(coordinator.search.remote(bad, SearchParams(**PARAMS)))
    assert _identical(served_2.search(sift["query"][:5], **PARAMS).ids, reference[1][:5]) >= 0.99


@pytest.mark.parametrize("params, message", [
    (dict(k=0), "k must be > 0"), (dict(k=-3), "k must be > 0"),
    (dict(k=NB + 1), f"k={NB + 1} exceeds the {NB} vectors"),
    (dict(nprobe=10_000), "nprobe=10000 exceeds nlist"),
    (dict(nlines=10_000), "nlines=10000 exceeds"),
])
def test_bad_parameters_are_clear_errors(served_2, sift, reference, params, message):
    with pytest.raises(ValueError, match=message):
        served_2.search(sift["query"][:5], **{**PARAMS, **params})
    assert _identical(served_2.search(sift["query"][:5], **PARAMS).ids, reference[1][:5]) >= 0.99




@pytest.mark.parametrize("where, matches", [
    ("lang = 'en'", lambda ids: ids % 2 == 0),          # 50% of the rows
    ("tag = 7", lambda ids: ids % 1000 == 7),           # 0.1%: 20 rows, k = 10 of them
])
def test_filtered_distributed_equals_single_process(served_4, trained, sift, where, matches):
    """4 shards in 2 groups: each searcher filters its rows and the merge of the groups'
    answers equals the single-process filtered search (rerank covers every scanned code,
    so the answer does not depend on the split)."""
    q = sift["query"]
    D0, I0 = trained.search(q, **PARAMS, rerank=4096, filter=where)
    D, I = served_4.search(q, **PARAMS, rerank=4096, filter=where)
    assert (I >= 0).all() and matches(I).all()      # k hits, every one of them matching
    np.testing.assert_array_equal(I, I0)
    np.testing.assert_allclose(D, D0, rtol=1e-5)


def _rejected(client, sift, where) -> ValueError:
    """The error of a bad filter: the searcher's ValueError itself, no replica marked
    failed (a bad request is not a dead replica), the service answering as before."""
    before = client.stats()
    with pytest.raises(ValueError) as excinfo:
        client.search(sift["query"][:5], **PARAMS, filter=where)
    after = client.stats()
    assert type(excinfo.value) is ValueError          # not Ray's wrapping of it
    assert str(excinfo.value).startswith(f"filter {where!r}")
    assert after["replica_failures"] == before["replica_failures"]
    assert after["rejected_batches"] == before["rejected_batches"] + 1
    return excinfo.value


def test_bad_filter_is_the_searchers_error_and_fails_no_replica(served_2, sift, reference):
    _rejected(served_2, sift, "colour = 1")
    for searcher in ray.get(get_coordinator("sift-2").searchers.remote()):
        assert ray.get(searcher["handle"].info.remote(), timeout=TIMEOUT_S)["version"]
    assert _identical(served_2.search(sift["query"][:5], **PARAMS).ids, reference[1][:5]) >= 0.99


@pytest.mark.parametrize("where, message", [
    ("colour = 1", r'Referenced column "colour" not found.*attribute columns: tag, lang'),
    ("lang = = 'en'", "is not a valid SQL WHERE clause"),
])
def test_unknown_column_and_malformed_filter_are_clear_errors(served_2, sift, where, message):
    assert re.search(message, str(_rejected(served_2, sift, where)))


@pytest.mark.parametrize("options, message", [
    (dict(filter=""), "filter must be a non-empty SQL WHERE clause"),
    (dict(filter=7), "filter must be a non-empty SQL WHERE clause string or None, got 7"),
    (dict(refine=0), "refine must be > 0"), (dict(refine="50"), "refine must be an integer"),
    (dict(refine=5), "refine must be >= k .* got refine=5 with k=10"),
])
def test_client_checks_filter_and_refine(served_2, sift, options, message):
    before = served_2.stats()
    with pytest.raises(ValueError, match=message):
        served_2.search(sift["query"][:5], **PARAMS, **options)
    after = served_2.stats()                            # refused before anything was sent
    assert [after[c] - before[c] for c in ("batches", "rejected_batches")] == [0, 0]


def test_refine_through_serving(served_4, trained, sift):
    """Searchers re-rank by the exact distance to their stored vectors (exact D)."""
    q = sift["query"]
    D0, I0 = trained.search(q, **PARAMS, refine=50)
    D, I = served_4.search(q, **PARAMS, refine=50)
    assert (I >= 0).all() and _identical(I, I0) >= 0.95
    exact = ((q[:, None, :].astype(np.float32) - sift["base"][I].astype(np.float32)) ** 2).sum(-1)
    np.testing.assert_allclose(D, exact, rtol=1e-5)
    # each shard refines its own 50 best: a superset of the single index's 50 best, so
    # the distributed answer is at least as close, rank by rank
    assert (D <= D0 * (1 + 1e-6) + 1e-3).all()


def test_unknown_index_is_a_clear_error(store):
    with pytest.raises(ValueError, match="no snapline service for index 'nope'"):
        Client.connect("nope")
    with pytest.raises(FileNotFoundError, match="no published version"):
        start_service(ServeConfig(store=store, name="nope"))


def test_stopped_service_is_a_clear_error(served_1, served_2, sift, reference):
    served_1.search(sift["query"][:5], **PARAMS)
    assert cli.main(["stop", "--name", "sift-1"]) == 0
    with pytest.raises(ServiceUnavailableError, match="'sift-1' is stopped or unreachable"):
        served_1.search(sift["query"][:5], **PARAMS)
    with pytest.raises(ValueError, match="no snapline service"):
        Client.connect("sift-1")
    assert _identical(served_2.search(sift["query"][:5], **PARAMS).ids, reference[1][:5]) >= 0.99


def test_bounded_load(served_2, sift):
    """8 client threads for 5 s: zero errors; the coordinator counts every query."""
    before = served_2.stats()["queries_served"]
    stop, answers, errors = threading.Event(), [], []
    threads = _run_threads(8, _query_loop, served_2, sift["query"], stop, answers, errors)
    time.sleep(5)
    stop.set()
    for t in threads:
        t.join(timeout=WAIT_S)
    assert errors == [] and answers
    assert all(not r.partial for _, r in answers)
    stats = served_2.stats()
    assert stats["queries_served"] - before == 10 * len(answers)
    assert set(stats["latency_ms"]) >= {"p50", "p90", "p99"}


def test_hot_reload_under_load(store, trained, sift):
    """New versions (ids shifted so that each version's answers are recognisable) are
    picked up by reload() and by the CURRENT poll; no query fails or mixes versions."""
    from shards import Store, publish

    arrays = trained.to_arrays()
    root = Store(store).index("sift-reload")
    publish(root, arrays, rows_per_shard=NB // 2)
    cfg = ServeConfig(store=store, name="sift-reload", searchers=2, replicas=1,
                      timeout_s=TIMEOUT_S, poll_s=1.0)
    start_service(cfg)
    client = Client.connect("sift-reload")
    offsets = {"v000001": 0, "v000002": 1_000_000, "v000003": 2_000_000}
    stop, answers, errors = threading.Event(), [], []
    threads = _run_threads(3, _query_loop, client, sift["query"], stop, answers, errors)
    try:
        for version in ("v000002", "v000003"):
            shifted = dataclasses.replace(arrays, ids=arrays.ids + offsets[version],
                                          next_id=arrays.next_id + offsets[version])
            assert publish(root, shifted, rows_per_shard=NB // 2).version == version
            if version == "v000002":
                assert client.reload() == version            # on request
            _until(lambda: client.stats()["version"] == version or None, f"switch to {version}")
            # clients route themselves, refreshing at least every ROUTING_TTL_S: wait for an
            # answer that the new version gave, not merely for more answers
            n = len(answers)
            _until(lambda: any(r.version == version for _, r in answers[n:]) or None,
                   f"answers from {version}")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=WAIT_S)
    stats = client.stats()
    stop_service("sift-reload")
    assert errors == []
    seen = set()
    for _, result in answers:
        assert not result.partial
        low = offsets[result.version]
        found = result.ids[result.ids >= 0]
        assert ((found >= low) & (found < low + NB)).all(), result.version   # one version only
        seen.add(result.version)
    assert seen == set(offsets)
    assert stats["reloads"] == 2 and stats["version"] == "v000003"


def test_a_version_that_does_not_load_leaves_the_old_one_serving(store, trained, sift, reference):
    """A new version with a corrupted shard: reload fails with the checksum error and the
    service keeps answering from the version it had."""
    from pathlib import Path

    from shards import Store, publish

    arrays = trained.to_arrays()
    root = Store(store).index("sift-broken")
    publish(root, arrays, rows_per_shard=NB)
    client, _ = _serve(store, "sift-broken", searchers=1, replicas=1)
    try:
        bad = publish(root, dataclasses.replace(arrays, next_id=NB + 1),
                      rows_per_shard=NB)
        shard = Path(store) / "indexes" / "sift-broken" / bad.version / bad.shards[0].path
        shard.write_bytes(shard.read_bytes()[:-100])          # truncated after publishing
        with pytest.raises(Exception, match="truncated or replaced"):
            client.reload()
        result = client.search(sift["query"][:5], **PARAMS)
        assert result.version == "v000001"
        assert _identical(result.ids, reference[1][:5]) >= 0.99
    finally:
        stop_service("sift-broken")


def _single_query_callers(client, queries, n_threads, **kw):
    """n_threads threads, each searching its share of `queries` one query per call;
    returns the (nq, k) ids in query order and every error."""
    ids, errors = [None] * queries.shape[0], []

    def run(t):
        for i in range(t, queries.shape[0], n_threads):
            try:
                ids[i] = client.search(queries[i:i + 1], **PARAMS, **kw).ids[0]
            except Exception as exc:               # every failure is counted
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=WAIT_S)
    return ids, errors


def test_concurrent_single_query_callers_share_calls_with_identical_answers(served_2, sift,
                                                                              reference):
    """16 threads of one process, one query per search: the client gathers them into
    fewer calls, and every thread gets exactly its own query's answer."""
    q = sift["query"]
    nq = q.shape[0]
    before = served_2.stats()
    ids, errors = _single_query_callers(served_2, q, 16)
    after = served_2.stats()
    assert errors == []
    np.testing.assert_array_equal(np.stack(ids), reference[1])
    searches = after["client"]["searches"] - before["client"]["searches"]
    calls = after["client"]["calls"] - before["client"]["calls"]
    assert searches == nq and calls < searches
    assert after["queries_served"] - before["queries_served"] == nq


def test_service_gathers_concurrent_requests_and_keeps_each_answer(served_2, sift, reference):
    """Requests straight to the coordinator (as from many client processes), in flight
    together: fewer fan-outs than requests, each answer its own query's."""
    coordinator = get_coordinator("sift-2")
    q = sift["query"][:200].astype(np.float32)
    params = SearchParams(**PARAMS)
    before = served_2.stats()
    refs = [coordinator.search.remote(q[i:i + 1], params, None) for i in range(200)]
    results = ray.get(refs, timeout=WAIT_S)
    after = served_2.stats()
    np.testing.assert_array_equal(np.concatenate([r.ids for r in results]), reference[1][:200])
    assert all(r.version == "v000001" and not r.partial for r in results)
    assert after["requests"] - before["requests"] == 200
    assert after["batches"] - before["batches"] < 200
    assert after["queries_per_batch"]["max"] > 1


def test_a_bad_request_does_not_fail_its_batch_mates(served_2, sift, reference):
    """Bad requests in flight among good ones with the same parameters: each bad one gets
    its own clear error, every good one its answer."""
    coordinator = get_coordinator("sift-2")
    q = sift["query"][:60].astype(np.float32)
    params = SearchParams(**PARAMS)
    nan = q[:1].copy()
    nan[0, 3] = np.nan
    bad = {7: (nan, params, "row 0 contains NaN"),
           19: (q[:1, :64], params, "dimension|dim"),
           31: (q[:1], SearchParams(**{**PARAMS, "k": NB + 1}), f"k={NB + 1} exceeds"),
           43: (q[:1], SearchParams(**PARAMS, filter="colour = 1"), "colour")}
    refs = [coordinator.search.remote(*(bad[i][:2] if i in bad else (q[i:i + 1], params)),
                                      None) for i in range(60)]
    for i, ref in enumerate(refs):
        if i in bad:
            with pytest.raises(ValueError, match=bad[i][2]):
                try:
                    ray.get(ref, timeout=WAIT_S)
                except ray.exceptions.RayTaskError as exc:
                    raise exc.cause from None
        else:
            np.testing.assert_array_equal(ray.get(ref, timeout=WAIT_S).ids[0], reference[1][i])


def _prometheus(port: int) -> dict[str, float]:
    """Ray's metrics endpoint: every snapline sample of index sift-2, by metric name."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r'^(ray_snapline_\w+)\{(.*)\} (\S+)$', line)
        if not m or 'index="sift-2"' not in m.group(2):
            continue
        if m.group(1).endswith("_bucket") and 'le="+Inf"' not in m.group(2):
            continue                                 # buckets: only the total one
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def test_service_metrics_at_rays_prometheus_endpoint(ray_local, served_2, sift):
    """The counts stats() shows are exported as Ray metrics: queries, requests, batches,
    the latency and batch-size histograms."""
    served_2.search(sift["query"][:7], **PARAMS)
    stats = served_2.stats()                         # the client reports its counts first

    def exported():
        try:
            m = _prometheus(ray_local)
        except OSError:
            return None
        if m.get("ray_snapline_queries_total", 0) >= stats["queries_served"]:
            return m
        return None

    m = _until(exported, "snapline metrics at Ray's metrics endpoint")
    assert m["ray_snapline_requests_total"] >= stats["requests"] >= 1
    assert m["ray_snapline_batches_total"] >= 1
    assert m["ray_snapline_request_latency_ms_count"] >= stats["requests"]
    assert m["ray_snapline_request_latency_ms_bucket"] == m["ray_snapline_request_latency_ms_count"]
    assert m["ray_snapline_batch_queries_count"] >= 1


def _http(url: str, body=None, raw: bytes | None = None) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_http_search_equals_the_client(served_2, sift, reference):
    url = served_2.stats()["http"]
    status, answer = _http(f"{url}/v1/search", {"queries": sift["query"][:5].tolist(), **PARAMS})
    assert status == 200, answer
    assert answer["version"] == "v000001" and answer["missing_shards"] == []
    np.testing.assert_array_equal(np.array(answer["ids"]), reference[1][:5])
    np.testing.assert_allclose(np.array(answer["distances"], dtype=np.float32), reference[0][:5],
                               rtol=1e-5)
    status, stats = _http(f"{url}/v1/stats")
    assert status == 200 and stats["queries_served"] >= 5 and stats["http"] == url


@pytest.mark.parametrize("body, message", [
    ({"queries": [[1.0] * 64], **PARAMS}, "dimension"),
    ({"queries": [[float("nan")] + [1.0] * 127], **PARAMS}, "row 0 contains NaN or inf"),
    ({"queries": [[1.0] * 128], **{**PARAMS, "k": 0}}, "k must be > 0"),
    ({"queries": [[1.0] * 128], **{**PARAMS, "k": NB + 1}}, f"k={NB + 1} exceeds"),
    ({"queries": [[1.0] * 128], **PARAMS, "filter": "colour = 1"}, "filter 'colour = 1'"),
    ({"queries": [[1.0] * 128], "kk": 3}, "unknown fields \\['kk'\\]"),
    ({"queries": [[1.0, "x"]]}, "queries must be a list of equally long lists of numbers"),
    ({**PARAMS}, "queries is required"),
    ([1, 2], "must be a JSON object"),
])
def test_http_bad_requests_are_400_with_the_message(served_2, body, message):
    url = served_2.stats()["http"]
    status, answer = _http(f"{url}/v1/search", body)
    assert status == 400, answer
    if message is not None:
        assert re.search(message, answer["error"]), answer["error"]


def test_http_body_that_is_not_json(served_2):
    status, answer = _http(f"{served_2.stats()['http']}/v1/search", raw=b"{not json")
    assert status == 400 and "not JSON" in answer["error"]


def test_http_partial_is_503_unless_accepted(served_4, sift):
    """R=1, a searcher killed: HTTP answers 503 naming the missing shards, or, with
    "on_partial": "partial", 200 listing them; full answers after the restart."""
    url = f"{served_4.stats()['http']}/v1/search"
    body = {"queries": sift["query"][:5].tolist(), **PARAMS, "timeout_s": 1.0}
    victim = next(s for s in ray.get(get_coordinator("sift-4").searchers.remote())
                  if s["group"] == 0)

    def answer(request, status):
        code, found = _http(url, request)
        return found if code == status and found.get("missing_shards") else None

    ray.kill(victim["handle"], no_restart=False)
    refused = _until(lambda: answer(body, 503), "HTTP 503")
    assert {0, 1} <= set(refused["missing_shards"]) and "on_partial" in refused["error"]
    _wait_restarted(victim["handle"])
    ray.kill(victim["handle"], no_restart=False)
    partial = _until(lambda: answer({**body, "on_partial": "partial"}, 200), "HTTP partial")
    assert {0, 1} <= set(partial["missing_shards"]) and len(partial["ids"]) == 5
    _wait_restarted(victim["handle"])
    code, full = _http(url, {**body, "timeout_s": TIMEOUT_S})
    assert code == 200 and full["missing_shards"] == []

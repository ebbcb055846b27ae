"""A Ray cluster of three nodes on this machine (ray.cluster_utils.Cluster: a head and two
worker nodes, each with its own raylet and workers) and an S3 store on the local moto
server, so that no node reads another's disk (the source rows are in S3 too): a build whose
encode workers run on the cluster, searchers whose replicas sit on different nodes, and a
node removed under load (R=2: no failed query; R=1: explicit partial results, then full
answers once Ray has restarted the lost searchers elsewhere)."""
from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import ray

from cluster.client import Client
from cluster.serving.coordinator import get_coordinator, start_service, stop_service
from cluster.serving.types import NAMESPACE, ServeConfig

pytestmark = pytest.mark.slow

BUNDLED = Path(__file__).resolve().parents[2] / "data" / "sift-small"
PARAMS = dict(k=10, nprobe=16, nlines=128)
TIMEOUT_S = 10.0        # per batch: a replica on a lost node gets half of it, then the other
WAIT_S = 180.0


@pytest.fixture(scope="module")
def nodes(s3_endpoint):
    """Head (2 CPUs) and two worker nodes (1 CPU each); started after the S3 endpoint so
    that every node's workers see AWS_ENDPOINT_URL. Stopped with the module (these nodes
    only, not other Ray clusters on the machine)."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def built(nodes):
    """The bundled rows uploaded to S3, built into an S3 store by the build pipeline on
    the three-node cluster; then this process joins the cluster as a driver."""
    import s3fs

    from cluster.build.config import build_config_from_dict
    from cluster.build.pipeline import build

    cluster, _ = nodes
    bucket = f"snapline-mn-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(bucket)
    fs.put(str(BUNDLED / "base.u8bin"), f"{bucket}/source/base.u8bin")
    store = f"s3://{bucket}/store"
    cfg = build_config_from_dict({
        "name": "sift", "store": store, "source": {"uri": f"s3://{bucket}/source/base.u8bin"},
        "sample": {"size": 8000, "seed": 0}, "index": {"nlist": 64, "nedge": 16, "code_bytes": 16},
        "shards": {"rows_per_shard": 5000}, "workers": {"encode": 2}})
    summary = build(cfg, address=cluster.address)
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
    return store, summary


@pytest.fixture(scope="module")
def sift():
    from shards import open_vectors

    return {n: open_vectors(str(BUNDLED / f"{n}.u8bin")).read() for n in ("base", "query")}


@pytest.fixture(scope="module")
def reference(built, sift):
    from indexer import VLQIndex

    store, _ = built
    return VLQIndex.load(f"{store}/indexes/sift").search(sift["query"], **PARAMS)


def test_build_on_three_nodes_into_s3(built):
    from shards import Store, load_arrays

    store, summary = built
    assert len(ray.nodes()) == 3 and all(n["Alive"] for n in ray.nodes())
    assert summary["version"] == "v000001" and summary["ntotal"] == 20000
    assert Store(store).index("sift").current_version() == "v000001"
    _, data = load_arrays(f"{store}/indexes/sift")
    assert np.array_equal(np.sort(data.ids), np.arange(20000))      # every source row once


def _searchers_by_group(name: str) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for s in ray.get(get_coordinator(name).searchers.remote(), timeout=WAIT_S):
        info = ray.get(s["handle"].info.remote(), timeout=WAIT_S)
        out.setdefault(s["group"], []).append({**s, **info})
    return out


def _load(client, queries, stop, answers, errors, **kw):
    i = 0
    while not stop.is_set():
        start = (i * 5) % (queries.shape[0] - 5)
        try:
            answers.append((start, client.search(queries[start:start + 5], **PARAMS, **kw)))
        except Exception as exc:                # every failure is counted
            errors.append(exc)
        i += 1


def _run_load(n, *args, **kw):
    threads = [threading.Thread(target=_load, args=args, kwargs=kw, daemon=True)
               for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def _until(predicate, what):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {WAIT_S} s")


def _node_of(worker) -> str:
    return worker.node_id


def _alive() -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


def _coordinator_on_head(cluster) -> bool:
    """The coordinator runs on the head node (never on a worker node a test removes)."""
    stats = ray.get(get_coordinator("sift").stats.remote(), timeout=WAIT_S)
    return stats["node"] == cluster.head_node.node_id


def _all_searchers_on(nodes: set[str]) -> bool:
    try:
        groups = _searchers_by_group("sift")
    except ray.exceptions.RayError:          # one is being restarted
        return False
    return all(r["node"] in nodes for reps in groups.values() for r in reps)


def test_replicas_on_different_nodes_and_a_lost_node_fails_no_query(nodes, built, sift,
                                                                    reference):
    """R=2: each group's replicas on two nodes; a worker node removed while 3 client
    threads query: zero failed or partial answers, every answer equal to the index's."""
    cluster, workers = nodes
    store, _ = built
    start_service(ServeConfig(store, "sift", searchers=2, replicas=2, poll_s=0,
                              timeout_s=TIMEOUT_S))
    try:
        client = Client.connect("sift")
        assert _coordinator_on_head(cluster)
        groups = _searchers_by_group("sift")
        assert len(groups) == 2
        for replicas in groups.values():
            assert len({r["node"] for r in replicas}) == 2           # different nodes
        used = {r["node"] for replicas in groups.values() for r in replicas}
        victim = next(w for w in workers if _node_of(w) in used)
        np.testing.assert_array_equal(client.search(sift["query"], **PARAMS).ids, reference[1])

        stop, answers, errors = threading.Event(), [], []
        threads = _run_load(3, client, sift["query"], stop, answers, errors)
        _until(lambda: len(answers) >= 10 or errors, "answers before the node loss")
        cluster.remove_node(victim, allow_graceful=False)
        n = len(answers)
        _until(lambda: len(answers) >= n + 30 or errors, "answers after the node loss")
        stop.set()
        for t in threads:
            t.join(timeout=WAIT_S)
        assert errors == []
        for start, result in answers:
            assert not result.partial
            np.testing.assert_array_equal(result.ids, reference[1][start:start + 5])
        # the node is declared dead, and its searchers run again elsewhere (Ray restarted
        # them): every searcher answers from an alive node
        _until(lambda: _node_of(victim) not in _alive(), "the lost node declared dead")
        _until(lambda: _all_searchers_on(_alive()), "every searcher on an alive node")
    finally:
        stop_service("sift")


def test_single_replica_lost_node_gives_explicit_partial_results(nodes, built, sift,
                                                                 reference):
    """R=1 (runs after the test above: head + one worker node left): the node holding a
    group is removed under load: answers are full or marked partial, never silently short;
    full answers come back once Ray has restarted the searcher on the head."""
    cluster, workers = nodes
    store, _ = built
    alive = [w for w in workers if w in cluster.worker_nodes]
    assert len(alive) == 1
    start_service(ServeConfig(store, "sift", searchers=2, replicas=1, poll_s=0,
                              timeout_s=TIMEOUT_S))
    try:
        client = Client.connect("sift")
        assert _coordinator_on_head(cluster)
        groups = _searchers_by_group("sift")
        on_worker = [g for g, reps in groups.items() if reps[0]["node"] == _node_of(alive[0])]
        assert len(on_worker) == 1                  # one group on the worker, one on the head
        lost_shards = set(groups[on_worker[0]][0]["shards"])

        stop, answers, errors = threading.Event(), [], []
        threads = _run_load(2, client, sift["query"], stop, answers, errors,
                            on_partial="partial", timeout_s=2.0)
        _until(lambda: len(answers) >= 10 or errors, "answers before the node loss")
        cluster.remove_node(alive[0], allow_graceful=False)
        _until(lambda: any(r.partial for _, r in answers) or errors, "a partial answer")
        n = len(answers)
        _until(lambda: (len(answers) > n and not answers[-1][1].partial) or errors,
               "full answers again")
        stop.set()
        for t in threads:
            t.join(timeout=WAIT_S)
        assert errors == []
        for start, result in answers:
            if result.partial:
                assert set(result.missing_shards) == lost_shards
            else:
                np.testing.assert_array_equal(result.ids, reference[1][start:start + 5])
    finally:
        stop_service("sift")


"""Issue 7 end to end: serve under load on the local S3 endpoint, train a new model,
let the scheduler re-encode and publish (as a Ray job it submits), watch the service swap."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
from ray.util.state import list_jobs

from cluster.build.pipeline import check_build, run_build
from cluster.build.config import build_config_from_dict
from cluster.client import Client
from cluster.serving.coordinator import start_service, stop_service
from cluster.updates.reencode import ReencodeRequest, train_for_index
from cluster.updates.scheduler import start_scheduler, stop_scheduler
from cluster.serving.types import NAMESPACE, ServeConfig
from indexer import VLQIndex
from indexer.evaluation import evaluate
from shards import Store, open_vectors, read_ground_truth
from shards.registry import served_versions
from tests.conftest import rows_equal_but_near_ties

pytestmark = pytest.mark.slow
BUNDLED = Path(__file__).resolve().parents[2] / "data" / "sift-small"


@pytest.fixture(scope="module")
def ray_with_s3(s3_endpoint):
    """A local Ray started after the S3 endpoint, so every worker (and job driver) sees
    AWS_ENDPOINT_URL; with its dashboard, the job server the scheduler submits to."""
    from tests.conftest import _free_port

    ray.init(num_cpus=2, include_dashboard=True, dashboard_port=_free_port(),
             namespace=NAMESPACE)
    yield
    ray.shutdown()


def test_scheduled_reencode_swaps_under_load_with_no_failed_query(ray_with_s3, s3_bucket):
    store = f"s3://{s3_bucket}/store"
    base = str(BUNDLED / "base.u8bin")
    run_build(check_build(build_config_from_dict({
        "name": "sift", "store": store, "source": {"uri": base}, "sample": {"size": 6000, "seed": 0},
        "index": {"nlist": 48, "nedge": 8, "code_bytes": 16},
        "shards": {"rows_per_shard": 5000}, "workers": {"encode": 2}})))
    start_service(ServeConfig(store=store, name="sift", searchers=2, replicas=1, poll_s=1.0))
    queries = open_vectors(str(BUNDLED / "query.u8bin")).read()
    gt, _ = read_ground_truth(str(BUNDLED / "gt.ibin"))
    client = Client.connect("sift")
    answers, failures, stop = [], [], threading.Event()

    def load(offset: int) -> None:
        i = offset
        while not stop.is_set():
            batch = queries[i % 190:i % 190 + 10]
            try:
                answers.append(client.search(batch, k=10, nprobe=16, nlines=128).version)
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                failures.append(repr(exc))
            i += 10

    threads = [threading.Thread(target=load, args=(j * 50,)) for j in range(4)]
    [t.start() for t in threads]
    scheduled = None
    try:
        new_model = train_for_index(store, "sift", sample_size=7000, seed=5)["model_version"]
        start_scheduler(ReencodeRequest(store, "sift", if_stale=True), every_s=1.0)
        deadline = time.monotonic() + 240
        while client.stats()["version"] != "v000002" and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2.0)                                  # keep the load on after the swap
    finally:
        stop.set()
        [t.join() for t in threads]
        scheduled = stop_scheduler("sift")
    try:
        # the re-encode ran as one Ray job the scheduler submitted; later periods found
        # the index up to date and submitted none
        jobs = [r for r in scheduled["runs"] if "job" in r]
        assert len(jobs) == 1, scheduled
        assert jobs[0]["status"] == "SUCCEEDED" and jobs[0]["version"] == "v000002"
        assert jobs[0]["model_version"] == new_model
        assert list_jobs(filters=[("submission_id", "=", jobs[0]["job"])])
        assert all(r["skipped"].startswith("up to date") for r in scheduled["runs"]
                   if "job" not in r)
        assert Store(store).index("sift").current_version() == "v000002"
        assert failures == []
        assert set(answers) == {"v000001", "v000002"}   # served before and after, one each
        assert answers[-1] == "v000002"
        sift = Store(store).index("sift")
        assert served_versions(sift) == {"v000002"}   # the coordinator's heartbeat
        after = client.search(queries, k=10, nprobe=16, nlines=128)
        assert after.version == "v000002"
        fresh = VLQIndex.from_model(store, new_model)
        fresh.add(open_vectors(base).read())
        d_fresh, i_fresh = fresh.search(queries, k=10, nprobe=16, nlines=128)
        # the served answer is the fresh index's (up to the order of near-tied distances:
        # the searchers compute them in other batches and threads)
        assert rows_equal_but_near_ties(after.distances, after.ids, d_fresh, i_fresh).all()
        differ = (np.asarray(after.ids) != i_fresh).any(axis=1).mean()
        assert abs(evaluate(after.ids, gt)["recall@10"]
                   - evaluate(i_fresh, gt)["recall@10"]) <= differ
    finally:
        stop_service("sift")

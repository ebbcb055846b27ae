"""Model registry, stale check, re-encode, lease and scheduler on a real local Ray."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from cluster.build.pipeline import check_build, run_build
from cluster.build.config import build_config_from_dict
from cluster.updates.reencode import ReencodeRequest, StaleCheckError, is_stale, reencode, train_for_index
from cluster.updates.scheduler import start_scheduler, stop_scheduler
from indexer import VLQIndex
from shards import Store, load_arrays, open_vectors, write_vectors
from shards.registry import (Lease, list_models, mark_serving, retain_versions,
                             served_versions)

pytestmark = pytest.mark.slow
BUNDLED = Path(__file__).resolve().parents[2] / "data" / "sift-small"


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with its dashboard: the job server the schedulers submit to."""
    from tests.conftest import _free_port

    ray.init(num_cpus=2, include_dashboard=True, dashboard_port=_free_port(),
             namespace="snapline-test")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def build_index(store: str, source: str, name: str = "sift") -> dict:
    return run_build(check_build(build_config_from_dict({
        "name": name, "store": store, "source": {"uri": source}, "sample": {"size": 6000, "seed": 0},
        "index": {"nlist": 48, "nedge": 8, "code_bytes": 16},
        "shards": {"rows_per_shard": 5000}, "workers": {"encode": 2}})))


@pytest.fixture(scope="module")
def built(local_ray, tmp_path_factory):
    """One built index for the tests that only re-encode it: (store folder, source path)."""
    folder = tmp_path_factory.mktemp("built")
    source = folder / "base.u8bin"
    write_vectors(str(source), open_vectors(str(BUNDLED / "base.u8bin")).read())
    summary = build_index(str(folder / "store"), str(source))
    return folder / "store", str(source), summary


def copy_of(built, tmp_path) -> tuple[str, str, dict]:
    folder, source, summary = built
    shutil.copytree(folder, tmp_path / "store")
    return str(tmp_path / "store"), source, summary


@pytest.fixture()
def source(tmp_path):
    x = open_vectors(str(BUNDLED / "base.u8bin")).read()
    path = tmp_path / "base.u8bin"
    write_vectors(str(path), x)
    return str(path)


def test_train_list_reencode_when_stale(built, tmp_path):
    store, source, built = copy_of(built, tmp_path)
    assert is_stale(store, "sift") == (False, built["model_version"], built["model_version"])
    trained = train_for_index(store, "sift", sample_size=7000, seed=1)
    new_model = trained["model_version"]
    assert new_model != built["model_version"]
    models = {m["model_version"]: m for m in list_models(store)}
    assert set(models) == {built["model_version"], new_model}
    assert models[new_model]["index"] == "sift" and models[new_model]["sample"]["rows"] == 7000
    assert models[new_model]["sample"]["seed"] == 1
    assert 0.5 < models[new_model]["validation"]["recall@10"] <= 1.0
    assert is_stale(store, "sift") == (True, built["model_version"], new_model)

    summary = reencode(ReencodeRequest(store, "sift", if_stale=True))
    assert summary["model_version"] == new_model and summary["version"] == "v000002"
    assert Store(store).index("sift").current_version() == "v000002"
    _, data = load_arrays(f"{store}/indexes/sift")
    assert np.array_equal(np.sort(data.ids), np.arange(20000))
    # the re-encoded index answers like a fresh single-process index of the new model
    fresh = VLQIndex.from_model(store, new_model)
    fresh.add(open_vectors(source).read())
    queries = open_vectors(str(BUNDLED / "query.u8bin")).read()
    _, i_re = VLQIndex.load(f"{store}/indexes/sift").search(queries, k=10, nprobe=16, nlines=128)
    _, i_fresh = fresh.search(queries, k=10, nprobe=16, nlines=128)
    assert (i_re == i_fresh).all(axis=1).mean() >= 0.999
    assert "skipped" in reencode(ReencodeRequest(store, "sift", if_stale=True))


def test_bad_models_and_changed_source_are_refused(local_ray, tmp_path, source):
    store = str(tmp_path / "store")
    build_index(store, source)
    # a model of another dimension, registered for this index
    other = VLQIndex(64, nlist=16, nedge=4, code_bytes=8)
    other.train(np.random.default_rng(0).normal(size=(2000, 64)).astype(np.float32))
    wrong_dim = other.save_model(store, extra_meta={"build": {"name": "sift"},
                                                    "created": "9999-01-01T00:00:00"})
    with pytest.raises(StaleCheckError, match="takes 64-d vectors, index 'sift' holds 128-d"):
        reencode(ReencodeRequest(store, "sift", model=wrong_dim))
    with pytest.raises(StaleCheckError, match="m-0000000000000000"):
        reencode(ReencodeRequest(store, "sift", model="m-0000000000000000"))
    # a corrupted model file
    good = train_for_index(store, "sift", sample_size=6000, seed=2)["model_version"]
    victim = next((Path(store) / "models" / good).glob("centroids*"))
    original = victim.read_bytes()
    victim.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    with pytest.raises(StaleCheckError, match="checksum"):
        reencode(ReencodeRequest(store, "sift", model=good))
    victim.write_bytes(original)
    # the source lost rows since the build
    write_vectors(source, open_vectors(source).read()[:15000])
    with pytest.raises(StaleCheckError, match="now has 15000 rows"):
        reencode(ReencodeRequest(store, "sift", model=good))
    assert Store(store).index("sift").current_version() == "v000001"     # nothing was published


def test_lease_has_one_holder_and_expires(store_uri):
    root = Store(store_uri).index("idx")
    leases = [Lease(root, ttl_s=1.0) for _ in range(8)]
    results = [None] * 8
    barrier = threading.Barrier(8)

    def take(i):
        barrier.wait()
        results[i] = leases[i].acquire()

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sum(results) == 1
    holder = leases[results.index(True)]
    assert Lease(root).holder()["owner"] == holder.owner
    time.sleep(1.2)                                         # not renewed: expires
    late = Lease(root, ttl_s=30)
    assert late.acquire() and not Lease(root).acquire()
    late.release()
    assert Lease(root).holder() is None


def test_killed_reencode_leaves_the_served_version_and_the_next_run_completes(
        local_ray, built, tmp_path):
    store, source, _ = copy_of(built, tmp_path)
    new_model = train_for_index(store, "sift", sample_size=7000, seed=3)["model_version"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "cluster.cli", "reencode", "--store", store,
                             "--name", "sift", "--address", local_ray, "--lease-ttl", "3"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    parts = lambda: list(Path(store).glob("indexes/sift/v000002/shards/*.parquet"))  # noqa: E731
    while not parts() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert Store(store).index("sift").current_version() == "v000001"
    assert not (Path(store) / "indexes/sift/v000002/manifest.json").exists()
    assert VLQIndex.load(f"{store}/indexes/sift").ntotal == 20000       # still served
    time.sleep(3.5)                                                     # the dead run's lease expires
    summary = reencode(ReencodeRequest(store, "sift", model=new_model))
    assert summary["version"] == "v000002" and summary["resumed"]
    assert Store(store).index("sift").current_version() == "v000002"
    _, data = load_arrays(f"{store}/indexes/sift")
    assert np.array_equal(np.sort(data.ids), np.arange(20000))


def test_two_schedulers_run_one_reencode(local_ray, built, tmp_path):
    store, source, _ = copy_of(built, tmp_path)
    train_for_index(store, "sift", sample_size=7000, seed=4)
    schedulers = [start_scheduler(ReencodeRequest(store, f"sift", if_stale=True), every_s=1.0)
                  for _ in range(1)]
    # a second scheduler as another machine would start it: another actor, same index
    from cluster.updates.scheduler import ReencodeScheduler
    schedulers.append(ReencodeScheduler.options(name="other-machine", num_cpus=0).remote(
        ReencodeRequest(store, "sift", if_stale=True), 1.0))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        runs = [ray.get(s.status.remote())["runs"] for s in schedulers]
        if (Store(store).index("sift").current_version() == "v000002"
                and all(len(r) >= 2 for r in runs)):
            break
        time.sleep(1)
    for s in schedulers:
        ray.get(s.stop.remote())
        ray.kill(s)
    assert Store(store).index("sift").current_version() == "v000002"
    versions = sorted(p.name for p in Path(store).glob("indexes/sift/v*"))
    assert versions == ["v000001", "v000002"]                           # one re-encode, not two
    reencodes = [run for r in runs for run in r if "version" in run and "skipped" not in run]
    assert len({run["job"] for run in reencodes}) == 1                  # one Ray job
    assert sum(run["submitted"] for r in runs for run in r if "job" in run) <= 2


def test_a_reencode_checks_the_model_and_the_source_once(local_ray, built, tmp_path,
                                                        monkeypatch):
    """Counted by wrappers around the real functions in the driver (the encode workers
    load the model to use it, in their own processes)."""
    import collections

    import cluster.build
    import cluster.updates.reencode
    import cluster.updates.reencode_plan

    store, _, summary = copy_of(built, tmp_path)
    counts = collections.Counter()
    for module in (cluster.build.pipeline, cluster.updates.reencode,
                   cluster.updates.reencode_plan):
        for name in ("load_model", "open_vectors"):
            if not hasattr(module, name):
                continue

            def counted(*args, _original=getattr(module, name), _name=name, **kwargs):
                counts[_name] += 1
                return _original(*args, **kwargs)
            monkeypatch.setattr(module, name, counted)
    result = reencode(ReencodeRequest(store, "sift", model=summary["model_version"]))
    assert result["version"] == "v000002" and result["previous_version"] == "v000001"
    assert counts == {"load_model": 1, "open_vectors": 1}


def test_scheduler_stops_by_name_and_from_the_cli(local_ray, built, tmp_path, capsys):
    from cluster import cli
    from cluster.updates.scheduler import SCHEDULER_NAMESPACE, scheduler_name

    store, _, _ = copy_of(built, tmp_path)
    start_scheduler(ReencodeRequest(store, "sift", if_stale=True), every_s=3600)
    assert ray.get_actor(scheduler_name("sift"), namespace=SCHEDULER_NAMESPACE)
    status = stop_scheduler("sift")
    assert status["name"] == "sift" and status["every_s"] == 3600
    with pytest.raises(ValueError):
        ray.get_actor(scheduler_name("sift"), namespace=SCHEDULER_NAMESPACE)
    with pytest.raises(ValueError, match="no re-encode scheduler for index 'sift'"):
        stop_scheduler("sift")

    assert cli.main(["schedule", "--store", store, "--name", "sift", "--every", "1h",
                     "--address", local_ray]) == 0
    assert ray.get_actor(scheduler_name("sift"), namespace=SCHEDULER_NAMESPACE)
    assert cli.main(["schedule", "--stop", "--name", "sift", "--address", local_ray]) == 0
    assert "stopped actor reencode:sift" in capsys.readouterr().out
    with pytest.raises(ValueError):
        ray.get_actor(scheduler_name("sift"), namespace=SCHEDULER_NAMESPACE)
    assert cli.main(["schedule", "--stop", "--name", "sift", "--address", local_ray]) == 2
    assert "no re-encode scheduler for index 'sift'" in capsys.readouterr().err
    assert cli.main(["schedule", "--name", "sift", "--address", local_ray]) == 2
    assert "--store and --every are required" in capsys.readouterr().err


def test_retention_keeps_current_and_the_newest(tmp_path, small_data):
    from shards import Store, publish

    store = str(tmp_path / "store")
    index = VLQIndex(small_data["d"], nlist=8, nedge=4, code_bytes=8)
    index.train(small_data["learn"])
    for i in range(4):
        index.add(small_data["base"][i * 100:(i + 1) * 100])
        publish(Store(store).index("idx"), index.to_arrays())
    root = Store(store).index("idx")
    assert root.current_version() == "v000004"
    mark_serving(root, "coordinator-a", "v000001")     # a server still on v000001
    assert served_versions(root) == {"v000001"}
    assert retain_versions(root, keep=2) == ["v000002"]
    mark_serving(root, "coordinator-a", None)          # it moved on / stopped
    assert retain_versions(root, keep=2) == ["v000001"]
    assert sorted(p.name for p in Path(store).glob("indexes/idx/v*")) == ["v000003", "v000004"]
    with pytest.raises(ValueError, match="keep must be >= 1"):
        retain_versions(root, keep=0)


def test_stopping_a_scheduler_stops_its_job_and_a_rerun_completes(local_ray, built, tmp_path):
    """`stop_scheduler` while its re-encode job runs: the job ends STOPPED, CURRENT stays
    on the served version, and once the lease expired a re-encode completes it."""
    from cluster.updates.scheduler import DONE, jobs_client

    store, _, _ = copy_of(built, tmp_path)
    new_model = train_for_index(store, "sift", sample_size=7000, seed=6)["model_version"]
    handle = start_scheduler(ReencodeRequest(store, "sift", if_stale=True, lease_ttl_s=3.0),
                             every_s=3600)
    deadline, job = time.monotonic() + 120, None
    while job is None and time.monotonic() < deadline:
        job = ray.get(handle.status.remote())["job_running"]
        time.sleep(0.1)
    assert job is not None, "no re-encode job submitted"
    status = stop_scheduler("sift")
    assert status["job_running"] == job
    jobs = jobs_client()
    while jobs.get_job_status(job).value not in DONE and time.monotonic() < deadline:
        time.sleep(0.5)
    assert jobs.get_job_status(job).value == "STOPPED"
    assert Store(store).index("sift").current_version() == "v000001"
    # a rerun skips while the stopped run's lease lives (its driver may still be exiting),
    # then completes the version
    summary = {"skipped": "not run"}
    while "skipped" in summary and time.monotonic() < deadline + 60:
        time.sleep(1.0)
        summary = reencode(ReencodeRequest(store, "sift", model=new_model))
    assert summary.get("version") == "v000002", summary
    assert Store(store).index("sift").current_version() == "v000002"

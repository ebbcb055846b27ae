"""The distributed build on a real Ray head, submitted with `ray job submit`."""
from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

BUNDLED = Path(__file__).resolve().parents[2] / "data" / "sift-small"

from indexer import VLQIndex
from shards import Store, load_arrays, open_vectors, resolve

pytestmark = pytest.mark.slow


def write_config(path: Path, **doc) -> Path:
    base = {"name": "sift", "source": {"uri": str(BUNDLED / "base.u8bin")},
            "sample": {"size": 8000, "seed": 0}, "index": {"nlist": 64, "nedge": 16, "code_bytes": 16},
            "shards": {"rows_per_shard": 5000}, "workers": {"encode": 2}}
    path.write_text(yaml.safe_dump({**base, **doc}))
    return path


def run_job(head, config: Path, *extra: str) -> str:
    job = f"snapline-build-{uuid.uuid4().hex[:8]}"
    head.submit(config, job, *extra)
    status = head.wait(job)
    assert status == "SUCCEEDED", head.logs(job)[-4000:]
    return job


def published_ids(index_root: str) -> np.ndarray:
    _, data = load_arrays(index_root)
    return data.ids


def parts_in(store: Path, name: str) -> list[Path]:
    return sorted(store.glob(f"indexes/{name}/v*/shards/part-*.parquet"))


def test_job_submit_builds_the_same_index_as_one_process(ray_head, tmp_path, s3_bucket):
    store = f"s3://{s3_bucket}/store"
    job = run_job(ray_head, write_config(tmp_path / "build.yaml", store=store))
    assert "snapline build: published sift/v000001" in ray_head.logs(job)
    root = f"{store}/indexes/sift"
    assert Store(store).index("sift").current_version() == "v000001"
    manifest, _, _ = resolve(root)
    assert len(manifest.shards) == 4 and manifest.ntotal == 20000
    ids = published_ids(root)
    assert np.array_equal(np.sort(ids), np.arange(20000))        # every source row once

    distributed = VLQIndex.load(root)
    single = VLQIndex.from_model(store, manifest.model_version)
    single.add(open_vectors(str(BUNDLED / "base.u8bin")).read())
    queries = open_vectors(str(BUNDLED / "query.u8bin")).read()
    _, i_dist = distributed.search(queries, k=10, nprobe=16, nlines=128)
    _, i_single = single.search(queries, k=10, nprobe=16, nlines=128)
    assert (i_dist == i_single).all(axis=1).mean() >= 0.999


def _alive_encoder_pids(head) -> list[int]:
    out = head.ray("list", "actors", "--address", head.dashboard, "--format", "json",
                   "--filter", "state=ALIVE", "--limit", "1000").stdout
    return [int(a["pid"]) for a in json.loads(out) if "ShardEncoder" in a["class_name"]]


def test_killed_encode_worker_on_five_million_rows(ray_head, tmp_path, tiled_source):
    """SIGKILL an encoder mid-build: Ray restarts it and retries its partition; every id
    lands once; every worker's peak RSS stays under 1.5 GB on a 5M-row source."""
    source = tiled_source(tmp_path / "base5m.u8bin", 5_000_000)
    store = tmp_path / "store"
    config = write_config(tmp_path / "build.yaml", store=str(store), source={"uri": str(source)},
                          sample={"size": 20000, "seed": 1}, shards={"rows_per_shard": 250_000})
    job = f"snapline-kill-{uuid.uuid4().hex[:8]}"
    summary_path = tmp_path / "summary.json"
    ray_head.submit(config, job, "--summary-json", str(summary_path))
    deadline = time.monotonic() + 300
    while not parts_in(store, "sift") and time.monotonic() < deadline:
        time.sleep(0.2)
    pids = _alive_encoder_pids(ray_head)
    written_at_kill = len(parts_in(store, "sift"))
    assert pids and 0 < written_at_kill < 20, (pids, written_at_kill)
    os.kill(pids[0], signal.SIGKILL)
    assert ray_head.wait(job) == "SUCCEEDED", ray_head.logs(job)[-4000:]
    summary = json.loads(summary_path.read_text())
    assert summary["ntotal"] == 5_000_000 and summary["shards"] == 20
    assert summary["peak_worker_rss_mb"] < 1536
    ids = published_ids(str(store / "indexes" / "sift"))
    assert ids.size == 5_000_000
    assert np.array_equal(np.sort(ids), np.arange(5_000_000))


def test_stopped_job_leaves_nothing_visible_and_a_rerun_resumes(ray_head, tmp_path, tiled_source):
    source = tiled_source(tmp_path / "base1m.u8bin", 1_000_000)
    store = tmp_path / "store"
    config = write_config(tmp_path / "build.yaml", store=str(store), source={"uri": str(source)},
                          shards={"rows_per_shard": 50_000})
    job = f"snapline-stop-{uuid.uuid4().hex[:8]}"
    ray_head.submit(config, job)
    deadline = time.monotonic() + 300
    while len(parts_in(store, "sift")) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    ray_head.ray("job", "stop", "--address", ray_head.dashboard, job)
    assert ray_head.wait(job) == "STOPPED"
    written = len(parts_in(store, "sift"))
    assert 3 <= written < 20
    assert Store(str(store)).index("sift").current_version() is None
    assert not list(store.glob("indexes/sift/*/manifest.json"))    # no partial version
    with pytest.raises(FileNotFoundError):
        VLQIndex.load(str(store / "indexes" / "sift"))

    summary_path = tmp_path / "summary.json"
    run_job(ray_head, config, "--summary-json", str(summary_path))
    summary = json.loads(summary_path.read_text())
    assert summary["resumed"] and summary["version"] == "v000001"
    assert summary["shards_skipped"] >= written and summary["shards"] == 20
    root = str(store / "indexes" / "sift")
    assert np.array_equal(np.sort(published_ids(root)), np.arange(1_000_000))

    # the resumed index is the index a fresh uninterrupted build with that model makes
    fresh = write_config(tmp_path / "fresh.yaml", name="fresh", store=str(store),
                         source={"uri": str(source)}, sample=None,
                         model=summary["model_version"], shards={"rows_per_shard": 50_000})
    run_job(ray_head, fresh)
    resumed_manifest, _, _ = resolve(root)
    fresh_manifest, _, _ = resolve(str(store / "indexes" / "fresh"))
    assert ([s.sha256 for s in resumed_manifest.shards]
            == [s.sha256 for s in fresh_manifest.shards])

"""Model update under load: re-encode throughput against a fresh build, and the swap's
effect on query latency (p50/p99 before, during, after).

    .venv/bin/python bench/model_update.py ../shared/data/sift-real-dev \
        --out bench/out/model-update/sift-16.json

1. Build the base (model trained on a 100k sample of the base) with 2 encode workers.
2. Serve it (2 searchers, 1 replica) and run client threads for the whole run, each
   sending batches of 10 queries (k=10, nprobe 32, nlines 256), recording latency,
   version and errors.
3. After a quiet `--window` seconds, train a new model on a fresh sample (seed 1) and
   re-encode the index with it (`reencode`, 2 workers); the coordinator polls CURRENT and
   swaps; then another quiet window.
Latency is split into: before (first window), during (training start to the first answer
from the new version), after (the last window).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import ray  # noqa: E402

from bench.dataset_files import find_dataset_files  # noqa: E402
from bench.json_records import write_json  # noqa: E402
from cluster.build.pipeline import check_build, run_build  # noqa: E402
from cluster.build.config import build_config_from_dict  # noqa: E402
from cluster.client import Client  # noqa: E402
from cluster.serving.coordinator import start_service, stop_service  # noqa: E402
from cluster.updates.reencode import ReencodeRequest, reencode, train_for_index  # noqa: E402
from cluster.serving.types import NAMESPACE, ServeConfig  # noqa: E402
from indexer.evaluation import evaluate  # noqa: E402
from shards import open_vectors, read_ground_truth  # noqa: E402


def percentiles(lat: list[float]) -> dict:
    if not lat:
        return {"n": 0}
    a = np.asarray(lat) * 1e3
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--window", type=float, default=20.0)
    ap.add_argument("--sample-size", type=int, default=100_000)
    args = ap.parse_args()
    files = find_dataset_files(args.data_dir)
    queries = open_vectors(str(files.query)).read()
    gt, _ = read_ground_truth(str(files.gt))
    scratch = Path(tempfile.mkdtemp(prefix="snapline-update-bench-"))
    store = str(scratch / "store")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, namespace=NAMESPACE)
    out: dict = {"data": args.data_dir, "threads": args.threads, "window_s": args.window}
    try:
        fresh = run_build(check_build(build_config_from_dict({
            "name": "idx", "store": store, "source": {"uri": str(files.base.resolve())},
            "sample": {"size": args.sample_size, "seed": 0}, "index": {"nlist": "auto"},
            "shards": {"rows_per_shard": 100_000}, "workers": {"encode": 2}})))
        out["fresh_build"] = fresh
        start_service(ServeConfig(store=store, name="idx", searchers=2, replicas=1, poll_s=1.0))
        client = Client.connect("idx")
        log: list[tuple[float, float, str]] = []
        errors: list[str] = []
        stop = threading.Event()

        def load(offset: int) -> None:
            i = offset
            while not stop.is_set():
                start = i % (queries.shape[0] - 10)
                t0 = time.perf_counter()
                try:
                    version = client.search(queries[start:start + 10], k=10, nprobe=32,
                                            nlines=256).version
                    log.append((time.time(), time.perf_counter() - t0, version))
                except Exception as exc:  # noqa: BLE001 - counted
                    errors.append(repr(exc))
                i += 10

        threads = [threading.Thread(target=load, args=(j * 97,)) for j in range(args.threads)]
        [t.start() for t in threads]
        t_start = time.time()
        time.sleep(args.window)
        t_update = time.time()
        trained = train_for_index(store, "idx", sample_size=args.sample_size, seed=1)
        t_trained = time.time()
        summary = reencode(ReencodeRequest(store, "idx", model=trained["model_version"]))
        t_published = time.time()
        while client.stats()["version"] != summary["version"]:
            time.sleep(0.2)
        t_swapped = time.time()
        time.sleep(args.window)
        stop.set()
        [t.join() for t in threads]
        first_new = min(t for t, _, v in log if v == summary["version"])
        out["reencode"] = summary
        out["train"] = trained
        out["timeline_s"] = {"train": t_trained - t_update, "reencode": t_published - t_trained,
                             "publish_to_swap": t_swapped - t_published,
                             "first_new_answer_after_publish": first_new - t_published}
        out["latency"] = {
            "before": percentiles([d for t, d, _ in log if t_start <= t < t_update]),
            "during": percentiles([d for t, d, _ in log if t_update <= t < first_new]),
            "after": percentiles([d for t, d, _ in log if t >= t_swapped + 1.0])}
        out["errors"] = len(errors)
        out["error_examples"] = errors[:3]
        out["versions_answered"] = sorted({v for _, _, v in log})
        after = client.search(queries, k=10, nprobe=32, nlines=256)
        out["recall_after"] = evaluate(after.ids, gt)
        out["reencode_vs_fresh_encode_vectors_per_s"] = (
            summary["encode_vectors_per_s"] / fresh["encode_vectors_per_s"])
        stop_service("idx")
    finally:
        ray.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)
    write_json(out, args.out, default=str)
    print(json.dumps({k: out[k] for k in ("timeline_s", "latency", "errors",
                                          "reencode_vs_fresh_encode_vectors_per_s")}, indent=1))


if __name__ == "__main__":
    main()

"""Serving benchmark: the Ray query service against single-process search (SPEC 5).

    .venv/bin/python bench/serve_load.py ../shared/data/sift-real-dev --out bench/out/serve/sift-real-dev.json

On one data set, in one process that starts a local Ray (2 CPUs):
1. builds the index once (or reuses it from --store) and publishes it as 1, 2 and 4 shards;
2. single-process search of the same queries and parameters: the whole query set as one
   batch, and client-sized batches one after another (the figure a service call adds to);
   the share of the coarse step (encoder, centroid distances, lookup tables) in a batch;
3. the 1/2/4-shard equality: the service's ids against the single-process ids;
4. for 1 and 2 searchers (one replica): one client thread in sequence (latency with no
   queueing, i.e. the per-batch overhead of the service) and then `--threads` client
   threads for `--seconds` (QPS, p50/p99 latency as each client sees it, errors);
5. concurrent single-query callers (`--callers`, default 16 and 64): threads of this
   process and `--caller-processes` client processes (Ray actors, one Client each), each
   sending one query per call, against the service and against a bare Ray echo actor
   (the ceiling of calls that travel alone), for every `--batch-window-ms` given (0: no
   request batching), plus one caller in sequence through each (latency).
Writes one JSON record with every parameter and figure. The machine's 2 cores are
shared with other work, so the figures carry that noise.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import ray  # noqa: E402

from bench.dataset_files import find_dataset_files  # noqa: E402
from bench.json_records import write_json  # noqa: E402
from cluster.client import Client  # noqa: E402
from cluster.serving.coordinator import get_coordinator, start_service, stop_service  # noqa: E402
from cluster.serving.types import NAMESPACE, SearchParams, ServeConfig  # noqa: E402
from indexer import VLQIndex  # noqa: E402
from indexer.evaluation import evaluate  # noqa: E402
from indexer.sizing import blas_controller, ivf_nlist_for, vlq_nlist_for  # noqa: E402
from shards import Store, open_vectors, publish, read_ground_truth  # noqa: E402

SHARDINGS = (1, 2, 4)


def build(data_dir: str, store: str, name: str, code_bytes: int, nedge: int) -> dict:
    """Train, add, publish as 1/2/4 shards, unless the store already has them."""
    names = {n: f"{name}-s{n}" for n in SHARDINGS}
    if all(Store(store).index(v).current_version() for v in names.values()):
        return {"built": False, "names": names}
    files = find_dataset_files(data_dir)
    learn, base = open_vectors(str(files.learn)), open_vectors(str(files.base))
    nlist = vlq_nlist_for(ivf_nlist_for(base.n, learn.n), learn.n)
    index = VLQIndex(base.d, nlist=nlist, nedge=min(nedge, nlist - 1), code_bytes=code_bytes)
    t0 = time.perf_counter()
    index.train(learn.read())
    for start in range(0, base.n, 100_000):
        index.add(base.read(start, min(base.n, start + 100_000)))
    arrays = index.to_arrays()
    for n, versioned in names.items():
        publish(Store(store).index(versioned), arrays, rows_per_shard=-(-base.n // n),
                source={"uri": str(files.base)})
    return {"built": True, "build_s": time.perf_counter() - t0, "names": names}


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {f"p{p}": float(np.percentile(a, p)) for p in (50, 90, 99)} if a.size else {}


def single_process(index: VLQIndex, queries: np.ndarray, params: dict, batch: int,
                   seconds: float) -> dict:
    index.search(queries[:batch], **params)                       # warm up
    t0 = time.perf_counter()
    _, ids = index.search(queries, **params)
    whole = time.perf_counter() - t0
    lat, n, t_end = [], 0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        start = (n * batch) % (queries.shape[0] - batch)
        t = time.perf_counter()
        index.search(queries[start:start + batch], **params)
        lat.append((time.perf_counter() - t) * 1e3)
        n += 1
    coarse = coarse_share(index, queries[:batch], params)
    return {"ids": ids, "whole_batch_qps": queries.shape[0] / whole,
            "batched_qps": n * batch / sum(lat) * 1e3, "batch_latency_ms": percentiles(lat),
            "coarse_step": coarse}


def coarse_share(index: VLQIndex, q: np.ndarray, params: dict, repeats: int = 50) -> dict:
    """Time of the coarse step (encoder, centroid distances, lookup tables) vs a search."""
    qf = q.astype(np.float32)
    quantizer = index.quantizer

    def coarse():    # as VLQIndex._search_batch runs it: one BLAS thread
        with blas_controller().limit(limits=1, user_api="blas"):
            x = index.encoder.encode(qf)
            quantizer.centroid_distances(x)
            quantizer.query_tables(x)

    def timed(fn):
        best = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            best.append(time.perf_counter() - t)
        return float(np.median(best)) * 1e3

    coarse_ms = timed(coarse)
    search_ms = timed(lambda: index.search(qf, **params))
    return {"queries": int(q.shape[0]), "coarse_ms": coarse_ms, "search_ms": search_ms,
            "share": coarse_ms / search_ms}


@ray.remote(num_cpus=0)
class _Echo:
    """An actor that returns its input: the cost of one Ray actor round trip."""

    def echo(self, queries, params):
        return queries


def hop_latencies(client: Client, name: str, queries, params: dict, repeats: int = 200) -> dict:
    """Median ms of one batch along each path, one call at a time: a bare actor round
    trip, a searcher called directly, the coordinator, the client (coordinator + checks)."""
    coordinator = get_coordinator(name)
    searcher = ray.get(coordinator.searchers.remote())[0]["handle"]
    echo = _Echo.remote()
    sp = SearchParams(**params)
    paths = {"actor_round_trip": lambda: ray.get(echo.echo.remote(queries, sp)),
             "searcher_direct": lambda: ray.get(searcher.search.remote(queries, sp)),
             "coordinator": lambda: ray.get(coordinator.search.remote(queries, sp, None)),
             "client": lambda: client.search(queries, **params)}
    out = {}
    for path, call in paths.items():
        call()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            call()
            times.append((time.perf_counter() - t0) * 1e3)
        out[path] = float(np.median(times))
    ray.kill(echo)
    return out


def client_load(client: Client, queries, params, batch, threads, seconds) -> dict:
    """`threads` client threads searching batches of `batch` queries for `seconds`."""
    def call(q):
        result = client.search(q, **params)
        if result.partial:
            raise RuntimeError(f"partial: {result.missing_shards}")

    return caller_threads(call, queries, threads, seconds, batch)


def caller_threads(call, queries, threads: int, seconds: float, batch: int = 1) -> dict:
    """`threads` threads of this process, each calling `call` with `batch` queries at a
    time for `seconds`: queries per second, latency percentiles as each caller sees them,
    errors."""
    lat, errors = [[] for _ in range(threads)], []
    stop = threading.Event()

    def run(t):
        i = t
        while not stop.is_set():
            start = (i * batch) % (queries.shape[0] - batch + 1)
            t0 = time.perf_counter()
            try:
                call(queries[start:start + batch])
                lat[t].append((time.perf_counter() - t0) * 1e3)
            except Exception as exc:
                errors.append(repr(exc))
            i += threads

    workers = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    all_lat = [x for per in lat for x in per]
    return {"threads": threads, "batch": batch, "seconds": elapsed, "calls": len(all_lat),
            "queries": len(all_lat) * batch, "qps": len(all_lat) * batch / elapsed,
            "latency_ms": percentiles(all_lat), "errors": len(errors),
            "first_errors": errors[:5]}


@ray.remote(num_cpus=0)
class _CallerProcess:
    """A client process of its own: threads sending one query per call, to the service
    (through a Client of this process) or to the echo actor."""

    def __init__(self, name: str, batch_window_ms: float):
        self.client = Client.connect(name, batch_window_ms=batch_window_ms)

    def run(self, target, queries, params: dict, threads: int, seconds: float) -> dict:
        if target == "service":
            def call(q):
                if self.client.search(q, **params).partial:
                    raise RuntimeError("partial result")
        else:
            sp = SearchParams(**params)

            def call(q):
                ray.get(target.echo.remote(q, sp))
        return caller_threads(call, queries, threads, seconds)


def single_query_callers(client: Client, name: str, queries, params: dict, callers: list[int],
                         processes: int, seconds: float, window_ms: float) -> dict:
    """Concurrent single-query callers, as threads of this process and as `processes`
    client processes, against the service and against a bare Ray echo actor (the ceiling
    of calls that each travel alone), plus one caller in sequence through each."""
    echo = _Echo.remote()
    sp = SearchParams(**params)
    q = queries.astype(np.float32)

    def via_echo(x):
        ray.get(echo.echo.remote(x, sp))

    def via_service(x):
        if client.search(x, **params).partial:
            raise RuntimeError("partial result")

    via_echo(q[:1])
    via_service(q[:1])
    out = {"window_ms": window_ms, "processes": processes,
           "sequential": {"echo": caller_threads(via_echo, q, 1, seconds),
                          "service": caller_threads(via_service, q, 1, seconds)},
           "threads": {}, "processes_runs": {}}
    procs = [_CallerProcess.remote(name, window_ms) for _ in range(processes)]
    for n in callers:
        out["threads"][str(n)] = {"echo": caller_threads(via_echo, q, n, seconds),
                                  "service": caller_threads(via_service, q, n, seconds)}
        per = max(1, n // processes)
        runs = {}
        for target in (echo, "service"):
            parts = ray.get([p.run.remote(target, q, params, per, seconds) for p in procs])
            runs["service" if target == "service" else "echo"] = {
                "threads_per_process": per, "qps": sum(r["qps"] for r in parts),
                "latency_p50_ms_per_process": [r["latency_ms"].get("p50") for r in parts],
                "latency_p99_ms_per_process": [r["latency_ms"].get("p99") for r in parts],
                "errors": sum(r["errors"] for r in parts),
                "first_errors": [e for r in parts for e in r["first_errors"]][:5]}
        out["processes_runs"][str(n)] = runs
        t, pr = out["threads"][str(n)], runs
        print(f"  {n} single-query callers: threads {t['service']['qps']:.0f} QPS "
              f"(p50 {t['service']['latency_ms']['p50']:.2f} ms, p99 "
              f"{t['service']['latency_ms']['p99']:.2f} ms; echo {t['echo']['qps']:.0f}/s), "
              f"{processes} processes {pr['service']['qps']:.0f} QPS (echo "
              f"{pr['echo']['qps']:.0f}/s), errors {t['service']['errors'] + pr['service']['errors']}")
    for p in procs:
        ray.kill(p)
    ray.kill(echo)
    seq = out["sequential"]
    print(f"  one caller in sequence: service p50 {seq['service']['latency_ms']['p50']:.2f} ms, "
          f"echo p50 {seq['echo']['latency_ms']['p50']:.2f} ms")
    return out


def serve_and_load(args, store: str, served: str, queries, params: dict, searchers: int,
                   window: float) -> dict:
    """Serve `served` with `searchers` searchers and a batching window, run the loads."""
    threads = args.searcher_threads or max(1, (os.cpu_count() or 1) // searchers)
    start_service(ServeConfig(store, served, searchers=searchers, poll_s=0, timeout_s=120,
                              searcher_threads=threads, batch_window_ms=window))
    client = Client.connect(served, batch_window_ms=window)
    client.search(queries[:args.batch], **params)         # warm up
    entry = {"searchers": searchers, "replicas": 1, "threads_per_searcher": threads,
             "shards": 4, "batch_window_ms": window}
    if not args.skip_batch_load:
        hops = hop_latencies(client, served, queries[:args.batch].astype(np.float32), params)
        sequential = client_load(client, queries, params, args.batch, 1,
                                 args.sequential_seconds)
        loaded = client_load(client, queries, params, args.batch, args.threads, args.seconds)
        entry.update(hops_ms=hops, sequential=sequential, load=loaded)
        print(f"{searchers} searcher(s): median ms per batch of {args.batch}: "
              + ", ".join(f"{k} {v:.2f}" for k, v in hops.items()))
        print(f"{searchers} searcher(s): 1 client {sequential['qps']:.0f} QPS p50 "
              f"{sequential['latency_ms']['p50']:.1f} ms; {args.threads} clients "
              f"{loaded['qps']:.0f} QPS p50 {loaded['latency_ms']['p50']:.1f} ms p99 "
              f"{loaded['latency_ms']['p99']:.1f} ms, {loaded['errors']} errors")
    if args.callers:
        print(f"{searchers} searcher(s), batching window {window} ms:")
        entry["single_query_callers"] = single_query_callers(
            client, served, queries, params, args.callers, args.caller_processes,
            args.caller_seconds, window)
    entry["coordinator_stats"] = client.stats()
    stop_service(served)
    return entry


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--store", default="bench/out/serve/store")
    parser.add_argument("--name", default=None, help="index name prefix (default: data set)")
    parser.add_argument("--code-bytes", type=int, default=16)
    parser.add_argument("--nedge", type=int, default=32)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--nlines", type=int, default=256)
    parser.add_argument("--batch", type=int, default=10, help="queries per client call")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--seconds", type=float, default=60.0, help="per load run")
    parser.add_argument("--sequential-seconds", type=float, default=10.0)
    parser.add_argument("--searchers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--searcher-threads", type=int, default=None,
                        help="scan threads per searcher (default: cores // searchers)")
    parser.add_argument("--skip-equality", action="store_true")
    parser.add_argument("--callers", type=int, nargs="*", default=[16, 64],
                        help="concurrent single-query callers (none: skip that part)")
    parser.add_argument("--caller-processes", type=int, default=4)
    parser.add_argument("--caller-seconds", type=float, default=10.0)
    parser.add_argument("--batch-window-ms", type=float, nargs="+", default=[3.0],
                        help="client and service request batching windows to run, each "
                             "with its own service (0: no batching)")
    parser.add_argument("--skip-batch-load", action="store_true",
                        help="skip the --threads x --batch load runs")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = _parse_args(argv)
    name = args.name or Path(args.data_dir).name
    params = {"k": args.k, "nprobe": args.nprobe, "nlines": args.nlines}
    store = os.path.abspath(args.store)

    built = build(args.data_dir, store, name, args.code_bytes, args.nedge)
    files = find_dataset_files(args.data_dir)
    queries = open_vectors(str(files.query)).read()
    gt, _ = read_ground_truth(str(files.gt))
    index = VLQIndex.load(f"{store}/indexes/{built['names'][1]}")
    single = single_process(index, queries, params, args.batch, args.sequential_seconds)
    ref_ids = single.pop("ids")
    record = {"data": Path(args.data_dir).name, "nb": index.ntotal, "nq": int(queries.shape[0]),
              "nlist": index.nlist, "nedge": index.nedge, "code_bytes": index.code_bytes,
              "params": params, "batch": args.batch, "client_threads": args.threads,
              "load_seconds": args.seconds, "searcher_threads": args.searcher_threads,
              "cpus": os.cpu_count(),
              "machine": platform.processor() or platform.machine(),
              "recall": evaluate(ref_ids, gt), "build": built, "single_process": single,
              "equality": {}, "service": {}}
    print(f"single process: {single['whole_batch_qps']:.0f} QPS whole batch, "
          f"{single['batched_qps']:.0f} QPS in batches of {args.batch} "
          f"(p50 {single['batch_latency_ms']['p50']:.2f} ms); coarse step "
          f"{single['coarse_step']['share']:.1%} of a batch")
    del index

    ray.init(num_cpus=2, include_dashboard=False, namespace=NAMESPACE, log_to_driver=False)
    try:
        for n in () if args.skip_equality else SHARDINGS:
            start_service(ServeConfig(store, built["names"][n], searchers=n, poll_s=0,
                                      timeout_s=120))
            result = Client.connect(built["names"][n]).search(queries, **params)
            stop_service(built["names"][n])
            same = float((result.ids == ref_ids).mean())
            record["equality"][str(n)] = {"shards": n, "searchers": n, "identical": same,
                                          "version": result.version}
            print(f"{n} shards on {n} searchers: {same:.4%} of ids identical to single process")
        served = built["names"][4]
        for searchers in args.searchers:
            for window in args.batch_window_ms:
                key = f"{searchers}" + ("" if len(args.batch_window_ms) == 1
                                        else f"@{window:g}ms")
                record["service"][key] = serve_and_load(args, store, served, queries, params,
                                                        searchers, window)
    finally:
        ray.shutdown()
    write_json(record, args.out)
    return record


if __name__ == "__main__":
    main()

"""snapline against its CPU peers at the same code budget (SPEC 6, issue 13).

``run_benchmark(BenchConfig(...))`` reads a big-ann-benchmarks folder (base.*,
query.*, learn.* with extension .fbin/.u8bin/.i8bin, and gt.ibin), builds every
(system, nlist) of :func:`bench.plans.plan_systems` in its own spawned child process
(so each run's peak RSS is its own), sweeps its search parameters, and writes
``out_dir/results.json`` (every point with its parameters; skipped systems and failed
runs with their reasons). The plot and fronts.md are separate steps from that file:
:func:`bench.plotting.plot_results`, :func:`bench.fronts.write_fronts`.

Every system: trained on the learn file (as float32; ScaNN and LanceDB train on the
base, as they only build from the whole database), base added in batches of
``add_batch_size`` rows read from the file, the whole query set searched as one
batch with k = ``cfg.k``. QPS = nq / median wall time of ``repeats`` timed
search calls after one warm-up call (recall is measured on the warm-up result).
"""
from __future__ import annotations

import importlib.metadata
import logging
import os
import resource
import statistics
import sys
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import faiss
import numpy as np

from bench.config import PEER_PACKAGES, BenchConfig
from bench.dataset_files import (DatasetFiles, check_dataset_metric, dataset_metric,
                                 find_dataset_files, read_float32)
from bench.fronts import uses_stored_copy
from bench.json_records import write_json
from bench.plans import SystemPlan, plan_systems
from bench.system_runners import make_runner
from indexer.evaluation import evaluate
from indexer.sizing import set_threads
from shards import open_vectors, read_ground_truth

__all__ = ["QPS_METHOD", "RESULTS_FILE", "run_benchmark", "run_sweep"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
#: a sweep point whose warm-up call takes longer than this is timed once, not `repeats`
#: times (LanceDB with refine_factor: ~5 s per call of 1000 queries)
SLOW_CALL_S = 2.0
QPS_METHOD = ("nq / median wall seconds of {repeats} search calls after 1 warm-up (1 call "
              f"where the warm-up took > {SLOW_CALL_S:g} s: the point's timed_calls); "
              "whole query set as one batch")


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def _add_base(runner, base, plan: SystemPlan, cfg: BenchConfig, run: dict) -> None:
    """Add every base vector; snapline in one add() under tracemalloc, faiss in batches."""
    if plan.system == "snapline":
        run.update(runner.encoder_report(np.ascontiguousarray(
            base.read(0, min(base.n, 100_000)), dtype=np.float32)), encoder=plan.encoder)
        # add() streams internally: hand it the whole base in its file dtype and trace
        # only what add() allocates above that input array (the memory check)
        base_rows = base.read(0, base.n)
        tracemalloc.start()
        t0 = time.perf_counter()
        runner.add(base_rows)
        run["add_alloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        del base_rows
    else:
        t0 = time.perf_counter()
        for i0 in range(0, base.n, cfg.add_batch_size):
            batch = base.read(i0, min(base.n, i0 + cfg.add_batch_size))
            runner.add(np.ascontiguousarray(batch, dtype=np.float32))
            del batch
    if hasattr(runner, "finish_add"):   # a build step after the last add (ScaNN, LanceDB)
        runner.finish_add()
    run["add_s"] = time.perf_counter() - t0
    if runner.ntotal != base.n:
        raise RuntimeError(f"{plan.index}: ntotal={runner.ntotal} after adding {base.n} vectors")
    run["ntotal"] = runner.ntotal
    run["bytes_per_vector"] = runner.bytes_per_vector
    run["bytes_method"] = getattr(runner, "bytes_method", "resident, measured by the index")
    if getattr(runner, "bytes_detail", None):
        run["bytes_detail"] = dict(runner.bytes_detail)
    run["index_mb"] = runner.ntotal * runner.bytes_per_vector / 2**20
    logger.info("%s: added %d vectors in %.1f s", plan.index, base.n, run["add_s"])


def run_sweep(runner, files: DatasetFiles, plan: SystemPlan, cfg: BenchConfig) -> list[dict]:
    """Recall (of the warm-up call) and QPS (median of cfg.repeats calls, one call where
    the warm-up took over SLOW_CALL_S) per sweep point; with the runner's stage_seconds
    (if it has one) per stage, in ms per query."""
    queries = read_float32(files.query)
    gt_ids, _ = read_ground_truth(str(files.gt))
    points = []
    for params in plan.sweep:
        t0 = time.perf_counter()
        _, I = runner.search(queries, cfg.k, params)
        calls = cfg.repeats if time.perf_counter() - t0 <= SLOW_CALL_S else 1
        seconds = []
        for _ in range(calls):
            t0 = time.perf_counter()
            runner.search(queries, cfg.k, params)
            seconds.append(time.perf_counter() - t0)
        median = statistics.median(seconds)
        point = {"params": dict(params), **evaluate(I, gt_ids),
                 "qps": queries.shape[0] / median, "search_s": median, "timed_calls": calls,
                 "stored_copy": uses_stored_copy(plan.system, params)}
        if hasattr(runner, "stage_seconds"):   # once, after the timed calls
            stages = runner.stage_seconds(queries, cfg.k, params)
            point["stages_ms_per_query"] = {stage: s / queries.shape[0] * 1e3
                                            for stage, s in stages.items()}
        points.append(point)
        logger.info("%s %s: R@1 %.3f R@10 %.3f R@100 %.3f 10-R@10 %.3f %.0f QPS",
                    plan.index, params, point["recall@1"], point["recall@10"],
                    point["recall@100"], point["10recall@10"], point["qps"])
    return points


def _run_system(cfg: BenchConfig, plan: SystemPlan, log_level: int) -> dict:
    """Build, fill and sweep one system; runs in its own spawned process."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=log_level, format="%(asctime)s %(processName)s %(message)s")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "LANCE_CPU_THREADS"):
        os.environ[var] = str(cfg.threads)  # read by torch / lance when they load
    t_start = time.perf_counter()
    files = find_dataset_files(cfg.data_dir)
    base = open_vectors(str(files.base))
    runner = make_runner(base.d, plan, cfg)
    try:
        run = _build_and_sweep(runner, base, files, cfg, plan)
    finally:
        if hasattr(runner, "close"):
            runner.close()
    run["wall_s"] = time.perf_counter() - t_start
    return run


def _build_and_sweep(runner, base, files: DatasetFiles, cfg: BenchConfig,
                     plan: SystemPlan) -> dict:
    set_threads(cfg.threads)
    run = {"system": plan.system, "index": plan.index, "nlist": plan.nlist,
           "startup_rss_mb": _peak_rss_mb()}  # interpreter + imports, before any data
    if plan.factory is not None:
        run["factory"] = plan.factory
    if plan.variant:
        run["variant"] = plan.variant
    if plan.nedge is not None:
        run.update(nedge=plan.nedge, nlambda=cfg.nlambda, pq_bits=plan.pq_bits)

    learn = read_float32(files.learn)
    t0 = time.perf_counter()
    runner.train(learn)
    run["train_s"] = time.perf_counter() - t0
    del learn
    logger.info("%s: trained on %s in %.1f s", plan.index, files.learn.name, run["train_s"])

    _add_base(runner, base, plan, cfg, run)
    run["thread_settings"] = set_threads(cfg.threads)  # again: torch/numba may load lazily
    run["search"] = run_sweep(runner, files, plan, cfg)
    run["peak_rss_mb"] = _peak_rss_mb()
    return run


def _peer_versions() -> dict[str, str | None]:
    """Installed versions of the optional peers (None: not installed)."""
    out = {}
    for package in sorted(set(PEER_PACKAGES.values())):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    return out


def _results_header(cfg: BenchConfig, base, query, learn, gt_k: int, skipped: list) -> dict:
    """Every parameter of the run and how each figure is measured; runs are added later."""
    return {
        "dataset": cfg.data_dir.resolve().name,
        "n_base": base.n, "n_query": query.n, "n_learn": learn.n, "dim": base.d,
        "dtype": str(np.dtype(base.dtype)),
        "threads": cfg.threads, "code_bytes": cfg.code_bytes, "k": cfg.k,
        "metric": cfg.metric, "dataset_metric": dataset_metric(cfg.data_dir),
        "gt_k": gt_k, "search_batch": query.n,
        "qps_method": QPS_METHOD.format(repeats=cfg.repeats),
        "peak_rss_method": "ru_maxrss of a spawned child process that runs only that system",
        "add_alloc_method": "snapline: tracemalloc peak during one add() of the whole base "
                            "(input array read before tracing; numpy allocations only; "
                            "add_s includes tracemalloc overhead)",
        "faiss_version": faiss.__version__,
        "peer_versions": _peer_versions(),
        "config": {key: str(value) if isinstance(value, Path) else value
                   for key, value in asdict(cfg).items()},
        "bytes_method": "per run: bytes_method (resident, or on disk where the system "
                        "only shows its files); bytes_detail by part where known",
        "runs": [], "skipped": skipped, "failed": [],
    }


def run_benchmark(cfg: BenchConfig) -> dict:
    """Run every system of cfg, write out_dir/results.json, return the results."""
    if cfg.out_dir.exists() and not cfg.out_dir.is_dir():
        raise ValueError(f"out_dir {cfg.out_dir}: exists and is not a folder (results.json "
                         f"and the plot go into a folder)")
    files = find_dataset_files(cfg.data_dir)
    check_dataset_metric(cfg.data_dir, cfg.metric)   # gt.ibin must rank by cfg.metric
    base, query, learn = (open_vectors(str(p)) for p in (files.base, files.query, files.learn))
    if not base.d == query.d == learn.d:
        raise ValueError(f"dimensions differ: base d={base.d}, query d={query.d}, learn d={learn.d}")
    gt_ids, _ = read_ground_truth(str(files.gt))
    if gt_ids.shape[0] != query.n:
        raise ValueError(f"gt.ibin has {gt_ids.shape[0]} rows for {query.n} queries: {gt_ids.shape}")
    if cfg.k > base.n:
        raise ValueError(f"k={cfg.k} exceeds the {base.n} base vectors")
    plans, skipped = plan_systems(cfg, base.n, learn.n, base.d)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    results = _results_header(cfg, base, query, learn, int(gt_ids.shape[1]), skipped)
    log_level = logging.getLogger().getEffectiveLevel()
    for plan in plans:
        logger.info("%s: building %s (%d threads)", plan.system, plan.index, cfg.threads)
        try:
            with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
                run = pool.submit(_run_system, cfg, plan, log_level).result()
        except Exception as exc:   # one system failing must not lose the others' runs
            logger.error("%s (%s): failed: %s: %s", plan.system, plan.index,
                         type(exc).__name__, exc)
            results["failed"].append({"system": plan.system, "index": plan.index,
                                      "nlist": plan.nlist, "error": f"{type(exc).__name__}: {exc}"})
            write_json(results, cfg.out_dir / RESULTS_FILE)
            continue
        logger.info("%s: train %.1f s, add %.1f s, %d points in %.0f s wall, peak RSS %.0f MB, "
                    "%.1f bytes/vector", plan.index, run["train_s"], run["add_s"],
                    len(run["search"]), run["wall_s"], run["peak_rss_mb"],
                    run["bytes_per_vector"])
        results["runs"].append(run)
        write_json(results, cfg.out_dir / RESULTS_FILE)  # partial results survive a crash
    write_json(results, cfg.out_dir / RESULTS_FILE)
    return results

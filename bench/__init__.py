"""The benchmark runner (SPEC 6) and the scripts beside it (`python bench/<script>.py`).

    results = run_benchmark(BenchConfig(data_dir="data/sift-small", out_dir="out"))
    plot_results("out/results.json")             # out/recall_qps.png, from the file alone

`snapline bench` runs both steps, `snapline plot` the second. Modules: config
(BenchConfig), dataset_files (a big-ann folder), plans (sizes and sweeps), system_runners
and snapline_runner (the systems under test), runner (run_benchmark: one spawned process
per system, results.json), plotting (Pareto fronts from results.json), json_records.
The runner imports shards/, indexer/ and trainers/, never cluster/.

Names are loaded on first use, so that a spawned benchmark child, or `snapline plot`,
imports only the modules it needs (torch would add to a faiss child's peak RSS).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "SYSTEMS": "bench.config", "BenchConfig": "bench.config",
    "DatasetFiles": "bench.dataset_files", "find_dataset_files": "bench.dataset_files",
    "read_json": "bench.json_records", "write_json": "bench.json_records",
    "SystemPlan": "bench.plans", "plan_systems": "bench.plans",
    "pareto_front": "bench.plotting", "plot_recall_qps": "bench.plotting",
    "plot_results": "bench.plotting",
    "run_benchmark": "bench.runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bench' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

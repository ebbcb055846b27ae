"""The main job on the embedded default: local Ray, local store, bundled SIFT data.

A Ray task trains VLQ-ADC on the learn set, adds the base and publishes the index into the
local store (models/, indexes/<name>/<version>/, CURRENT); the driver loads the version
CURRENT names and reports recall and QPS against the bundled ground truth.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray

from indexer import VLQIndex
from indexer.benchmark import find_dataset_files, ivf_nlist_for, vlq_nlist_for
from indexer.evaluation import evaluate
from shards import open_vectors, publish, read_ground_truth

log = logging.getLogger(__name__)

BUNDLED_DATA = Path(__file__).resolve().parents[1] / "data" / "sift-small"


@dataclass(frozen=True)
class DemoConfig:
    data_dir: str = str(BUNDLED_DATA)
    store: str = "./snapline-store"
    name: str = "sift-small"
    code_bytes: int = 16
    nedge: int = 32
    nprobe: int = 16
    nlines: int = 128
    k: int = 10


def build_local_index(data_dir: str, store: str, name: str, code_bytes: int, nedge: int) -> dict:
    """Train on learn, add base in batches, publish into the store: the single-process
    build (the distributed build replaces this)."""
    files = find_dataset_files(data_dir)
    learn, base = open_vectors(str(files.learn)), open_vectors(str(files.base))
    nlist = vlq_nlist_for(ivf_nlist_for(base.n, learn.n), learn.n)
    index = VLQIndex(base.d, nlist=nlist, nedge=min(nedge, nlist - 1), code_bytes=code_bytes)
    t0 = time.perf_counter()
    index.train(learn.read())
    t1 = time.perf_counter()
    for start in range(0, base.n, 100_000):
        index.add(base.read(start, min(base.n, start + 100_000)))
    t2 = time.perf_counter()
    manifest = publish(store, name, index.to_arrays(), source={"uri": str(files.base)})
    return {"nlist": nlist, "nedge": index.nedge, "ntotal": index.ntotal,
            "train_s": t1 - t0, "add_s": t2 - t1, "version": manifest.version,
            "model_version": manifest.model_version}


def run_demo(cfg: DemoConfig) -> dict:
    store = os.path.abspath(cfg.store)
    index_root = os.path.join(store, "indexes", cfg.name)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=True,
             ignore_reinit_error=True)
    try:
        build = ray.remote(build_local_index).options(num_cpus=1)
        built = ray.get(build.remote(cfg.data_dir, store, cfg.name, cfg.code_bytes, cfg.nedge))
    finally:
        ray.shutdown()
    files = find_dataset_files(cfg.data_dir)
    index = VLQIndex.load(index_root)    # the version CURRENT names
    queries = open_vectors(str(files.query)).read()
    gt, _ = read_ground_truth(str(files.gt))
    index.search(queries[:8], k=cfg.k, nprobe=cfg.nprobe, nlines=cfg.nlines)  # compile/warm up
    t0 = time.perf_counter()
    _, ids = index.search(queries, k=cfg.k, nprobe=cfg.nprobe, nlines=cfg.nlines)
    seconds = time.perf_counter() - t0
    metrics = evaluate(ids, gt)
    return {**built, "index": index_root, "n_query": int(queries.shape[0]),
            "qps": queries.shape[0] / seconds, "bytes_per_vector": index.bytes_per_vector,
            **{key: metrics[key] for key in ("recall@1", "recall@10")},
            "nprobe": cfg.nprobe, "nlines": cfg.nlines}

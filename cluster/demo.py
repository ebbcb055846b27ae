"""The main job on the embedded default: local Ray, local store, bundled SIFT data.

The build job (cluster.build: trainer actor on the learn set, Ray Data encoder pool, one
shard per partition, publish into models/, indexes/<name>/<version>/, CURRENT) runs on a
local Ray; the driver loads the version CURRENT names and reports recall and QPS against
the bundled ground truth.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from bench.dataset_files import find_dataset_files
from cluster.build.pipeline import build
from cluster.build.config import BuildConfig, build_config_from_dict
from indexer import VLQIndex
from indexer.evaluation import evaluate
from shards import Store, open_vectors, read_ground_truth

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


def demo_build_config(cfg: DemoConfig) -> BuildConfig:
    """The build job for the bundled data: train on its learn set, nlist sized for the
    data by the build (`nlist: auto`), four shards, two encode workers."""
    files = find_dataset_files(cfg.data_dir)
    n_base = open_vectors(str(files.base)).n
    return build_config_from_dict({
        "name": cfg.name, "store": cfg.store, "source": {"uri": str(files.base)},
        "learn": {"uri": str(files.learn)},
        "index": {"nlist": "auto", "nedge": cfg.nedge, "code_bytes": cfg.code_bytes},
        "shards": {"rows_per_shard": max(1, -(-n_base // 4))}, "workers": {"encode": 2}})


def run_demo(cfg: DemoConfig) -> dict:
    store = os.path.abspath(cfg.store)
    root = Store(store).index(cfg.name)
    build_cfg = demo_build_config(DemoConfig(**{**cfg.__dict__, "store": store}))
    built = build(build_cfg, num_cpus=max(2, os.cpu_count() or 1),   # the build job: trainer
                  include_dashboard=False, log_to_driver=True)       # actor, encoders, publish
    files = find_dataset_files(cfg.data_dir)
    index = VLQIndex.load(root)    # the version CURRENT names
    queries = open_vectors(str(files.query)).read()
    gt, _ = read_ground_truth(str(files.gt))
    index.search(queries[:8], k=cfg.k, nprobe=cfg.nprobe, nlines=cfg.nlines)  # compile/warm up
    t0 = time.perf_counter()
    _, ids = index.search(queries, k=cfg.k, nprobe=cfg.nprobe, nlines=cfg.nlines)
    seconds = time.perf_counter() - t0
    metrics = evaluate(ids, gt)
    return {**{k: built[k] for k in ("version", "model_version", "ntotal", "shards", "nlist",
                                      "train_s", "encode_s", "total_s")},
            "nedge": index.nedge, "index": root.uri, "n_query": int(queries.shape[0]),
            "qps": queries.shape[0] / seconds, "bytes_per_vector": index.bytes_per_vector,
            **{key: metrics[key] for key in ("recall@1", "recall@10")},
            "nprobe": cfg.nprobe, "nlines": cfg.nlines}

"""Distributed build throughput (Ray Data encoder pool) against faiss IVFPQ add().

    .venv/bin/python bench/build_throughput.py ../shared/data/sift-real-dev \
        --tile 10 --out bench/out/build/sift-16.json

1. Train one VLQ model on the learn set (kind none) into a scratch store.
2. Build the base with `run_build` (model given, so no training) on a local Ray with
   1 and then 2 encode workers; search the result and a single-process VLQIndex of the
   same model on the query set: the fraction of queries with identical ids.
3. Build a `--tile`x tiling of the base (a larger source amortises actor start-up) with
   1 and 2 workers: encode-stage vectors/s (wall clock, actor start-up included) and
   per-worker vectors/s (rows / seconds inside the workers).
4. faiss IVFPQ (nlist ~ 4 sqrt(n), same code bytes) add() of the same rows with 1 and
   2 threads, in this process.
5. `snapline plan` estimates for SIFT1B (d=128) and DEEP1B (d=96) on 8 x 80 GB GPUs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import ray  # noqa: E402

from bench.dataset_files import find_dataset_files  # noqa: E402
from bench.json_records import write_json  # noqa: E402
from cluster.build.pipeline import check_build, run_build  # noqa: E402
from cluster.build.config import build_config_from_dict  # noqa: E402
from cluster.build.plan import PlanConfig, plan  # noqa: E402
from indexer import VLQIndex  # noqa: E402
from indexer.sizing import ivf_nlist_for, vlq_nlist_for  # noqa: E402
from shards import open_vectors  # noqa: E402


def tile(src: Path, dst: Path, times: int) -> Path:
    x = open_vectors(str(src))
    rows = x.read()
    header = np.array([x.n * times, x.d], dtype="<u4").tobytes()
    with open(dst, "wb") as f:
        f.write(header)
        for _ in range(times):
            rows.astype(x.dtype).tofile(f)
    return dst


def build(store: str, name: str, source: str, model: str, workers: int, rows_per_shard: int) -> dict:
    cfg = build_config_from_dict({
        "name": name, "store": store, "source": {"uri": source}, "model": model,
        "shards": {"rows_per_shard": rows_per_shard}, "workers": {"encode": workers}})
    summary = run_build(check_build(cfg))
    written = summary["shards_written"]
    summary["per_worker_vectors_per_s"] = summary["ntotal"] / summary["encode_worker_s"] if written else None
    return summary


def faiss_add(learn: np.ndarray, base_reader, code_bytes: int, threads: int, tiles: int) -> dict:
    n = base_reader.n * tiles
    nlist = ivf_nlist_for(n, learn.shape[0])
    index = faiss.index_factory(base_reader.d, f"IVF{nlist},PQ{code_bytes}")
    faiss.omp_set_num_threads(2)
    index.train(learn)
    faiss.omp_set_num_threads(threads)
    base = base_reader.read().astype(np.float32)
    t0 = time.perf_counter()
    for _ in range(tiles):
        index.add(base)
    seconds = time.perf_counter() - t0
    return {"index": f"IVF{nlist},PQ{code_bytes}", "threads": threads, "n": n,
            "add_s": seconds, "vectors_per_s": n / seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--code-bytes", type=int, default=16)
    ap.add_argument("--tile", type=int, default=10)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    files = find_dataset_files(args.data_dir)
    base, learn = open_vectors(str(files.base)), open_vectors(str(files.learn)).read()
    queries = open_vectors(str(files.query)).read()
    scratch = Path(tempfile.mkdtemp(prefix="snapline-build-bench-"))
    store = str(scratch / "store")
    out: dict = {"data": args.data_dir, "code_bytes": args.code_bytes, "machine":
                 {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}}
    try:
        nlist = vlq_nlist_for(ivf_nlist_for(base.n, learn.shape[0]), learn.shape[0])
        model_index = VLQIndex(base.d, nlist=nlist, code_bytes=args.code_bytes)
        t0 = time.perf_counter()
        model_index.train(learn)
        out["train_s"] = time.perf_counter() - t0
        model = model_index.save_model(store)
        out["model"] = {"version": model, "nlist": nlist, "nedge": model_index.nedge}

        single = VLQIndex.from_model(store, model)
        t0 = time.perf_counter()
        single.add(base.read())
        out["single_process_add"] = {"n": base.n, "add_s": time.perf_counter() - t0,
                                     "vectors_per_s": base.n / (time.perf_counter() - t0)}
        _, i_single = single.search(queries, k=10, nprobe=32, nlines=256)

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
        out["builds"] = []
        big = tile(files.base, scratch / "tiled.bin", args.tile) if args.tile > 1 else None
        if big is not None:
            big = big.rename(big.with_suffix(f".{files.base.suffix.lstrip('.')}"))
        for workers in (1, 2):
            summary = build(store, f"base-w{workers}", str(files.base.resolve()), model, workers,
                            rows_per_shard=max(1, base.n // 10))
            dist = VLQIndex.load(f"{store}/indexes/base-w{workers}")
            _, i_dist = dist.search(queries, k=10, nprobe=32, nlines=256)
            summary["identical_fraction_vs_single_process"] = float((i_dist == i_single).all(axis=1).mean())
            summary["source"] = "base"
            out["builds"].append(summary)
            print(json.dumps({k: summary[k] for k in ("workers", "ntotal", "encode_s",
                  "encode_vectors_per_s", "per_worker_vectors_per_s",
                  "identical_fraction_vs_single_process", "peak_worker_rss_mb")}), flush=True)
            if big is not None:
                summary = build(store, f"tiled-w{workers}", str(big), model, workers,
                                rows_per_shard=1_000_000)
                summary["source"] = f"base x{args.tile}"
                out["builds"].append(summary)
                print(json.dumps({k: summary[k] for k in ("workers", "ntotal", "encode_s",
                      "encode_vectors_per_s", "per_worker_vectors_per_s", "peak_worker_rss_mb")}),
                      flush=True)
        ray.shutdown()
        out["faiss_ivfpq_add"] = [faiss_add(learn, base, args.code_bytes, t, args.tile)
                                  for t in (1, 2)]
        print(json.dumps(out["faiss_ivfpq_add"]), flush=True)
        out["plans"] = {name: plan(PlanConfig(n=10**9, dim=d, code_bytes=16, gpus=8,
                                              gpu_mem_gb=80, encode_workers=2))
                        for name, d in (("SIFT1B", 128), ("DEEP1B", 96))}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write_json(out, args.out, default=str)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

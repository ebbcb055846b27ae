"""Live versions (issue 15): append throughput against a fresh build, and the query cost of
many appended shards before and after compaction.

    python -m bench.live_versions ../shared/data/sift-real-dev --out bench/out/live-versions-sift

1. `snapline build` (local Ray, 2 encode workers) of the first N base rows with a model
   trained once beforehand (the build's encode stage alone is timed, as an append is);
2. `snapline append` of the next N rows (2 workers), through the same Ray machinery;
3. 20 appends of `--small` rows each, then `snapline compact`: shards before and after, and
   the QPS of a fan-out over the version's shards (each shard its own index, as a searcher
   per shard holds it; k best merged), before and after compaction.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

from bench.dataset_files import find_dataset_files, read_float32
from cluster.build.config import load_build_config
from cluster.build.pipeline import build
from cluster.live.append import AppendRequest, append
from cluster.live.jobs import compact
from indexer import VLQIndex
from indexer.evaluation import exact_ground_truth, k_recall_at_k
from indexer.merge import merge_topk
from shards import Store, open_vectors, resolve

K = 10
PARAMS = {"nprobe": 16, "nlines": 128}


def _write_u8bin(path: Path, x: np.ndarray) -> str:
    with open(path, "wb") as f:
        np.array(x.shape, dtype=np.uint32).tofile(f)
        np.ascontiguousarray(x, dtype=np.uint8).tofile(f)
    return str(path)


def _fan_out_qps(root, q, gt, repeats: int = 2) -> dict:
    """QPS of searching every shard of CURRENT as its own index, k best merged."""
    manifest, _, _ = resolve(root)
    parts = [VLQIndex.load(root, shards=[i]) for i in range(len(manifest.shards))]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        answers = [p.search(q, k=min(K, p.ntotal), **PARAMS) for p in parts]
        D, I = merge_topk([a[0] for a in answers], [a[1] for a in answers], K)
        best = min(best, time.perf_counter() - t0)
    return {"shards": len(parts), "qps": q.shape[0] / best, "recall10": k_recall_at_k(I, gt, K)}


def run(data_dir: str, out_dir: str, n: int, small: int, appends: int, threads: int) -> dict:
    numba.set_num_threads(threads)
    files = find_dataset_files(data_dir)
    base = open_vectors(str(files.base))
    if base.read(0, 1).dtype != np.uint8:
        raise ValueError("this benchmark writes u8bin sources: give a uint8 data set (SIFT)")
    total = 2 * n + appends * small
    rows = base.read(0, total)
    q = read_float32(files.query)
    tmp = Path(tempfile.mkdtemp(prefix="live-versions-"))
    store = str(tmp / "store")
    learn = _write_u8bin(tmp / "learn.u8bin", open_vectors(str(files.learn)).read(0, 100_000))
    first = _write_u8bin(tmp / "first.u8bin", rows[:n])
    cfg_path = tmp / "build.yaml"
    cfg_path.write_text(json.dumps({
        "name": "live", "store": store, "source": {"uri": first}, "learn": {"uri": learn},
        "index": {"nlist": 1024, "nedge": 32, "code_bytes": 16, "pq_bits": 4},
        "shards": {"rows_per_shard": n // 4}, "workers": {"encode": 2}}))
    built = build(load_build_config(str(cfg_path)))
    second = _write_u8bin(tmp / "second.u8bin", rows[n:2 * n])
    appended = append(AppendRequest(store=store, name="live", source=second, workers=2))
    root = Store(store).index("live")
    for i in range(appends):
        lo = 2 * n + i * small
        path = _write_u8bin(tmp / f"small{i}.u8bin", rows[lo:lo + small])
        append(AppendRequest(store=store, name="live", source=path, workers=1))
    gt = exact_ground_truth(rows, q, K)[1]
    before = _fan_out_qps(root, q, gt)
    compacted = compact(store, "live")
    after = _fan_out_qps(root, q, gt)
    result = {"data": str(data_dir), "n": n, "small": small, "appends": appends,
              "threads": threads, "params": PARAMS, "k": K,
              "build": {k: built[k] for k in ("encode_s", "encode_vectors_per_s", "total_s",
                                              "shards")},
              "append": {k: appended[k] for k in ("rows_appended", "total_s", "vectors_per_s",
                                                  "new_shards")},
              "before_compaction": before, "after_compaction": after,
              "compaction": {k: compacted[k] for k in compacted
                             if isinstance(compacted[k], (int, float, str, bool))}}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.live_versions", description=__doc__)
    p.add_argument("data_dir")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=200_000, help="rows built, then rows appended")
    p.add_argument("--small", type=int, default=5_000, help="rows of each small append")
    p.add_argument("--appends", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="search threads (numba)")
    a = p.parse_args(argv)
    print(json.dumps(run(a.data_dir, a.out, a.n, a.small, a.appends, a.threads), indent=1,
                     default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

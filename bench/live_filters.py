"""Filtered search (issue 15): QPS and 10-recall@10 at filter selectivities 50%, 5%, 0.1%,
snapline against faiss IVFPQ with an IDSelectorBitmap, one thread each, in one run.

    python -m bench.live_filters ../shared/data/sift-real-dev --out bench/out/live-filters-sift

Every base row gets an attribute `bucket`, uniform in 0..999 (seeded); the filter
`bucket < B` keeps B/1000 of the rows. Ground truth: exact L2 over the matching rows.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import faiss
import numba
import numpy as np
import pyarrow as pa

from bench.dataset_files import find_dataset_files, read_float32
from indexer import VLQIndex
from indexer.evaluation import exact_ground_truth, k_recall_at_k

SELECTIVITIES = (0.5, 0.05, 0.001)
SNAPLINE_SWEEP = ((4, 32), (8, 64), (16, 128), (32, 256), (64, 512))
FAISS_SWEEP = (2, 4, 8, 16, 32, 64)
K = 10


def _timed(fn, repeats: int = 2):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run(data_dir: str, out_dir: str, code_bytes: int, pq_bits: int, nlist: int, nq: int,
        threads: int) -> dict:
    numba.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    files = find_dataset_files(data_dir)
    base, learn = read_float32(files.base), read_float32(files.learn)
    query = read_float32(files.query, 0, nq)
    n, d = base.shape
    bucket = np.random.default_rng(0).integers(0, 1000, n)
    t0 = time.perf_counter()
    index = VLQIndex(d, nlist, 32, code_bytes, pq_bits=pq_bits)
    index.train(learn)
    index.add(base, attributes=pa.table({"bucket": bucket.astype(np.int32)}))
    build_s = time.perf_counter() - t0
    ivf = faiss.IndexIVFPQ(faiss.IndexFlatL2(d), d, nlist, code_bytes, 8)
    ivf.train(learn)
    ivf.add(base)
    rows = []
    for sel in SELECTIVITIES:
        limit = int(round(sel * 1000))
        keep = np.flatnonzero(bucket < limit)
        gt = keep[exact_ground_truth(base[keep], query, K)[1]]
        where = f"bucket < {limit}"
        index.search(query[:10], k=K, nprobe=4, nlines=32, filter=where)   # filter cached, warm
        for nprobe, nlines in SNAPLINE_SWEEP:
            if nprobe > nlist:
                continue
            sec, (_, I) = _timed(lambda: index.search(query, k=K, nprobe=nprobe, nlines=nlines,
                                                      filter=where))
            rows.append({"system": "snapline", "selectivity": sel, "nprobe": nprobe,
                         "nlines": nlines, "recall10": k_recall_at_k(I, gt, K), "qps": nq / sec,
                         "hits": float((I >= 0).sum(axis=1).mean())})
        bits = np.packbits(bucket < limit, bitorder="little")
        selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))
        for nprobe in FAISS_SWEEP:
            params = faiss.SearchParametersIVF(nprobe=nprobe, sel=selector)
            sec, (_, I) = _timed(lambda: ivf.search(query, K, params=params))
            rows.append({"system": "faiss_ivfpq_idselector", "selectivity": sel, "nprobe": nprobe,
                         "recall10": k_recall_at_k(I, gt, K), "qps": nq / sec,
                         "hits": float((I >= 0).sum(axis=1).mean())})
        print(f"selectivity {sel}: done", flush=True)
    result = {"data": str(data_dir), "n": n, "d": d, "nq": nq, "k": K, "threads": threads,
              "code_bytes": code_bytes, "pq_bits": pq_bits, "nlist": nlist,
              "snapline_build_s": build_s, "rows": rows}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "table.md").write_text(table(result))
    return result


def table(result: dict) -> str:
    lines = [f"n={result['n']} d={result['d']} nq={result['nq']} k={result['k']} "
             f"threads={result['threads']} code_bytes={result['code_bytes']} "
             f"pq_bits={result['pq_bits']} nlist={result['nlist']}", "",
             "| selectivity | system | params | 10-recall@10 | QPS | mean hits |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        params = f"nprobe={r['nprobe']}" + (f" nlines={r['nlines']}" if "nlines" in r else "")
        lines.append(f"| {r['selectivity']:.1%} | {r['system']} | {params} | {r['recall10']:.3f} "
                     f"| {r['qps']:,.0f} | {r['hits']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.live_filters", description=__doc__)
    p.add_argument("data_dir")
    p.add_argument("--out", required=True)
    p.add_argument("--code-bytes", type=int, default=16)
    p.add_argument("--pq-bits", type=int, default=4, choices=(4, 8))
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    print(table(run(a.data_dir, a.out, a.code_bytes, a.pq_bits, a.nlist, a.nq, a.threads)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

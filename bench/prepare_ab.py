"""The native preparation of the 4-bit scan against its numba reference, in full searches.

    python -m bench.prepare_ab DATA_DIR --nlist 256 [--store sq8 --refine 100]
        [--configs 2x32,8x128,16x256,32x512,64x1024] [--out bench/out/prepare-ab-deep.json]

Builds a 4-bit VLQ index (nedge 32, --code-bytes) on the data set's learn and base files,
then searches every query (k = 100, rerank 100, or refine R with stored vectors) at each
nprobe x nlines, alternating the native `indexer.fastscan_search.prepare_native` with the
numba `_prepare` in its place (everything else native), one thread, best of --repeats each.
The two must return the same ids (checked). QPS, the ratio and the lines+tables stage go to
the log and the JSON record.
"""
from __future__ import annotations

import argparse
import logging
import time

import numpy as np

import indexer.fastscan_search as fss
from bench.dataset_files import find_dataset_files, read_float32
from bench.json_records import write_json
from indexer import VLQIndex, native
from indexer.sizing import set_threads

logger = logging.getLogger(__name__)


def _numba_prepare(*args, threads=None):
    fss._prepare(*args)


def _search(index, q, nprobe, nlines, refine):
    stages = {}
    extra = {"refine": refine} if refine else {"rerank": 100}
    t0 = time.perf_counter()
    _, ids = index.search(q, k=100, nprobe=nprobe, nlines=nlines, stages=stages, **extra)
    return time.perf_counter() - t0, ids, stages["lines+tables"]


def run(args) -> list[dict]:
    if not native.native_available():
        raise SystemExit("the extension indexer._fastscan is not built (pip install -e .)")
    set_threads(1)
    files = find_dataset_files(args.data_dir)
    learn, base, q = (read_float32(f) for f in (files.learn, files.base, files.query))
    index = VLQIndex(base.shape[1], args.nlist, 32, args.code_bytes, pq_bits=4,
                     stored_vectors=args.store)
    index.train(learn)
    index.add(base)
    nq = q.shape[0]
    records = []
    kernels = {"native": fss.prepare_native, "numba": _numba_prepare}
    try:
        for config in args.configs.split(","):
            nprobe, nlines = (int(x) for x in config.split("x"))
            best = {}
            for _ in range(args.repeats):
                for name, kernel in kernels.items():
                    fss.prepare_native = kernel
                    wall, ids, prep = _search(index, q, nprobe, nlines, args.refine)
                    if name not in best or wall < best[name][0]:
                        best[name] = (wall, ids, prep)
            if not np.array_equal(best["native"][1], best["numba"][1]):
                raise SystemExit(f"{config}: the native and numba preparations return other ids")
            rec = {"nprobe": nprobe, "nlines": nlines,
                   "qps_native": nq / best["native"][0], "qps_numba": nq / best["numba"][0],
                   "prepare_us_native": best["native"][2] / nq * 1e6,
                   "prepare_us_numba": best["numba"][2] / nq * 1e6}
            rec["ratio"] = rec["qps_native"] / rec["qps_numba"]
            logger.info("%s: QPS native %.0f numba %.0f (%.3fx); lines+tables %.1f vs %.1f us",
                        config, rec["qps_native"], rec["qps_numba"], rec["ratio"],
                        rec["prepare_us_native"], rec["prepare_us_numba"])
            records.append(rec)
    finally:
        fss.prepare_native = kernels["native"]
    return records


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--nlist", type=int, required=True)
    parser.add_argument("--code-bytes", type=int, default=16)
    parser.add_argument("--store", default=None, help="stored vectors (sq8, uint8, ...)")
    parser.add_argument("--refine", type=int, default=None)
    parser.add_argument("--configs", default="2x32,8x128,16x256,32x512,64x1024")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    records = run(args)
    if args.out:
        write_json({"simd_level": native.simd_level(), "args": vars(args), "points": records},
                   args.out)


if __name__ == "__main__":
    main()

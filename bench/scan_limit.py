"""The physical limit of the list scan on this CPU (issue 13, point 5): table lookups per second.

    python -m bench.scan_limit [--rows 1000000] [--out bench/out/scan-limit.json]

(a) 4-bit fast-scan lookups through the native kernel (indexer.fastscan.scan4, backend
"native") at every SIMD level this CPU has, on one long list of `rows` rows with M=32 4-bit
sub-codes, `queries` queries each scanning the whole list once, 1 and 2 threads;
(b) the same through the numba reference (backend "numba");
(c) 8-bit scalar lookups: a numba loop summing lut[m, code[j, m]] over `rows` rows x 16
sub-codes, written like indexer.kernels' scan (float32 tables, 8 codes per 64-bit read, two
accumulators, its fastmath flags), 1 and 2 threads.
Lookups per second = rows * sub-codes * queries / seconds, with the best (shortest) of
`repeats` timed runs after one warm-up (the limit, not the typical: the machine is shared).
Code bytes per second (rows * code bytes / s) are the figure to set against snapline's
candidates x code bytes per second. Every timing goes to the JSON record (--out).
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import time

import numba
import numpy as np

from bench.json_records import write_json
from indexer import fastscan, native
from indexer.kernels import row_sum8

logger = logging.getLogger(__name__)

M4 = 32        # 4-bit sub-codes per row (16 code bytes)
M8 = 16        # 8-bit sub-codes per row (16 code bytes)


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "contract", "arcp"})
def _scan8(flat, codes64, chunks):
    """Sum of lut[m, code[j, m]] over every row: scalar 8-bit lookups the way indexer.kernels
    reads them (8 codes per 64-bit word, two accumulators, float32 tables flattened)."""
    n, words = codes64.shape
    step = (n + chunks - 1) // chunks
    partial = np.zeros(chunks, dtype=np.float32)
    for c in numba.prange(chunks):
        acc = np.float32(0)
        for j in range(c * step, min(n, (c + 1) * step)):
            acc += row_sum8(flat, codes64, j)
        partial[c] = acc
    return partial.sum()


def _best_time(fn, repeats: int) -> list[float]:
    fn()  # warm-up: compilation, page faults
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def four_bit_problem(rows: int, queries: int, seed: int) -> dict:
    """scan4 arguments: one list of all rows, every query scans it once (nprobe=1, nlines=1)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 16, (rows, M4), dtype=np.uint8)
    ones = np.ones((queries, 1), dtype=np.float32)
    return dict(lut8=rng.integers(0, 256, (queries, 1, M4, 16), dtype=np.uint8),
                scale=np.full(queries, 0.01, np.float32),
                line_list=np.zeros((queries, 1), np.int64), line_probe=np.zeros((queries, 1), np.int32),
                line_const=ones, line_c=ones, line_alpha=ones * 0,
                offsets=np.array([0, rows], np.int64), packed=fastscan.pack_codes4(codes),
                lam_idx=rng.integers(0, 256, rows).astype(np.uint8),
                lam_values=rng.random(256, dtype=np.float32), r=10)


def short_list_problem(rows: int, list_len: int, queries: int, seed: int, per_probe: int = 16,
                       adjacent: bool = False) -> dict:
    """scan4 arguments shaped like VLQ's: lists of about `list_len` rows (lengths uniform in
    [0, 2 list_len]), NEDGE consecutive lists per centroid; a query probes 16 random
    centroids (one table each) and scans `per_probe` of the 32 lists of each (16 -> 256
    lines), random ones or, with `adjacent`, a run of adjacent list ids; a probe's lines in
    row order, the probes in random order (as indexer.fastscan_search selects them)."""
    rng = np.random.default_rng(seed)
    nedge, nprobe = 32, 16
    if not 1 <= per_probe <= nedge:
        raise ValueError(f"per_probe={per_probe} must be in [1, {nedge}]")
    nlists = max(nedge * nprobe, (rows // max(list_len, 1)) // nedge * nedge)
    lengths = rng.integers(0, 2 * list_len + 1, nlists)
    offsets = np.minimum(np.concatenate([[0], np.cumsum(lengths)]), rows).astype(np.int64)
    centroids = np.stack([rng.choice(nlists // nedge, nprobe, replace=False) for _ in range(queries)])
    if adjacent:
        edges = rng.integers(0, nedge - per_probe + 1, (queries * nprobe, 1)) + np.arange(per_probe)
    else:
        edges = np.stack([np.sort(rng.choice(nedge, per_probe, replace=False)) for _ in range(queries * nprobe)])
    line_list = (centroids[:, :, None] * nedge + edges.reshape(queries, nprobe, per_probe)).reshape(queries, -1)
    line_probe = np.broadcast_to(np.repeat(np.arange(nprobe, dtype=np.int32), per_probe), line_list.shape)
    nlines = line_list.shape[1]
    codes = rng.integers(0, 16, (rows, M4), dtype=np.uint8)
    line = lambda: rng.uniform(0.5, 1.5, (queries, nlines)).astype(np.float32)  # noqa: E731
    return dict(lut8=rng.integers(0, 256, (queries, nprobe, M4, 16), dtype=np.uint8),
                scale=np.full(queries, 0.01, np.float32), line_list=line_list.astype(np.int64),
                line_probe=np.ascontiguousarray(line_probe), line_const=line(), line_c=line(),
                line_alpha=line(), offsets=offsets, packed=fastscan.pack_codes4(codes),
                lam_idx=rng.integers(0, 256, rows).astype(np.uint8),
                lam_values=rng.random(256, dtype=np.float32), r=100)


def candidates(problem: dict) -> int:
    """Rows scanned over all queries."""
    offsets = problem["offsets"]
    return int((offsets[problem["line_list"] + 1] - offsets[problem["line_list"]]).sum())


def _record(kind: str, level: str | None, threads: int, rows_scanned: int, subcodes: int,
            code_bytes: int, times: list[float], **params) -> dict:
    """One run's figures; rows_scanned counts every (query, row) pair of one run."""
    best = min(times)
    return {"kind": kind, "level": level, "threads": threads, "rows_scanned": rows_scanned,
            "subcodes": subcodes, "code_bytes": code_bytes, **params, "seconds": times,
            "best_seconds": best, "lookups_per_s": rows_scanned * subcodes / best,
            "rows_per_s": rows_scanned / best, "code_bytes_per_s": rows_scanned * code_bytes / best}


def measure_four_bit(problem: dict, kind: str, repeats: int) -> list[dict]:
    """Native at every level of this CPU and numba, 1 and 2 threads, on one scan4 problem."""
    scanned = candidates(problem)
    shape = {"queries": problem["lut8"].shape[0], "nprobe": problem["lut8"].shape[1],
             "nlines": problem["line_list"].shape[1], "nlists": problem["offsets"].size - 1,
             "r": problem["r"]}
    records = []
    reference = None
    if native.native_available():
        cpu = native.cpu_level()
        previous = native.simd_level()
        try:
            for level in native.LEVELS[: native.LEVELS.index(cpu) + 1]:
                native.set_level(level)
                for threads in (1, 2):
                    run = lambda: fastscan.scan4(**problem, backend="native", threads=threads)  # noqa: E731
                    reference = run() if reference is None else reference
                    times = _best_time(run, repeats)
                    records.append(_record(f"{kind}-native", level, threads, scanned, M4, M4 // 2, times, **shape))
        finally:
            native.set_level(previous)
    else:
        logger.warning("indexer._fastscan is not built: no native figures (pip install -e .)")
    for threads in (1, 2):
        run = lambda: fastscan.scan4(**problem, backend="numba", threads=threads)  # noqa: E731
        if reference is not None and not all(np.array_equal(a, b) for a, b in zip(run(), reference)):
            raise RuntimeError("native and numba scans disagree on the benchmark problem")
        times = _best_time(run, repeats)
        records.append(_record(f"{kind}-numba", None, threads, scanned, M4, M4 // 2, times, **shape))
    return records


def measure_eight_bit(rows: int, repeats: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (rows, M8), dtype=np.uint8)
    lut = rng.standard_normal((M8, 256)).astype(np.float32)
    records = []
    previous = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            times = _best_time(lambda: _scan8(lut.ravel(), codes.view(np.uint64), 64), repeats)
            records.append(_record("8bit-scalar-numba", None, threads, rows, M8, M8, times))
    finally:
        numba.set_num_threads(previous)
    return records


def table(records: list[dict]) -> str:
    lines = [f"{'kernel':<20}{'level':<10}{'threads':>8}{'Glookups/s':>12}{'Mrows/s':>10}{'GB/s codes':>12}",
             "-" * 72]
    for r in records:
        lines.append(f"{r['kind']:<20}{r['level'] or '-':<10}{r['threads']:>8}{r['lookups_per_s'] / 1e9:>12.2f}"
                     f"{r['rows_per_s'] / 1e6:>10.1f}{r['code_bytes_per_s'] / 1e9:>12.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=4, help="4-bit queries, each scans every row")
    parser.add_argument("--list-len", type=int, nargs="*", default=[16, 64],
                        help="also scan VLQ-like short lists of about this many rows")
    parser.add_argument("--short-queries", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the JSON record here")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.queries < 1 or args.repeats < 1:
        parser.error("--rows, --queries and --repeats must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    records = measure_four_bit(four_bit_problem(args.rows, args.queries, args.seed), "4bit", args.repeats)
    for list_len in args.list_len:
        problem = short_list_problem(args.rows, list_len, args.short_queries, args.seed)
        records += measure_four_bit(problem, f"4bit-L{list_len}", args.repeats)
        problem = short_list_problem(args.rows, list_len, args.short_queries, args.seed, 8, adjacent=True)
        records += measure_four_bit(problem, f"4bit-L{list_len}-adj8", args.repeats)
    records += measure_eight_bit(args.rows, args.repeats, args.seed)
    result = {"benchmark": "scan_limit", "machine": platform.machine(), "processor": platform.processor(),
              "cpu_count": os.cpu_count(), "numba_threads": numba.config.NUMBA_NUM_THREADS,
              "simd_cpu": native.cpu_level() if native.native_available() else None,
              "params": vars(args), "records": records}
    print(table(records))
    if args.out:
        write_json(result, args.out)
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

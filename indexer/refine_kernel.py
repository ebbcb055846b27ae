"""The refinement kernel: distances between each query and its candidates' stored
vectors, and the k best: native (`indexer._fastscan.refine`, indexer/_refine.cpp: AVX-512
or portable C++) when built, else compiled by numba (the reference;
parallel over queries). Both order alike; their sums differ in the last bits.

Stored rows are uint8, float16, float32 or sq8 (`shards.vector_store`); float16 values
(rows, and an sq8 row's step) are read as their uint16 bits through a 65536-entry float32
table (numba has no float16 on the CPU); uint8 and float32 rows are converted in the loop,
one compiled loop per dtype, no temporaries. An sq8 row is decoded value by value as
(code - base) * step (the float32 operations of `decode_rows`).
"""
from __future__ import annotations

import numba
import numpy as np

from indexer.native import kernel, level_index, resolve_backend, resolve_threads

__all__ = ["refine_rows"]

_MODES = {"l2": 0, "ip": 1, "cosine": 2}
_KINDS = {"uint8": 0, "float16": 1, "float32": 2, "sq8": 3}
_F16 = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
_NO_TABLE = np.empty(0, dtype=np.float32)


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def _refine(q, pos, rows, table, sq8, mode, out_d, out_p, empty):
    nq, r = pos.shape
    d = q.shape[1]
    k = out_d.shape[1]
    direct = table.shape[0] == 0
    for i in numba.prange(nq):
        key = np.empty(r, dtype=np.float32)
        score = np.empty(r, dtype=np.float32)
        qi = q[i]
        q_norm = np.float32(0.0)
        for t in range(d):
            q_norm += qi[t] * qi[t]
        q_norm = max(np.sqrt(q_norm), np.float32(1e-30))
        for j in range(r):
            p = pos[i, j]
            if p < 0:
                key[j] = np.inf
                score[j] = empty
                continue
            row = rows[p]
            dot = np.float32(0.0)
            sq = np.float32(0.0)
            if sq8:
                bits = np.int64(row[d]) | (np.int64(row[d + 1]) << 8)
                step = table[bits & 0x7FFF]
                base = np.float32(0.0) if bits & 0x8000 else np.float32(128.0)
            for t in range(d):
                if sq8:
                    x = (np.float32(row[t]) - base) * step
                elif direct:
                    x = np.float32(row[t])
                else:
                    x = table[np.int64(row[t])]
                if mode == 0:
                    diff = x - qi[t]
                    sq += diff * diff
                else:
                    dot += x * qi[t]
                    sq += x * x
            if mode == 0:
                s = sq
            elif mode == 1:
                s = dot
            else:
                s = dot / (q_norm * max(np.sqrt(sq), np.float32(1e-30)))
            score[j] = s
            key[j] = s if mode == 0 else -s
        order = np.argsort(key, kind="mergesort")   # ties in candidate order
        for j in range(k):
            c = order[j]
            out_p[i, j] = pos[i, c]
            out_d[i, j] = score[c] if pos[i, c] >= 0 else empty


def refine_rows(queries: np.ndarray, positions: np.ndarray, vectors: np.ndarray, store: str,
                metric: str, k: int, empty: np.float32, backend: str = "auto",
                threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(D float32 (nq, k), positions (nq, k)) of the k best candidates by their distance
    to the stored rows (`store` their format; squared L2 ascending, ip / cosine
    descending), ties in candidate order; empty slots (position -1) last with D = empty.
    backend "auto" | "native" | "numba" (as the fast scan's); threads: numba's count."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    positions = np.ascontiguousarray(positions, dtype=np.int64)
    nq, r = positions.shape
    out_d = np.empty((nq, k), dtype=np.float32)
    out_p = np.empty((nq, k), dtype=np.int64)
    if resolve_backend(backend) == "native":
        rows = np.ascontiguousarray(vectors)
        kernel("refine")(queries, positions, rows, _F16, out_d, out_p, nq, queries.shape[1], r,
                         rows.shape[0], rows.shape[1], k, _KINDS[store], _MODES[metric],
                         float(empty), resolve_threads(threads), level_index())
        return out_d, out_p
    rows = vectors.view(np.uint16) if store == "float16" else vectors
    table = _F16 if store in ("float16", "sq8") else _NO_TABLE
    _refine(queries, positions, rows, table, store == "sq8", _MODES[metric], out_d, out_p,
            np.float32(empty))
    return out_d, out_p

"""The fast-scan search over 4-bit VLQ codes (SPEC 2): approximate SIMD scan, exact re-rank.

Per query q, with A the line's centroid, s its other end, lam the code's lambda:
    |q - anchor - r_hat|^2 = b + lam (lam c + alpha)
                           + sum_m (L[m, k_m] + T_A[m, k_m]) + lam sum_m (T_s - T_A)[m, k_m]
with L = -2 <q_m, y_m,k> (one table per query) and T_c = 2 <c_m, y_m,k> + |y_m,k|^2 (one per
centroid, precomputed). The last sum is about 2 lam <c_s - c_A, r_hat>, small because a
residual is nearly orthogonal to its line; the scan drops it and quantizes L + T_A of each
probed centroid to uint8 (one scale per query), so that `indexer.fastscan.scan4` sums
4-bit lookups with SIMD shuffles. The `rerank` best codes of that approximate order are then
scored with the exact formula above, and the k best returned: the distances returned are
exact ADC distances, as the scalar scan's.

Stages, timed into `stages` when given: tables (the float query tables, one GEMM per
sub-space), lines+tables (probes, line selection and the quantized tables of the probes,
fused per query: `_prepare`, or its native twin indexer/_prepare.cpp with the same bits), scan,
rerank (the caller times coarse and merge).
"""
from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext

import numpy as np

from indexer.fastscan import scan4
from indexer.kernels import numba
from indexer.native import kernel, level_index, resolve_backend, resolve_threads
from indexer.selection import _divmod, _select_lines

__all__ = ["search_fastscan", "timed"]



@contextmanager
def _timed_stage(stages: dict, name: str):
    t0 = time.perf_counter()
    yield
    stages[name] = stages.get(name, 0.0) + time.perf_counter() - t0


def timed(stages: dict | None, name: str):
    """A context that adds its wall seconds to stages[name] (nothing when stages is None)."""
    return nullcontext() if stages is None else _timed_stage(stages, name)


QUERY_BLOCK = 16  # queries per parallel task: scratch buffers allocated once per block


@numba.njit(cache=True, inline="always")
def _quantize(lut, tables, t_min, t_span, probe_c, lut8, bias):
    """lut8[p, m, :] = round((L + T_A - low[p, m]) / scale), A = probe_c[p], with
    low = min_k L[m] + min_k T_A[m] (a lower bound of the sum, so one pass suffices) and
    scale the widest (L + T_A) range / 255; bias[p] = sum_m low[p, m]. Returns scale."""
    m_sub, ksub = lut.shape
    nprobe = probe_c.shape[0]
    l_min = np.empty(m_sub, dtype=np.float32)
    span = np.float32(0.0)
    l_span = np.empty(m_sub, dtype=np.float32)
    for m in range(m_sub):
        lo = lut[m, 0]
        hi = lut[m, 0]
        for j in range(1, ksub):
            lo = min(lo, lut[m, j])
            hi = max(hi, lut[m, j])
        l_min[m] = lo
        l_span[m] = hi - lo
    for pi in range(nprobe):
        a = probe_c[pi]
        total = np.float32(0.0)
        for m in range(m_sub):
            total += l_min[m] + t_min[a, m]
            span = max(span, l_span[m] + t_span[a, m])
        bias[pi] = total
    scale = span / np.float32(255.0) if span > 0 else np.float32(1.0)
    inv = np.float32(1.0) / scale
    for pi in range(nprobe):
        t = tables[probe_c[pi]]
        for m in range(m_sub):
            low = l_min[m] + t_min[probe_c[pi], m]
            for j in range(ksub):
                v = (lut[m, j] + t[m, j] - low) * inv + np.float32(0.5)
                lut8[pi, m, j] = np.uint8(min(np.float32(255.0), max(np.float32(0.0), v)))
    return scale


@numba.njit(parallel=True, cache=True)
def _prepare(dist_qc, edges, edge_len2, rule, nprobe, nlines, lutq, tables, t_min, t_span,
             line_list, line_probe, line_b, line_c, line_alpha, line_const, lut8, scale):
    """Per query: probes and lines (lines stage) and its quantized tables (tables stage),
    fused so that each query's data is touched while it is in cache."""
    nq = dist_qc.shape[0]
    nall = nprobe * edges.shape[1]
    for block in numba.prange((nq + QUERY_BLOCK - 1) // QUERY_BLOCK):
        probe_d = np.empty(nprobe, dtype=np.float32)
        probe_c = np.empty(nprobe, dtype=np.int64)
        line_d = np.empty(nall, dtype=np.float32)
        scratch = np.empty(max(nall, dist_qc.shape[1]), dtype=np.float32)
        pick = np.empty(nlines, dtype=np.int64)
        bias = np.empty(nprobe, dtype=np.float32)
        for qi in range(block * QUERY_BLOCK, min(nq, (block + 1) * QUERY_BLOCK)):
            _select_lines(dist_qc[qi], edges, edge_len2, rule, nprobe, nlines, probe_d,
                          probe_c, line_d, scratch, pick, line_list[qi], line_probe[qi],
                          line_b[qi], line_c[qi], line_alpha[qi])
            scale[qi] = _quantize(lutq[qi], tables, t_min, t_span, probe_c, lut8[qi], bias)
            for li in range(nlines):
                line_const[qi, li] = line_b[qi, li] + bias[line_probe[qi, li]]


def prepare_native(dist_qc, edges, edge_len2, rule, nprobe, nlines, lutq, tables, t_min, t_span,
                   line_list, line_probe, line_b, line_c, line_alpha, line_const, lut8, scale,
                   threads=None):
    """`_prepare` by the native kernel (indexer/_prepare.cpp: the same float32 operations
    and selections, so the same bits; AVX-512 table quantization at the level `scan4` runs);
    an edge out of range raises ValueError."""
    nq, ncent = dist_qc.shape
    c = np.ascontiguousarray
    kernel("prepare")(
        c(dist_qc, np.float32), c(edges, np.int32), c(edge_len2, np.float32), c(rule, np.float32),
        c(lutq, np.float32), c(tables, np.float32), c(t_min, np.float32), c(t_span, np.float32),
        line_list, line_probe, line_b, line_c, line_alpha, line_const, lut8, scale, nq, ncent,
        edges.shape[1], nprobe, nlines, lutq.shape[1], resolve_threads(threads), level_index())


def rerank4_native(cand_pos, cand_line, line_list, line_b, line_c, line_alpha, lutq, tables,
                   edges, packed, lam_idx, lam_values, out_d, out_p, threads=None):
    """`_rerank` by the native kernel (`_fastscan.rerank4`: AVX-512 gathers of 16
    candidates, else portable C++; the same float32 operations, so the same bits), at the
    level `scan4` runs; a candidate out of range raises ValueError."""
    nq, r = cand_pos.shape
    ncent, m = tables.shape[:2]
    c = np.ascontiguousarray
    kernel("rerank4")(
        c(cand_pos, np.int64), c(cand_line, np.int32), c(line_list, np.int64),
        c(line_b, np.float32), c(line_c, np.float32), c(line_alpha, np.float32),
        c(lutq, np.float32), c(tables, np.float32), c(edges, np.int32), c(packed, np.uint8),
        c(lam_idx, np.uint8), c(lam_values, np.float32), out_d, out_p, nq, r,
        line_list.shape[1], m, ncent, edges.shape[1], lam_values.shape[0], out_d.shape[1],
        resolve_threads(threads), level_index())


@numba.njit(cache=True, inline="always")
def _insert_best(out_d, out_p, filled, d, p):
    """Insert (d, p) into the ascending out_d[:filled] (k = out_d.size places), after its
    equals (so ties keep their arrival order) and NaN last; returns the new fill."""
    k = out_d.shape[0]
    if filled == k:
        last = out_d[k - 1]
        if not (d < last or (last != last and d == d)):
            return filled
        filled -= 1
    j = filled - 1
    while j >= 0 and (d < out_d[j] or (out_d[j] != out_d[j] and d == d)):
        out_d[j + 1] = out_d[j]
        out_p[j + 1] = out_p[j]
        j -= 1
    out_d[j + 1] = d
    out_p[j + 1] = p
    return filled + 1


@numba.njit(cache=True, inline="always")
def _code_sum(flat, lut, a, s, codes, p, sa, sd):
    """One sub-space pair p of a code anchored at table offset a, far end at s: the terms
    the original per-code loop adds to (sa, sd), in its order."""
    byte = np.uint32(codes[p])
    lo = np.uint32(32 * p) + (byte & np.uint32(15))
    hi = np.uint32(32 * p + 16) + (byte >> np.uint32(4))
    x = flat[a + lo]
    y = flat[a + hi]
    return (sa + (lut[lo] + x + lut[hi] + y),
            sd + ((flat[s + lo] - x) + (flat[s + hi] - y)))


@numba.njit(cache=True, inline="always")
def _exact_distances(cand_pos, cand_line, n, line_list, line_b, line_c, line_alpha, lut,
                     tables, edges, packed, lam_idx, lam_values, codes, t_a, t_s, s_a, s_d,
                     dist):
    """dist[:n] = exact ADC distances of the first n candidates of a query (buffers: at
    least n + 3 long). Their codes and table offsets are gathered first, then four codes
    are summed at a time: four independent chains of loads and adds."""
    nedge = edges.shape[1]
    half = packed.shape[1]
    row = tables.shape[1] * tables.shape[2]
    flat = tables.reshape(-1)
    lut_flat = lut.reshape(-1)
    inv = 1.0 / nedge
    for i in range(n):
        j = cand_pos[i]
        a, e = _divmod(line_list[cand_line[i]], nedge, inv)
        t_a[i] = np.uint32(a * row)
        t_s[i] = np.uint32(edges[a, e] * row)
        for p in range(half):
            codes[i, p] = packed[j >> 5, p, j & 31]
    for i in range(n, (n + 3) // 4 * 4):   # padding: any valid table, ignored
        t_a[i] = 0
        t_s[i] = 0
        codes[i] = 0
    for i in range(0, n, 4):
        z = np.float32(0.0)
        sa0, sd0, sa1, sd1, sa2, sd2, sa3, sd3 = z, z, z, z, z, z, z, z
        for p in range(half):
            sa0, sd0 = _code_sum(flat, lut_flat, t_a[i], t_s[i], codes[i], p, sa0, sd0)
            sa1, sd1 = _code_sum(flat, lut_flat, t_a[i + 1], t_s[i + 1], codes[i + 1], p,
                                 sa1, sd1)
            sa2, sd2 = _code_sum(flat, lut_flat, t_a[i + 2], t_s[i + 2], codes[i + 2], p,
                                 sa2, sd2)
            sa3, sd3 = _code_sum(flat, lut_flat, t_a[i + 3], t_s[i + 3], codes[i + 3], p,
                                 sa3, sd3)
        s_a[i], s_a[i + 1], s_a[i + 2], s_a[i + 3] = sa0, sa1, sa2, sa3
        s_d[i], s_d[i + 1], s_d[i + 2], s_d[i + 3] = sd0, sd1, sd2, sd3
    for i in range(n):
        li = cand_line[i]
        lam = lam_values[lam_idx[cand_pos[i]]]
        dist[i] = (line_b[li] + lam * (lam * line_c[li] + line_alpha[li]) + s_a[i]
                   + lam * s_d[i])


@numba.njit(parallel=True, cache=True)
def _rerank(cand_pos, cand_line, line_list, line_b, line_c, line_alpha, lutq, tables, edges,
            packed, lam_idx, lam_values, out_d, out_p):
    """Exact ADC distances of the candidates; the k best per query, ascending (ties in
    candidate order, i.e. by the scan's (approx, pos) order: the candidates come nearly
    sorted, so that an insertion into the sorted best is short)."""
    nq, r = cand_pos.shape
    k = out_d.shape[1]
    for block in numba.prange((nq + QUERY_BLOCK - 1) // QUERY_BLOCK):
        codes = np.empty((r + 3, packed.shape[1]), dtype=np.uint8)
        t_a = np.empty(r + 3, dtype=np.uint32)
        t_s = np.empty(r + 3, dtype=np.uint32)
        s_a = np.empty(r + 3, dtype=np.float32)
        s_d = np.empty(r + 3, dtype=np.float32)
        dist = np.empty(r, dtype=np.float32)
        for qi in range(block * QUERY_BLOCK, min(nq, (block + 1) * QUERY_BLOCK)):
            n = 0
            while n < r and cand_pos[qi, n] >= 0:   # the scan pads at the end
                n += 1
            _exact_distances(cand_pos[qi], cand_line[qi], n, line_list[qi], line_b[qi],
                             line_c[qi], line_alpha[qi], lutq[qi], tables, edges, packed,
                             lam_idx, lam_values, codes, t_a, t_s, s_a, s_d, dist)
            filled = 0
            for i in range(n):
                filled = _insert_best(out_d[qi], out_p[qi], filled, dist[i], cand_pos[qi, i])
            for i in range(filled, k):
                out_d[qi, i] = np.inf
                out_p[qi, i] = -1


def search_fastscan(quantizer, lists, q: np.ndarray, dist_qc: np.ndarray, k: int, nprobe: int,
                    nlines: int, rerank: int, stages: dict | None = None,
                    scan_backend: str = "auto", allowed: np.ndarray | None = None,
                    exact: bool = True):
    """k nearest codes of encoded queries q (float32 (nq, d)), whose distances to all
    centroids are dist_qc (finite, `quantizer.centroid_distances`), by the fast scan: returns
    (exact ADC distances, code positions), ascending, padded with (inf, -1). `allowed`: None
    or the bitset of the rows that may be returned (indexer.rowsets). exact=False: the
    scan's best max(rerank, k) by its approximate distance, without the exact re-rank (for
    a refinement by stored vectors, which scores them exactly anyway)."""
    nq = q.shape[0]
    with timed(stages, "tables"):
        lutq = quantizer.query_tables(q)
    with timed(stages, "lines+tables"):
        tables, t_min, t_span = quantizer.centroid_tables_with_bounds()
        line_list = np.empty((nq, nlines), dtype=np.int64)
        line_probe = np.empty((nq, nlines), dtype=np.int32)
        line_b, line_c, line_alpha, line_const = (np.empty((nq, nlines), dtype=np.float32)
                                                  for _ in range(4))
        lut8 = np.empty((nq, nprobe) + lutq.shape[1:], dtype=np.uint8)
        scale = np.empty(nq, dtype=np.float32)
        prepare = prepare_native if resolve_backend(scan_backend) == "native" else _prepare
        prepare(dist_qc, quantizer.edges, quantizer.edge_len2, quantizer.line_rule, nprobe,
                nlines, lutq, tables, t_min, t_span, line_list, line_probe, line_b, line_c,
                line_alpha, line_const, lut8, scale)
    with timed(stages, "scan"):
        approx, cand_pos, cand_line = scan4(lut8, scale, line_list, line_probe, line_const, line_c,
                                       line_alpha, lists.offsets, lists.packed, lists.lambda_idx,
                                       quantizer.lambda_values, max(rerank, k),
                                       allowed=allowed, backend=scan_backend)
    if not exact:
        return approx, cand_pos
    with timed(stages, "rerank"):
        out_d = np.empty((nq, k), dtype=np.float32)
        out_p = np.empty((nq, k), dtype=np.int64)
        args = (cand_pos, cand_line, line_list, line_b, line_c, line_alpha, lutq, tables,
                quantizer.edges, lists.packed, lists.lambda_idx, quantizer.lambda_values)
        if resolve_backend(scan_backend) == "native":
            rerank4_native(*args, out_d, out_p)
        else:
            _rerank(*args, out_d, out_p)
    return out_d, out_p


"""ADC list-scan kernels (SPEC 2, search step 3-4).

For query q and a code j on line (A, s) with quantized parameter lam:
    dist = b + lam^2 c + lam * alpha          (|q - anchor|^2, from the coarse step)
         + term[j]                            (2 <anchor, r_hat> + |r_hat|^2, per code)
         + sum_m lut[q, m, code[j, m]]        (lut = -2 <q_m, y_m,k>, one table per query)
which equals |q - anchor - r_hat|^2 exactly. Two implementations of the same scan:
`search_numba` (compiled, parallel over queries, CPU; fuses the line selection of
indexer.coarse.select_lines with the scan) and `scan_torch` (batched gathers over lines
selected by select_lines, runs on CUDA when the tensors live there). Both return, per query, the k smallest
distances and the positions of their codes, ascending, padded with (inf, -1).
"""
from __future__ import annotations

import sys

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; torch still works
    numba = None

_SENTINEL = np.float32(np.finfo(np.float32).max)


QUERY_BLOCK = 16  # queries per parallel task: scratch buffers are allocated once per block

if numba is not None:
    from indexer.selection import _select_lines

    @numba.njit(cache=True, inline="always")
    def _replace_root(heap_d, heap_p, k, d, p):
        """Replace the root of a max-heap of size k and restore the heap property."""
        i = 0
        while True:
            left = 2 * i + 1
            if left >= k:
                break
            j = left
            if left + 1 < k and heap_d[left + 1] > heap_d[left]:
                j = left + 1
            if heap_d[j] <= d:
                break
            heap_d[i] = heap_d[j]
            heap_p[i] = heap_p[j]
            i = j
        heap_d[i] = d
        heap_p[i] = p

    @numba.njit(cache=True, inline="always")
    def _push(heap_d, heap_p, size, d, p):
        """Add (d, p) at position `size` of a max-heap and sift it up."""
        i = size
        while i > 0:
            parent = (i - 1) >> 1
            if heap_d[parent] >= d:
                break
            heap_d[i] = heap_d[parent]
            heap_p[i] = heap_p[parent]
            i = parent
        heap_d[i] = d
        heap_p[i] = p

    @numba.njit(cache=True)
    def _drain_sorted(heap_d, heap_p, size, out_d, out_p):
        """Empty a max-heap of `size` entries into out_* ascending; pad with (max, -1)."""
        for t in range(size, out_d.shape[0]):
            out_d[t] = _SENTINEL
            out_p[t] = -1
        for last in range(size - 1, -1, -1):
            out_d[last] = heap_d[0]
            out_p[last] = heap_p[0]
            _replace_root(heap_d, heap_p, last, heap_d[last], heap_p[last])

    @numba.njit(cache=True, inline="always")
    def row_sum8(flat, codes64, j):
        """sum_m table[m, code[j, m]] for 8-bit codes read 8 at a time from codes64 (one
        uint64 word per 8 sub-codes) against the tables flattened (M * 256,)."""
        s0 = np.float32(0.0)
        s1 = np.float32(0.0)
        for w in range(codes64.shape[1]):
            word = codes64[j, w]
            row = w * 2048
            s0 += flat[row + (word & 0xFF)]
            s1 += flat[row + 256 + ((word >> 8) & 0xFF)]
            s0 += flat[row + 512 + ((word >> 16) & 0xFF)]
            s1 += flat[row + 768 + ((word >> 24) & 0xFF)]
            s0 += flat[row + 1024 + ((word >> 32) & 0xFF)]
            s1 += flat[row + 1280 + ((word >> 40) & 0xFF)]
            s0 += flat[row + 1536 + ((word >> 48) & 0xFF)]
            s1 += flat[row + 1792 + ((word >> 56) & 0xFF)]
        return s0 + s1

    @numba.njit(cache=True)
    def _exact_term(j, lst, nedge, edges, centroids, codebook, codes, lam):
        """2 <anchor, r_hat> + |r_hat|^2 of the code at row j of list lst."""
        c_a = centroids[lst // nedge]
        c_s = centroids[edges[lst // nedge, lst % nedge]]
        dsub = codebook.shape[2]
        total = 0.0
        for m in range(codebook.shape[0]):
            y = codebook[m, codes[j, m]]
            for t in range(dsub):
                i = m * dsub + t
                anchor = c_a[i] + lam * (c_s[i] - c_a[i])
                total += (2.0 * anchor + y[t]) * y[t]
        return total

    @numba.njit(cache=True)
    def _rerank_exact(heap_d, heap_p, filled, offsets, nedge, edges, centroids, codebook,
                      codes, lam_idx, lam_values, terms, term_base, term_scale, rule, out_d,
                      out_p):
        """Swap each kept code's stored (int16) term for its exact one (none for the inner
        product: its distance has no per-code term); the k best, ascending."""
        exact = np.empty(filled, dtype=np.float32)
        for i in range(filled):
            j = heap_p[i]
            lst = np.searchsorted(offsets, j, side="right") - 1
            stored = term_base[lst] + term_scale * np.float32(terms[j])
            exact[i] = heap_d[i] - stored
            if rule[0] == 0:
                exact[i] += _exact_term(j, lst, nedge, edges, centroids, codebook, codes,
                                        lam_values[lam_idx[j]])
        order = np.argsort(exact, kind="mergesort")
        k = out_d.shape[0]
        for i in range(k):
            if i < filled:
                out_d[i] = exact[order[i]]
                out_p[i] = heap_p[order[i]]
            else:
                out_d[i] = _SENTINEL
                out_p[i] = -1

    @numba.njit(parallel=True, cache=True, fastmath={"reassoc", "contract", "arcp"})
    def _search_numba(dist_qc, lut, edges, edge_len2, rule, nprobe, nlines, lam_values,
                      offsets, codes, codes64, lam_idx, terms, term_base, term_scale, centroids,
                      codebook, allowed, r, out_d, out_p):
        nq = dist_qc.shape[0]
        nedge = edges.shape[1]
        m_sub = codes.shape[1]
        words = codes64.shape[1]  # > 0: read codes 8 bytes at a time (M % 8 == 0)
        nall = nprobe * nedge
        masked = allowed.shape[0] > 0
        for block in numba.prange((nq + QUERY_BLOCK - 1) // QUERY_BLOCK):
            probe_d = np.empty(nprobe, dtype=np.float32)
            probe_c = np.empty(nprobe, dtype=np.int64)
            line_d = np.empty(nall, dtype=np.float32)
            scratch = np.empty(max(nall, dist_qc.shape[1]), dtype=np.float32)
            line_p = np.empty(nlines, dtype=np.int64)
            line_list = np.empty(nlines, dtype=np.int64)
            line_probe = np.empty(nlines, dtype=np.int32)
            line_b = np.empty(nlines, dtype=np.float32)
            line_c = np.empty(nlines, dtype=np.float32)
            line_alpha = np.empty(nlines, dtype=np.float32)
            heap_d = np.empty(r, dtype=np.float32)
            heap_p = np.empty(r, dtype=np.int64)
            for qi in range(block * QUERY_BLOCK, min(nq, (block + 1) * QUERY_BLOCK)):
                # steps 1-2: nprobe nearest centroids, nlines nearest of their lines
                _select_lines(dist_qc[qi], edges, edge_len2, rule, nprobe, nlines, probe_d,
                              probe_c, line_d, scratch, line_p, line_list, line_probe, line_b,
                              line_c, line_alpha)
                # steps 3-4: ADC over the selected lists, top-r max-heap, exact re-rank
                filled = 0
                table = lut[qi]
                flat = table.ravel()
                for li in range(nlines):
                    lst = line_list[li]
                    b = line_b[li]
                    c = line_c[li]
                    alpha = line_alpha[li]
                    base = term_base[lst]
                    scale = term_scale
                    for j in range(offsets[lst], offsets[lst + 1]):
                        if masked and not (allowed[j >> 5] >> np.uint32(j & 31)) & 1:
                            continue
                        lam = lam_values[lam_idx[j]]
                        d = b + lam * (lam * c + alpha) + (base + scale * np.float32(terms[j]))
                        if words:
                            d += row_sum8(flat, codes64, j)
                        else:
                            for m in range(m_sub):
                                d += table[m, codes[j, m]]
                        if filled < r:
                            _push(heap_d, heap_p, filled, d, j)
                            filled += 1
                        elif d < heap_d[0]:
                            _replace_root(heap_d, heap_p, r, d, j)
                _rerank_exact(heap_d, heap_p, filled, offsets, nedge, edges, centroids, codebook,
                              codes, lam_idx, lam_values, terms, term_base, term_scale, rule,
                              out_d[qi], out_p[qi])


def search_numba(dist_qc, lut, edges, edge_len2, rule, nprobe, nlines, lam_values, offsets,
                 codes, lam_idx, terms, term_base, term_scale, centroids, codebook, k, rerank,
                 allowed=None):
    """Compiled CPU search steps 1-4 fused per query (parallel over queries).

    dist_qc: (nq, K) float32 distances to the centroids (`VLQQuantizer.centroid_distances`,
    whose `line_rule` is `rule`); lut: (nq, M, 256); `allowed`: None (every row) or a
    bitset of the rows the scan may return (uint32 words, bit j & 31 of word j >> 5); terms
    int16 with a float32 base and scale per list (`InvertedLists`). The scan keeps the
    max(k, rerank) best by that stored term, then swaps in each one's exact term (from the
    centroids and the codebook) and returns the k best: (exact ADC distances, code
    positions), ascending, padded with (inf, -1).
    """
    if numba is None:
        raise RuntimeError("the numba backend needs numba installed; use backend='torch'")
    nq = dist_qc.shape[0]
    out_d = np.empty((nq, k), dtype=np.float32)
    out_p = np.empty((nq, k), dtype=np.int64)
    if codes.shape[1] % 8 == 0 and lut.shape[2] == 256 and sys.byteorder == "little":
        codes64 = np.ascontiguousarray(codes).view(np.uint64)
    else:
        codes64 = np.empty((codes.shape[0], 0), dtype=np.uint64)
    if allowed is None:
        allowed = np.empty(0, dtype=np.uint32)
    _search_numba(dist_qc, lut, edges, edge_len2, rule, nprobe, nlines, lam_values, offsets,
                  codes, codes64, lam_idx, terms, term_base, term_scale, centroids, codebook,
                  allowed, max(k, rerank), out_d, out_p)
    out_d[out_p < 0] = np.inf
    return out_d, out_p


def scan_torch(lut, list_ids, line_b, line_alpha, line_c, lam_values, offsets, codes,
               lam_idx, terms, k, max_candidates: int = 1 << 21):
    """The same scan with torch ops on whatever device the tensors live on.

    Candidates of a group of queries are expanded into flat index vectors (at most about
    `max_candidates` at a time, to bound memory), their distances computed with gathers,
    then laid out per query for torch.topk.
    """
    import torch

    device = codes.device
    nq, nsel = list_ids.shape
    m_sub = codes.shape[1]
    ksub = lut.shape[2]
    starts = offsets[list_ids]
    counts = offsets[list_ids + 1] - starts                     # (nq, nsel)
    per_query = counts.sum(dim=1)
    out_d = torch.full((nq, k), float("inf"), dtype=torch.float32, device=device)
    out_p = torch.full((nq, k), -1, dtype=torch.int64, device=device)
    sub_ids = torch.arange(m_sub, device=device)
    q0 = 0
    cum = torch.cumsum(per_query, 0).cpu()
    while q0 < nq:
        base = int(cum[q0 - 1]) if q0 else 0
        q1 = int(torch.searchsorted(cum, base + max_candidates, right=True))
        q1 = min(nq, max(q1, q0 + 1))
        cnt = counts[q0:q1].reshape(-1)
        total = int(cnt.sum())
        if total:
            pair = torch.repeat_interleave(torch.arange(cnt.numel(), device=device), cnt)
            first = torch.cumsum(cnt, 0) - cnt
            pos = starts[q0:q1].reshape(-1)[pair] + (torch.arange(total, device=device) - first[pair])
            qrow = pair // nsel
            lam = lam_values[lam_idx[pos].long()]
            dist = (line_b[q0:q1].reshape(-1)[pair]
                    + lam * (lam * line_c[q0:q1].reshape(-1)[pair] + line_alpha[q0:q1].reshape(-1)[pair])
                    + terms[pos])
            flat = (qrow[:, None] * m_sub + sub_ids[None, :]) * ksub + codes[pos].long()
            dist = dist + lut[q0:q1].reshape(-1)[flat].sum(dim=1)
            nper = per_query[q0:q1]
            width = int(nper.max())
            col = torch.arange(total, device=device) - (torch.cumsum(nper, 0) - nper)[qrow]
            mat_d = torch.full((q1 - q0, width), float("inf"), dtype=torch.float32, device=device)
            mat_p = torch.full((q1 - q0, width), -1, dtype=torch.int64, device=device)
            mat_d[qrow, col] = dist
            mat_p[qrow, col] = pos
            kk = min(k, width)
            top_d, top_i = torch.topk(mat_d, kk, dim=1, largest=False, sorted=True)
            out_d[q0:q1, :kk] = top_d
            # a row given an infinite term (not allowed) never counts as a hit
            out_p[q0:q1, :kk] = torch.where(torch.isinf(top_d), -1, torch.gather(mat_p, 1, top_i))
        q0 = q1
    return out_d, out_p

"""4-bit fast scan of VLQ lists (issue 13): packed 4-bit PQ codes, SIMD table lookups.

Codes: row j has M sub-codes code[j, m] in 0..15 (M even, 2 <= M <= 64). Resident layout
`packed` uint8 (ceil(n/32), M/2, 32): rows cut into blocks of 32 consecutive rows ignoring
list boundaries (only the last block is padded, with zeros), and
    packed[b, p, t] = code[32b+t, 2p] | code[32b+t, 2p+1] << 4.

`scan4` scans, per query, the rows of its selected lists (CSR `offsets` over the global row
order) with one 16-entry uint8 table per (probe, sub-code):
    S = sum_m lut8[q, line_probe[q, l], m, code[j, m]]                     (exact integer)
    lam = lam_values[lam_idx[j]]; t = lam * c; t = t + alpha; t = lam * t
    approx = (line_const + t) + scale[q] * float32(S)        (float32, this order, no FMA)
and returns the r smallest approx per query, ascending by (approx, pos) (then line, so that
the order is total), with pos the global row and line the index l of the selected line;
padded with (inf, -1, -1). A NaN approx (only from overflowing inputs) counts as +inf.

Two backends give bitwise-identical arrays: "native" (indexer/_fastscan.cpp, built by `pip
install -e .`: AVX-512, AVX2 or portable C++ chosen at run time, std::thread over queries,
GIL released) and "numba" (the reference: the same float32 operations, prange over queries).
The native kernel sums each block of 32 rows once for a run of consecutive selected lines (in
line_list order) with the same probe whose row ranges follow each other, so short lists
sharing blocks are cheapest when a probe's lines come in row order (as indexer.fastscan_search
gives them); the result does not depend on the order.
The native level (and SNAPLINE_SIMD, which caps it) is indexer.native's.
"""
from __future__ import annotations

import numba
import numpy as np

from indexer.native import kernel, level_index, resolve_backend, resolve_threads

__all__ = ["pack_codes4", "scan4", "unpack_codes4"]

BLOCK = 32
MAX_M = 64
_INF32 = np.float32(np.inf)


def _array(name: str, value, dtype, ndim: int) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(value).__name__}")
    if value.dtype != np.dtype(dtype) or value.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D {np.dtype(dtype)} array, "
                         f"got {value.ndim}-D {value.dtype} of shape {value.shape}")
    return np.ascontiguousarray(value)


def _check_m(name: str, m: int) -> None:
    if m < 2 or m > MAX_M or m % 2:
        raise ValueError(f"{name}: the number of sub-codes M={m} must be even and in [2, {MAX_M}]")


def pack_codes4(codes: np.ndarray) -> np.ndarray:
    """codes uint8 (n, M), values < 16 -> packed uint8 (ceil(n/32), M/2, 32) (module doc)."""
    codes = _array("codes", codes, np.uint8, 2)
    n, m = codes.shape
    _check_m("codes", m)
    if n and int(codes.max()) >= 16:
        raise ValueError(f"codes must be 4-bit (< 16), found {int(codes.max())}")
    nblocks = -(-n // BLOCK)
    padded = np.zeros((nblocks * BLOCK, m), dtype=np.uint8)
    padded[:n] = codes
    pairs = padded[:, 0::2] | (padded[:, 1::2] << 4)        # (rows, M/2)
    return np.ascontiguousarray(pairs.reshape(nblocks, BLOCK, m // 2).transpose(0, 2, 1))


def unpack_codes4(packed: np.ndarray, n: int) -> np.ndarray:
    """The inverse of pack_codes4: packed (nblocks, M/2, 32) -> codes uint8 (n, M)."""
    packed = _array("packed", packed, np.uint8, 3)
    nblocks, pairs, width = packed.shape
    if width != BLOCK:
        raise ValueError(f"packed must have shape (nblocks, M/2, {BLOCK}), got {packed.shape}")
    _check_m("packed", 2 * pairs)
    n = int(n)
    if n < 0 or -(-n // BLOCK) != nblocks:
        raise ValueError(f"n={n} does not fit packed of {nblocks} blocks of {BLOCK} rows")
    rows = packed.transpose(0, 2, 1).reshape(nblocks * BLOCK, pairs)[:n]
    codes = np.empty((n, 2 * pairs), dtype=np.uint8)
    codes[:, 0::2] = rows & 15
    codes[:, 1::2] = rows >> 4
    return codes


# ---------------------------------------------------------------- numba reference
@numba.njit(cache=True, inline="always")
def _less(d1, p1, l1, d2, p2, l2):
    if d1 != d2:
        return d1 < d2
    if p1 != p2:
        return p1 < p2
    return l1 < l2


@numba.njit(cache=True)
def _sift_down(hd, hp, hl, size, d, p, l):
    """Put (d, p, l) at the root of a max-heap of `size` entries and sift it down."""
    i = 0
    while True:
        left = 2 * i + 1
        if left >= size:
            break
        j = left
        if left + 1 < size and _less(hd[left], hp[left], hl[left], hd[left + 1], hp[left + 1], hl[left + 1]):
            j = left + 1
        if not _less(d, p, l, hd[j], hp[j], hl[j]):
            break
        hd[i] = hd[j]
        hp[i] = hp[j]
        hl[i] = hl[j]
        i = j
    hd[i] = d
    hp[i] = p
    hl[i] = l


@numba.njit(cache=True)
def _offer(hd, hp, hl, size, d, p, l):
    """Offer (d, p, l) to a max-heap of capacity hd.size holding `size`; returns its size."""
    if size < hd.shape[0]:
        i = size
        while i > 0:
            parent = (i - 1) >> 1
            if not _less(hd[parent], hp[parent], hl[parent], d, p, l):
                break
            hd[i] = hd[parent]
            hp[i] = hp[parent]
            hl[i] = hl[parent]
            i = parent
        hd[i] = d
        hp[i] = p
        hl[i] = l
        return size + 1
    if _less(d, p, l, hd[0], hp[0], hl[0]):
        _sift_down(hd, hp, hl, size, d, p, l)
    return size


@numba.njit(cache=True)
def _drain(hd, hp, hl, size, out_d, out_p, out_l):
    for t in range(size, out_d.shape[0]):
        out_d[t] = _INF32
        out_p[t] = -1
        out_l[t] = -1
    for last in range(size - 1, -1, -1):
        out_d[last] = hd[0]
        out_p[last] = hp[0]
        out_l[last] = hl[0]
        _sift_down(hd, hp, hl, last, hd[last], hp[last], hl[last])


@numba.njit(cache=True)
def _scan_query_numba(lut, scale, lists, probes, consts, cs, alphas, offsets, packed, lam_idx,
                      lam_values, allowed, out_d, out_p, out_l):
    r = out_d.shape[0]
    masked = allowed.shape[0] > 0
    pairs = packed.shape[1]
    hd = np.empty(r, dtype=np.float32)
    hp = np.empty(r, dtype=np.int64)
    hl = np.empty(r, dtype=np.int32)
    sums = np.empty(BLOCK, dtype=np.int32)
    size = 0
    for li in range(lists.shape[0]):
        table = lut[probes[li]]
        c = cs[li]
        alpha = alphas[li]
        cst = consts[li]
        lo = offsets[lists[li]]
        hi = offsets[lists[li] + 1]
        if hi <= lo:
            continue
        for block in range(lo // BLOCK, (hi - 1) // BLOCK + 1):  # the rows of the list in it
            first = block * BLOCK
            t0 = max(lo - first, 0)
            t1 = min(hi - first, BLOCK)
            sums[t0:t1] = 0
            for p in range(pairs):
                row = packed[block, p]
                even = table[2 * p]
                odd = table[2 * p + 1]
                for t in range(t0, t1):
                    x = row[t]
                    sums[t] += np.int32(even[x & 15]) + np.int32(odd[x >> 4])
            for t in range(t0, t1):
                if masked and not (allowed[block] >> np.uint32(t)) & 1:
                    continue
                lam = lam_values[lam_idx[first + t]]
                tt = lam * c
                tt = tt + alpha
                tt = lam * tt
                u = scale * np.float32(sums[t])
                d = (cst + tt) + u
                if d != d:
                    d = _INF32
                if size < r or d <= hd[0]:  # most rows stop here, without a call
                    size = _offer(hd, hp, hl, size, d, np.int64(first + t), np.int32(li))
    _drain(hd, hp, hl, size, out_d, out_p, out_l)


@numba.njit(parallel=True, cache=True)
def _scan4_numba(lut8, scale, line_list, line_probe, line_const, line_c, line_alpha, offsets,
                 packed, lam_idx, lam_values, allowed, out_d, out_p, out_l):
    for q in numba.prange(lut8.shape[0]):
        _scan_query_numba(lut8[q], scale[q], line_list[q], line_probe[q], line_const[q], line_c[q],
                          line_alpha[q], offsets, packed, lam_idx, lam_values, allowed, out_d[q],
                          out_p[q], out_l[q])


# ---------------------------------------------------------------- entry point
def _check_scan_args(lut8, scale, line_list, line_probe, line_const, line_c, line_alpha, offsets,
                     packed, lam_idx, lam_values, r) -> tuple:
    lut8 = _array("lut8", lut8, np.uint8, 4)
    nq, nprobe, m, width = lut8.shape
    if width != 16:
        raise ValueError(f"lut8 must have shape (nq, nprobe, M, 16), got {lut8.shape}")
    _check_m("lut8", m)
    scale = _array("scale", scale, np.float32, 1)
    if scale.shape != (nq,):
        raise ValueError(f"scale must have shape ({nq},), got {scale.shape}")
    line_list = _array("line_list", line_list, np.int64, 2)
    nlines = line_list.shape[1]
    lines = {"line_probe": (line_probe, np.int32), "line_const": (line_const, np.float32),
             "line_c": (line_c, np.float32), "line_alpha": (line_alpha, np.float32)}
    checked = {}
    for name, (value, dtype) in {"line_list": (line_list, np.int64), **lines}.items():
        checked[name] = _array(name, value, dtype, 2)
        if checked[name].shape != (nq, nlines):
            raise ValueError(f"{name} must have shape ({nq}, {nlines}) like line_list and lut8's "
                             f"nq, got {checked[name].shape}")
    offsets = _array("offsets", offsets, np.int64, 1)
    lam_idx = _array("lam_idx", lam_idx, np.uint8, 1)
    lam_values = _array("lam_values", lam_values, np.float32, 1)
    n, nlists = lam_idx.shape[0], offsets.shape[0] - 1
    if nlists < 0 or offsets[0] < 0 or offsets[-1] > n or np.any(np.diff(offsets) < 0):
        raise ValueError(f"offsets must be non-decreasing from >= 0 to <= n={n} (rows of lam_idx), "
                         f"got {offsets.shape[0]} entries from {offsets[:1]} to {offsets[-1:]}")
    packed = _array("packed", packed, np.uint8, 3)
    if packed.shape[1:] != (m // 2, BLOCK) or packed.shape[0] < -(-n // BLOCK):
        raise ValueError(f"packed must have shape (>= {-(-n // BLOCK)}, {m // 2}, {BLOCK}) for "
                         f"n={n} rows and M={m}, got {packed.shape}")
    if lam_values.shape[0] < 1 or (n and int(lam_idx.max()) >= lam_values.shape[0]):
        raise ValueError(f"lam_idx must index lam_values ({lam_values.shape[0]} values), "
                         f"max is {int(lam_idx.max()) if n else None}")
    if line_list.size and (line_list.min() < 0 or line_list.max() >= nlists):
        raise ValueError(f"line_list must hold list ids in [0, {nlists}), got "
                         f"[{line_list.min()}, {line_list.max()}]")
    probes = checked["line_probe"]
    if probes.size and (probes.min() < 0 or probes.max() >= nprobe):
        raise ValueError(f"line_probe must index lut8's {nprobe} probes, got "
                         f"[{probes.min()}, {probes.max()}]")
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
        raise ValueError(f"r must be an integer >= 1, got {r!r}")
    return (lut8, scale, line_list, probes, checked["line_const"], checked["line_c"],
            checked["line_alpha"], offsets, packed, lam_idx, lam_values)


def scan4(lut8, scale, line_list, line_probe, line_const, line_c, line_alpha, offsets, packed,
          lam_idx, lam_values, r, *, allowed=None, backend="auto", threads=None):
    """The r best rows per query of the 4-bit fast scan (module doc); returns (approx float32
    (nq, r), pos int64 (nq, r), line int32 (nq, r)), padded with (inf, -1, -1).

    allowed: None (every row) or the rows that may be returned, a bitset of uint32 words
    (bit t of word b: row 32b + t; `indexer.rowsets`), ceil(n/32) words.

    backend: "native", "numba" or "auto" (native when built); threads: None = numba's
    thread count."""
    args = _check_scan_args(lut8, scale, line_list, line_probe, line_const, line_c, line_alpha,
                            offsets, packed, lam_idx, lam_values, r)
    chosen = resolve_backend(backend)
    threads = resolve_threads(threads)
    n = args[9].shape[0]
    if allowed is None:
        allowed = np.empty(0, dtype=np.uint32)
    allowed = _array("allowed", allowed, np.uint32, 1)
    if allowed.shape[0] not in (0, -(-n // BLOCK)):
        raise ValueError(f"allowed must hold ceil(n/32) = {-(-n // BLOCK)} uint32 words for "
                         f"n={n} rows, got {allowed.shape[0]}")
    nq, nprobe, m = args[0].shape[:3]
    r = int(r)
    out_d = np.empty((nq, r), dtype=np.float32)
    out_p = np.empty((nq, r), dtype=np.int64)
    out_l = np.empty((nq, r), dtype=np.int32)
    if nq == 0:
        return out_d, out_p, out_l
    if chosen == "native":
        nlines, nlists, nlambda = args[2].shape[1], args[7].shape[0] - 1, args[10].shape[0]
        kernel("scan4")(*args, allowed, out_d, out_p, out_l, nq, nprobe, m, nlines, nlists,
                        nlambda, r, threads, level_index())
        return out_d, out_p, out_l
    previous = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        _scan4_numba(*args, allowed, out_d, out_p, out_l)
    finally:
        numba.set_num_threads(previous)
    return out_d, out_p, out_l

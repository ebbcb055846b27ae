"""Compiled selections of the search (SPEC 2 steps 1-2): the k smallest of a row, the
nprobe nearest centroids and the nlines nearest of their lines.

`_kth_smallest` finds the exact kth value by bucketing: one histogram of the values over
[min, max] (a monotone map, so that the bucket order is the value order), then again
inside the one bucket holding the kth, until a handful of values are left. A row with a
NaN or an infinity (or a range overflowing float32) takes a quickselect instead.
"""
from __future__ import annotations

import numpy as np

import numba

_BUCKETS = 256
_SMALL = 24   # at most this many values left: insertion sort


@numba.njit(cache=True)
def _quickselect(a, kth):
    """The kth smallest (0-based) of a, reordered in place (any values)."""
    lo = 0
    hi = a.shape[0] - 1
    while hi > lo:
        x = a[lo]
        y = a[(lo + hi) >> 1]
        z = a[hi]
        pivot = max(min(x, y), min(max(x, y), z))
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                tmp = a[i]
                a[i] = a[j]
                a[j] = tmp
                i += 1
                j -= 1
        if kth <= j:
            hi = j
        elif kth >= i:
            lo = i
        else:
            break
    return a[kth]


@numba.njit(cache=True, inline="always")
def _has_no_nan(a):
    ok = True
    for i in range(a.shape[0]):
        ok &= a[i] == a[i]
    return ok


@numba.njit(cache=True, inline="always")
def _min_max(a, m):
    """(min, max) of a[:m] (m > 0; garbage with a NaN): four independent chains, as one
    chain of dependent min instructions is latency-bound."""
    lo0 = lo1 = lo2 = lo3 = hi0 = hi1 = hi2 = hi3 = a[0]
    for i in range(0, m - 3, 4):
        lo0 = min(lo0, a[i])
        hi0 = max(hi0, a[i])
        lo1 = min(lo1, a[i + 1])
        hi1 = max(hi1, a[i + 1])
        lo2 = min(lo2, a[i + 2])
        hi2 = max(hi2, a[i + 2])
        lo3 = min(lo3, a[i + 3])
        hi3 = max(hi3, a[i + 3])
    for i in range(m - m % 4, m):
        lo0 = min(lo0, a[i])
        hi0 = max(hi0, a[i])
    return min(min(lo0, lo1), min(lo2, lo3)), max(max(hi0, hi1), max(hi2, hi3))


@numba.njit(cache=True)
def _range(a, m):
    """(min, max, finite) of a[:m] (m > 0): finite is False with a NaN or an infinity."""
    ok = True
    for i in range(m):
        ok &= a[i] - a[i] == 0
    lo, hi = _min_max(a, m)
    return lo, hi, ok


@numba.njit(cache=True, inline="always")
def _bucket_round(src, m, lo, scale, kth, counts, ids, out):
    """Keep into out the values of src[:m] in the bucket holding the kth smallest; returns
    (how many, kth among them). In place when src is out (kept <= i). Four histograms
    (counts: 4 * _BUCKETS), so that equal buckets in a row do not wait on each other."""
    counts[:] = 0
    for i in range(m):
        b = min(np.int32((src[i] - lo) * scale), _BUCKETS - 1)
        ids[i] = b
        counts[(i & 3) * _BUCKETS + b] += 1
    below = 0
    pick = 0
    while True:
        here = (counts[pick] + counts[_BUCKETS + pick] + counts[2 * _BUCKETS + pick]
                + counts[3 * _BUCKETS + pick])
        if below + here > kth:
            break
        below += here
        pick += 1
    kept = 0
    for i in range(m):
        out[kept] = src[i]
        kept += ids[i] == pick
    return kept, kth - below


@numba.njit(cache=True, inline="always")
def _scale(lo, hi):
    """Buckets per unit over [lo, hi]: 0 when lo == hi, +inf (no bucketing) when hi - lo
    overflows float32 or is so small that its inverse does."""
    width = hi - lo
    if not np.isfinite(width):
        return np.float32(np.inf)
    return np.float32(_BUCKETS) / width if width > 0 else np.float32(0.0)


@numba.njit(cache=True)
def _kth_smallest(values, kth, scratch):
    """(the kth smallest (0-based) of values, whether values hold no NaN); scratch at
    least as long as values (overwritten; may be values itself)."""
    n = values.shape[0]
    lo, hi, finite = _range(values, n)
    scale = _scale(lo, hi)
    if not (finite and np.isfinite(scale)) or n <= _SMALL:
        ordered = _has_no_nan(values)
        a = scratch[:n]
        a[:] = values
        return _quickselect(a, kth), ordered
    if lo == hi:
        return lo, True
    counts = np.empty(4 * _BUCKETS, dtype=np.int32)
    ids = np.empty(n, dtype=np.uint8)
    m, kth = _bucket_round(values, n, lo, scale, kth, counts, ids, scratch)
    while True:
        lo, hi, finite = _range(scratch, m)
        if lo == hi:
            return lo, True
        scale = _scale(lo, hi)
        if m <= _SMALL or not np.isfinite(scale):
            return _quickselect(scratch[:m], kth), True
        m, kth = _bucket_round(scratch, m, lo, scale, kth, counts, ids, scratch)


@numba.njit(cache=True)
def _select_smallest(values, n, scratch, out):
    """Positions of the n smallest values into out[:n] (unordered; ties by position).

    Exactly n distinct positions in [0, values.size) are written whatever values
    holds: callers map NaN to +inf first (so that values are totally ordered), and a
    NaN that slips through only fills the positions left over, never an index."""
    total = values.shape[0]
    if n >= total:
        for i in range(total):
            out[i] = i
        return
    threshold, ordered = _kth_smallest(values, n - 1, scratch)
    count = 0
    if ordered:   # fewer than n values below the threshold: no bound check, no branch
        for i in range(total):
            out[count] = i
            count += values[i] < threshold
    else:
        for i in range(total):
            if count < n and values[i] < threshold:
                out[count] = i
                count += 1
    for i in range(total):
        if count == n:
            break
        if values[i] == threshold:
            out[count] = i
            count += 1
    for i in range(total):  # only with NaN values (unordered): fill with the rest
        if count == n:
            break
        if not (values[i] < threshold or values[i] == threshold):
            out[count] = i
            count += 1


@numba.njit(cache=True)
def _top_probes(dist_row, nprobe, probe_d, probe_c, scratch):
    """The nprobe smallest entries of dist_row (unordered; ties by position) into probe_d
    (the distance, a NaN as +inf) and probe_c (always valid, distinct centroid ids);
    scratch: float32, as long as dist_row.

    Strided chunks (chunk c: positions c, c + nc, ...; one vectorised pass for all their
    minima): the nprobe-th smallest chunk minimum u bounds the nprobe-th smallest value,
    so that only the chunks whose minimum is <= u are read again."""
    n = dist_row.shape[0]
    nc = 1
    while nc < 8 * nprobe:
        nc *= 2
    if 4 * nc > n:
        return _probes_of(dist_row, nprobe, probe_d, probe_c, scratch)
    cmin = np.full(nc, np.inf, dtype=np.float32)
    for base in range(0, n, nc):
        for c in range(min(nc, n - base)):
            v = dist_row[base + c]
            cmin[c] = v if v < cmin[c] else cmin[c]   # a NaN never
    u = _kth_smallest(cmin, nprobe - 1, scratch)[0]
    if not np.isfinite(u):
        return _probes_of(dist_row, nprobe, probe_d, probe_c, scratch)
    cand = np.empty(n, dtype=np.int64)
    m = 0
    for c in range(nc):
        if cmin[c] <= u:
            for i in range(c, n, nc):
                cand[m] = i
                m += dist_row[i] <= u
    for j in range(m):
        scratch[j] = dist_row[cand[j]]
    thr = _kth_smallest(scratch[:m], nprobe - 1, scratch)[0]
    count = 0
    ties = 0
    for j in range(m):
        v = dist_row[cand[j]]
        probe_c[count] = cand[j]
        count += v < thr
        ties += v == thr
    if ties > nprobe - count:   # more ties than places left: the first positions
        for i in range(n):
            if dist_row[i] == thr and count < nprobe:
                probe_c[count] = i
                count += 1
    else:
        for j in range(m):
            if dist_row[cand[j]] == thr:
                probe_c[count] = cand[j]
                count += 1
    for i in range(nprobe):
        probe_d[i] = dist_row[probe_c[i]]


@numba.njit(cache=True)
def _probes_of(dist_row, nprobe, probe_d, probe_c, scratch):
    """_top_probes by a selection over the whole row (any values)."""
    _select_smallest(dist_row, nprobe, scratch, probe_c)
    for i in range(nprobe):
        v = dist_row[probe_c[i]]
        probe_d[i] = v if v == v else np.float32(np.inf)


@numba.njit(cache=True, inline="always")
def _sort_probes(probe_d, probe_c, nprobe):
    """The probes nearest first (ties by centroid id), so that the scans meet the best
    lists first and their top-k thresholds tighten early (insertion sort: nprobe is
    small)."""
    for i in range(1, nprobe):
        d = probe_d[i]
        c = probe_c[i]
        j = i - 1
        while j >= 0 and (probe_d[j] > d or (probe_d[j] == d and probe_c[j] > c)):
            probe_d[j + 1] = probe_d[j]
            probe_c[j + 1] = probe_c[j]
            j -= 1
        probe_d[j + 1] = d
        probe_c[j + 1] = c

@numba.njit(cache=True, inline="always")
def _line_c_alpha(row, b, cen, e, edges, edge_len2, rule):
    """(c, alpha) of line e of centroid cen, b = row[cen] (see `_line_params`)."""
    if rule[0] == 0:
        c = max(edge_len2[cen, e], np.float32(1e-12))
        return c, row[edges[cen, e]] - b - c
    return np.float32(0.0), row[edges[cen, e]] - b


@numba.njit(cache=True, inline="always")
def _line_params(row, b, cen, e, edges, edge_len2, rule):
    """(c, alpha, line distance) of line e of centroid cen, b = row[cen].

    rule[0] == 0 (l2): row holds squared distances to the centroids; c = |c_A - c_s|^2,
    alpha = a - b - c and the distance is that of q to the line. rule[0] == 1 (inner
    product): row holds -<q, c>; c = 0, alpha = row[s] - b (the score is linear in
    lambda) and the line's score is its best over lambda in [rule[1], rule[2]]."""
    c, alpha = _line_c_alpha(row, b, cen, e, edges, edge_len2, rule)
    if rule[0] == 0:
        return c, alpha, b - alpha * alpha / (np.float32(4.0) * c)
    return c, alpha, b + min(rule[1] * alpha, rule[2] * alpha)


@numba.njit(cache=True, inline="always")
def _select_lines(row, edges, edge_len2, rule, nprobe, nlines, probe_d, probe_c, line_d,
                  scratch, pick, line_list, line_probe, line_b, line_c, line_alpha):
    """nprobe nearest centroids, then the nlines nearest of their lines (SPEC 2 steps
    1-2), with each selected line's list id, probe index, b, c and alpha (`_line_params`;
    `rule` from `VLQQuantizer.line_rule`; scratch as long as row and line_d). A NaN line distance (inf - inf from an
    overflowing query or model) sorts last, so that the selection stays a total order."""
    nedge = edges.shape[1]
    _top_probes(row, nprobe, probe_d, probe_c, scratch)
    _sort_probes(probe_d, probe_c, nprobe)
    l2 = rule[0] == 0
    for pi in range(nprobe):
        cen = probe_c[pi]
        b = probe_d[pi]
        if l2:   # the far ends' distances first, then one vectorised pass
            near = scratch[pi * nedge:(pi + 1) * nedge]
            for e in range(nedge):
                near[e] = row[edges[cen, e]]
            _l2_line_dists(b, near, edge_len2[cen], line_d[pi * nedge:(pi + 1) * nedge])
            continue
        for e in range(nedge):
            dl = _line_params(row, b, cen, e, edges, edge_len2, rule)[2]
            line_d[pi * nedge + e] = dl if dl == dl else np.float32(np.inf)
    _select_smallest(line_d, nlines, scratch, pick)
    inv = 1.0 / nedge
    for li in range(nlines):
        pi, e = _divmod(pick[li], nedge, inv)
        cen = probe_c[pi]
        c, alpha = _line_c_alpha(row, probe_d[pi], cen, e, edges, edge_len2, rule)
        line_list[li] = cen * nedge + e
        line_probe[li] = pi
        line_b[li] = probe_d[pi]
        line_c[li] = c
        line_alpha[li] = alpha


@numba.njit(cache=True, inline="always")
def _divmod(x, d, inv):
    """(x // d, x % d) for 0 <= x < 2**40 and 0 < d, inv = 1.0 / d: by a float64
    multiplication and one correction (a 64-bit integer division costs 40-90 cycles)."""
    q = np.int64(x * inv)
    r = x - q * d
    if r < 0:
        q -= 1
        r += d
    elif r >= d:
        q += 1
        r -= d
    return q, r


@numba.njit(cache=True, error_model="numpy")
def _l2_line_dists(b, near, len2, out):
    """out[e] = the l2 line distance of `_line_params` (NaN as +inf) for a centroid at b,
    near[e] = row[edges[cen, e]], len2 = edge_len2[cen] (no zero-division check: c > 0)."""
    for e in range(out.shape[0]):
        c = max(len2[e], np.float32(1e-12))
        alpha = near[e] - b - c
        dl = b - alpha * alpha / (np.float32(4.0) * c)
        out[e] = dl if dl == dl else np.float32(np.inf)

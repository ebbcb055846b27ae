"""indexer.selection: the bucket kth-smallest, the n smallest and the probe selection equal
to numpy references (exact values, positions, and the order of the positions), on sizes and
values that take every path: few values, ties across the threshold, a constant row, +-inf,
-0.0 beside 0.0, a range overflowing float32 and a range of subnormals."""
from __future__ import annotations

import numpy as np
import pytest

from indexer.selection import _divmod, _kth_smallest, _select_smallest, _top_probes


def _rows(seed):
    rng = np.random.default_rng(seed)
    for size in (1, 5, 24, 25, 64, 256, 1000, 1024, 3000):
        yield rng.normal(size=size).astype(np.float32)
        yield np.round(rng.normal(size=size) * 3).astype(np.float32)      # many ties
        yield np.full(size, 2.5, np.float32)
        v = rng.normal(size=size).astype(np.float32)
        v[rng.random(size) < 0.2] = np.inf
        v[rng.random(size) < 0.1] = -np.inf
        yield v
        v = np.round(rng.normal(size=size)).astype(np.float32) * 0
        v[rng.random(size) < 0.5] *= -1                                   # -0.0 and 0.0
        yield v
        yield (rng.choice([-3e38, 3e38, 1.0], size)).astype(np.float32)  # hi - lo overflows
        yield (rng.integers(0, 50, size) * 1e-45).astype(np.float32)     # subnormal range
        yield (1e4 + rng.exponential(size=size) ** 3).astype(np.float32)  # skewed


def _expected(values, n):
    """The n smallest positions in the order `_select_smallest` documents: those below the
    nth value by position, then those equal to it by position (all: by position)."""
    thr = np.sort(values)[n - 1]
    if n == values.size:
        return np.arange(n), thr
    below = np.flatnonzero(values < thr)
    equal = np.flatnonzero(values == thr)
    return np.concatenate([below, equal[: n - below.size]]), thr


@pytest.mark.parametrize("seed", [0, 1])
def test_select_smallest_equals_the_reference(seed):
    for values in _rows(seed):
        for n in sorted({1, 2, values.size // 4 + 1, values.size // 2 + 1, values.size - 1,
                         values.size}):
            if not 1 <= n <= values.size:
                continue
            out = np.full(n, -7, np.int64)
            _select_smallest(values, n, np.empty_like(values), out)
            want, thr = _expected(values, n)
            np.testing.assert_array_equal(out, want, err_msg=f"size {values.size} n {n}")
            if n < values.size:
                kth, ordered = _kth_smallest(values, n - 1, np.empty_like(values))
                assert kth == thr and ordered


def test_kth_smallest_reports_nan():
    values = np.array([3, np.nan, 1, 2] * 20, np.float32)
    assert not _kth_smallest(values, 5, np.empty_like(values))[1]


@pytest.mark.parametrize("seed", [0, 1])
def test_top_probes_are_the_nearest_centroids(seed):
    rng = np.random.default_rng(seed)
    for values in _rows(seed + 10):
        for nprobe in (1, 3, 8, 32, 64):
            if nprobe > values.size:
                continue
            d = np.empty(nprobe, np.float32)
            c = np.full(nprobe, -7, np.int64)
            _top_probes(values, nprobe, d, c, np.empty_like(values))
            want, _ = _expected(values, nprobe)
            np.testing.assert_array_equal(np.sort(c), np.sort(want),
                                          err_msg=f"size {values.size} nprobe {nprobe}")
            np.testing.assert_array_equal(d, values[c])
    # ties beyond the places left: the first positions win, wherever their chunk
    values = np.full(4096, 5.0, np.float32)
    values[rng.choice(4096, 3, replace=False)] = 1.0
    d, c = np.empty(8, np.float32), np.empty(8, np.int64)
    _top_probes(values, 8, d, c, np.empty_like(values))
    np.testing.assert_array_equal(np.sort(c), np.sort(_expected(values, 8)[0]))


def test_divmod_equals_python():
    rng = np.random.default_rng(0)
    for d in (1, 3, 7, 32, 33, 1000, 4097):
        for x in np.concatenate([np.arange(0, 3 * d), rng.integers(0, 2**40, 1000)]):
            assert _divmod(np.int64(x), d, 1.0 / d) == divmod(int(x), d)


def test_centroid_distances_equal_the_numpy_steps():
    """indexer.coarse.centroid_distances' one-pass finish rounds as the four numpy steps
    did, keeps a NaN (what check_finite_rows looks for) and clamps at 0."""
    from indexer.coarse import centroid_distances
    rng = np.random.default_rng(0)
    for trial in range(30):
        x = (rng.normal(size=(50, 16)) * 10.0 ** rng.integers(-3, 20)).astype(np.float32)
        c = rng.normal(size=(40, 16)).astype(np.float32)
        c[0] = x[7]                                   # a zero distance, rounded below 0
        if trial % 3 == 0:
            x[3] = np.inf
            x[5, 2] = np.nan
        cn = np.einsum("kd,kd->k", c, c)
        with np.errstate(invalid="ignore", over="ignore"):
            got = centroid_distances(x, c, cn)
            want = x @ c.T
            want *= -2.0
            want += np.einsum("nd,nd->n", x, x)[:, None]
            want += cn[None, :]
            np.maximum(want, 0.0, out=want)
        np.testing.assert_array_equal(got, want)      # NaN where NaN
        assert trial % 3 or np.isnan(got[5]).all()

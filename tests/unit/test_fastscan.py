"""indexer.fastscan: the 4-bit packing, and scan4's native SIMD kernel equal (bitwise) to the
numba reference and to a numpy brute force over decoded codes, at every SIMD level."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from indexer import fastscan, native
from indexer.fastscan import pack_codes4, scan4, unpack_codes4

REPO = Path(__file__).resolve().parents[2]
needs_native = pytest.mark.skipif(not native.native_available(),
                                  reason="indexer._fastscan is not built (pip install -e .)")


# ---------------------------------------------------------------- packing
@pytest.mark.parametrize("n", [0, 1, 31, 32, 33, 100])
@pytest.mark.parametrize("m", [2, 6, 32, 64])
def test_pack_unpack_round_trip(n, m):
    codes = np.random.default_rng(n * 100 + m).integers(0, 16, (n, m), dtype=np.uint8)
    packed = pack_codes4(codes)
    assert packed.shape == (-(-n // 32), m // 2, 32) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_codes4(packed, n), codes)


def test_pack_layout_and_zero_padding():
    codes = np.random.default_rng(1).integers(0, 16, (40, 4), dtype=np.uint8)
    packed = pack_codes4(codes)
    for j in (0, 5, 31, 32, 39):
        for p in range(2):
            assert packed[j // 32, p, j % 32] == codes[j, 2 * p] | (codes[j, 2 * p + 1] << 4)
    assert not packed[1, :, 8:].any()  # rows 40..63 of the last block are zeros


@pytest.mark.parametrize("codes, word", [
    (np.full((3, 4), 16, dtype=np.uint8), "4-bit"),
    (np.zeros((3, 5), dtype=np.uint8), "M=5"),
    (np.zeros((3, 66), dtype=np.uint8), "M=66"),
    (np.zeros((3, 4), dtype=np.int32), "codes"),
    (np.zeros(4, dtype=np.uint8), "codes"),
])
def test_pack_rejects_bad_codes(codes, word):
    with pytest.raises(ValueError, match=word):
        pack_codes4(codes)


def test_unpack_rejects_bad_input():
    packed = pack_codes4(np.zeros((40, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="n=70"):
        unpack_codes4(packed, 70)
    with pytest.raises(ValueError, match="packed"):
        unpack_codes4(packed.astype(np.int16), 40)
    with pytest.raises(ValueError, match="packed"):
        unpack_codes4(np.zeros((2, 2, 16), dtype=np.uint8), 40)


# ---------------------------------------------------------------- problems
def make_problem(seed, nq, nprobe, m, nlines, r, ties=False):
    """Random scan4 arguments whose lists are empty, shorter than a block, start mid-block and
    span 3+ blocks; with ties, every LUT entry and lambda is equal (many approx tie)."""
    rng = np.random.default_rng(seed)
    lengths = rng.choice([0, 1, 5, 17, 31, 32, 45, 100, 150], size=int(rng.integers(8, 30)))
    lengths[:3] = [0, 7, 110]  # an empty list, then a 3+-block list starting mid-block
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n, nlists = int(offsets[-1]), len(lengths)
    codes = rng.integers(0, 16, (n, m), dtype=np.uint8)
    if ties:
        lut8 = np.full((nq, nprobe, m, 16), 3, dtype=np.uint8)
        lam_values = np.full(4, 0.5, dtype=np.float32)
        line_c = np.ones((nq, nlines), dtype=np.float32)
        line_alpha = np.zeros((nq, nlines), dtype=np.float32)
        line_const = np.zeros((nq, nlines), dtype=np.float32)
    else:
        lut8 = rng.integers(0, 256, (nq, nprobe, m, 16), dtype=np.uint8)
        lam_values = rng.uniform(-0.2, 1.2, int(rng.integers(1, 40))).astype(np.float32)
        line_c = rng.uniform(0.1, 3, (nq, nlines)).astype(np.float32)
        line_alpha = rng.standard_normal((nq, nlines)).astype(np.float32)
        line_const = rng.uniform(0, 5, (nq, nlines)).astype(np.float32)
    line_list = rng.integers(0, nlists, (nq, nlines)).astype(np.int64)
    line_list[:, 0] = 2                       # the long mid-block list in every query
    if nlines > 1:
        line_list[:, 1] = 0                   # and the empty one
    if nlines > 2:
        line_list[:, -1] = nlists - 1         # the last list: it ends inside the padded block
    return dict(lut8=lut8, scale=rng.uniform(0.01, 0.1, nq).astype(np.float32),
                line_list=line_list,
                line_probe=rng.integers(0, nprobe, (nq, nlines)).astype(np.int32),
                line_const=line_const, line_c=line_c, line_alpha=line_alpha, offsets=offsets,
                packed=pack_codes4(codes),
                lam_idx=rng.integers(0, lam_values.size, n).astype(np.uint8),
                lam_values=lam_values, r=r)


def brute_force(p):
    """scan4 in plain numpy: decode every candidate, float32 ops in the contract's order."""
    n = p["lam_idx"].size
    codes = unpack_codes4(p["packed"], n).astype(np.int64)
    m = codes.shape[1]
    nq, r = p["lut8"].shape[0], p["r"]
    out = (np.full((nq, r), np.inf, np.float32), np.full((nq, r), -1, np.int64),
           np.full((nq, r), -1, np.int32))
    for q in range(nq):
        d_all, p_all, l_all = [], [], []
        for li, lst in enumerate(p["line_list"][q]):
            rows = np.arange(p["offsets"][lst], p["offsets"][lst + 1])
            table = p["lut8"][q, p["line_probe"][q, li]].astype(np.int64)
            s = table[np.arange(m), codes[rows]].sum(axis=1)
            lam = p["lam_values"][p["lam_idx"][rows]]
            t = lam * p["line_c"][q, li]
            t = t + p["line_alpha"][q, li]
            t = lam * t
            u = p["scale"][q] * s.astype(np.float32)
            d = (p["line_const"][q, li] + t) + u
            d_all.append(np.where(np.isnan(d), np.float32(np.inf), d).astype(np.float32))
            p_all.append(rows)
            l_all.append(np.full(rows.size, li))
        d_all, p_all, l_all = (np.concatenate(x) for x in (d_all, p_all, l_all))
        take = np.lexsort((l_all, p_all, d_all))[:r]
        out[0][q, :take.size], out[1][q, :take.size], out[2][q, :take.size] = (
            d_all[take], p_all[take], l_all[take])
    return out


SHAPES = [  # seed, nq, nprobe, M, nlines, r, ties
    (0, 1, 1, 2, 1, 5, False),
    (1, 5, 3, 6, 4, 1000, False),      # r larger than the candidate count
    (2, 37, 8, 32, 12, 20, False),
    (3, 13, 4, 64, 9, 50, False),
    (4, 9, 2, 16, 7, 100, True),       # every approx of a line ties
    (5, 20, 5, 10, 16, 10, True),
    (6, 3, 8, 4, 30, 7, False),
]


def assert_same(a, b):
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x.view(np.uint8) if x.dtype == np.float32 else x,
                                      y.view(np.uint8) if y.dtype == np.float32 else y)


@pytest.mark.parametrize("shape", SHAPES)
def test_numba_equals_brute_force(shape):
    p = make_problem(*shape)
    assert_same(scan4(**p, backend="numba"), brute_force(p))


@needs_native
@pytest.mark.parametrize("shape", SHAPES)
def test_native_equals_numba_and_brute_force_at_every_level(shape):
    p = make_problem(*shape)
    expected = scan4(**p, backend="numba")
    assert_same(expected, brute_force(p))
    levels = native.LEVELS[: native.LEVELS.index(native.cpu_level()) + 1]
    previous = native.simd_level()
    try:
        for level in levels:
            native.set_level(level)
            for threads in (1, 3):
                assert_same(scan4(**p, backend="native", threads=threads), expected)
    finally:
        native.set_level(previous)


@needs_native
def test_ties_keep_the_smaller_position_and_padding():
    p = make_problem(4, 2, 2, 8, 3, 500, ties=True)
    p["line_list"][:] = [[2, 2, 0]]     # one list twice: identical (approx, pos), line breaks it
    d, pos, line = scan4(**p, backend="native")
    rows = int(p["offsets"][3] - p["offsets"][2])
    assert (d[:, : 2 * rows] == d[:, :1]).all()  # per query (its scale differs)
    np.testing.assert_array_equal(pos[0, : 2 * rows], np.repeat(np.arange(p["offsets"][2], p["offsets"][3]), 2))
    np.testing.assert_array_equal(line[0, : 2 * rows], np.tile([0, 1], rows))
    assert np.isinf(d[:, 2 * rows:]).all() and (pos[:, 2 * rows:] == -1).all() and (line[:, 2 * rows:] == -1).all()
    assert_same((d, pos, line), scan4(**p, backend="numba"))


@needs_native
def test_nan_approx_counts_as_inf_in_both_backends():
    p = make_problem(7, 4, 2, 8, 5, 400)
    p["lam_values"][0] = np.nan
    native = scan4(**p, backend="native")
    assert_same(native, scan4(**p, backend="numba"))
    assert_same(native, brute_force(p))
    nan_rows = np.flatnonzero(p["lam_idx"] == 0)
    hit = np.isin(native[1], nan_rows)
    assert hit.any() and np.isinf(native[0][hit]).all()


@needs_native
@pytest.mark.parametrize("seed", [11, 12])
def test_wide_spread_approx_and_infinities_keep_the_exact_top_r(seed):
    # the buffer's threshold comes from a histogram over [min, max] of the kept approx:
    # approx of both signs over 60 orders of magnitude, +-inf and inf - inf (NaN -> inf)
    p = make_problem(seed, 8, 4, 16, 24, 9)
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 1.0], p["line_const"].shape)
    p["line_const"] = (sign * 10.0 ** rng.uniform(-30, 30, sign.shape)).astype(np.float32)
    p["line_const"][:, 3] = np.inf
    p["line_const"][:, 5] = -np.inf
    p["lam_values"][1] = np.inf  # with line 5: -inf + inf
    expected = scan4(**p, backend="numba")
    assert_same(expected, brute_force(p))
    previous = native.simd_level()
    try:
        for level in native.LEVELS[: native.LEVELS.index(native.cpu_level()) + 1]:
            native.set_level(level)
            assert_same(scan4(**p, backend="native"), expected)
    finally:
        native.set_level(previous)


def make_short_lists(seed, m, r, nq=6, nedge=8, ncent=12):
    """The VLQ shape: lists of 0-40 rows (mostly shorter than a block, many sharing blocks),
    list id = centroid * nedge + edge, and per query runs of adjacent list ids of one probe,
    in row order, reversed, with duplicates next to each other and with the probe changing
    inside a run of adjacent lists (these must not share block sums)."""
    rng = np.random.default_rng(seed)
    nlists = ncent * nedge
    lengths = rng.choice([0, 1, 3, 6, 12, 16, 20, 25, 33, 40], size=nlists)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(offsets[-1])
    nprobe = 4
    queries = []
    for _ in range(nq):
        lines, probes = [], []
        for pi, cen in enumerate(rng.choice(ncent, nprobe, replace=False)):
            e0 = int(rng.integers(0, nedge - 5))
            run = list(cen * nedge + np.arange(e0, e0 + int(rng.integers(2, 6))))
            kind = int(rng.integers(0, 4))
            if kind == 1:
                run = run[::-1]
            elif kind == 2:
                run.insert(1, run[1])                   # a duplicate list id next to itself
            lines += run
            probe = [pi] * len(run)
            if kind == 3:
                probe[len(run) // 2] = (pi + 1) % nprobe  # another probe inside the run
            probes += probe
        queries.append((lines, probes))
    nlines = max(len(x) for x, _ in queries)
    line_list = np.zeros((nq, nlines), np.int64)
    line_probe = np.zeros((nq, nlines), np.int32)
    for q, (lines, probes) in enumerate(queries):
        line_list[q, : len(lines)], line_probe[q, : len(lines)] = lines, probes
        line_list[q, len(lines):] = line_list[q, 0]       # padding: repeats of a scanned list
    lam_values = rng.uniform(-0.2, 1.2, 16).astype(np.float32)
    return dict(lut8=rng.integers(0, 256, (nq, nprobe, m, 16), dtype=np.uint8),
                scale=rng.uniform(0.01, 0.1, nq).astype(np.float32), line_list=line_list,
                line_probe=line_probe,
                line_const=rng.uniform(0, 5, (nq, nlines)).astype(np.float32),
                line_c=rng.uniform(0.1, 3, (nq, nlines)).astype(np.float32),
                line_alpha=rng.standard_normal((nq, nlines)).astype(np.float32), offsets=offsets,
                packed=pack_codes4(rng.integers(0, 16, (n, m), dtype=np.uint8)),
                lam_idx=rng.integers(0, 16, n).astype(np.uint8), lam_values=lam_values, r=r)


@needs_native
@pytest.mark.parametrize("seed, m, r", [(20, 32, 100), (21, 16, 30), (22, 6, 500), (23, 64, 7)])
def test_native_on_runs_of_short_adjacent_lists(seed, m, r):
    p = make_short_lists(seed, m, r)
    expected = scan4(**p, backend="numba")
    assert_same(expected, brute_force(p))
    assert (expected[1] >= 0).all() or r == 500           # rows kept from many lines
    previous = native.simd_level()
    try:
        for level in native.LEVELS[: native.LEVELS.index(native.cpu_level()) + 1]:
            native.set_level(level)
            for threads in (1, 2):
                assert_same(scan4(**p, backend="native", threads=threads), expected)
    finally:
        native.set_level(previous)


def test_scan4_rejects_bad_arguments():
    p = make_problem(8, 3, 2, 8, 4, 10)
    bad = [
        ("line_c", p["line_c"].astype(np.float64)),
        ("line_probe", np.full_like(p["line_probe"], 2)),
        ("line_list", np.full_like(p["line_list"], p["offsets"].size - 1)),
        ("offsets", p["offsets"] + 1),
        ("lam_idx", np.full_like(p["lam_idx"], p["lam_values"].size)),
        ("packed", p["packed"][:-1]),
        ("scale", p["scale"][:2]),
        ("lut8", p["lut8"][..., :8]),
        ("r", 0),
    ]
    for name, value in bad:
        with pytest.raises(ValueError, match=name):
            scan4(**{**p, name: value}, backend="numba")
    with pytest.raises(ValueError, match="backend"):
        scan4(**p, backend="gpu")
    with pytest.raises(ValueError, match="threads"):
        scan4(**p, threads=0)


def test_empty_query_batch_and_no_lines():
    p = make_problem(9, 3, 2, 8, 4, 6)
    d, pos, line = scan4(**{**p, **{k: p[k][:, :0] for k in
                                   ("line_list", "line_probe", "line_const", "line_c", "line_alpha")}})
    assert np.isinf(d).all() and (pos == -1).all() and (line == -1).all()
    empty = {k: p[k][:0] for k in ("lut8", "scale", "line_list", "line_probe", "line_const",
                                   "line_c", "line_alpha")}
    assert scan4(**{**p, **empty})[0].shape == (0, 6)


_CHILD = """
import json, sys, numpy as np
from indexer import fastscan, native
data = np.load(sys.argv[1])
p = {k: data[k] for k in data.files}
p["r"] = int(p["r"])
out = fastscan.scan4(**p, backend="native")
np.savez(sys.argv[2], d=out[0], p=out[1], l=out[2])
print(json.dumps(native.simd_level()))
"""


def _child(tmp_path, simd, p):
    np.savez(tmp_path / "in.npz", **p)
    env = {**os.environ, "SNAPLINE_SIMD": simd, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


@needs_native
def test_snapline_simd_portable_in_a_subprocess(tmp_path):
    p = make_problem(2, 37, 8, 32, 12, 20)
    done = _child(tmp_path, "portable", p)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == "portable"
    out = np.load(tmp_path / "out.npz")
    assert_same((out["d"], out["p"], out["l"]), scan4(**p, backend="native"))


@needs_native
def test_snapline_simd_unknown_value_is_refused(tmp_path):
    done = _child(tmp_path, "sse9", make_problem(0, 1, 1, 2, 1, 5))
    assert done.returncode != 0 and "SNAPLINE_SIMD='sse9'" in done.stderr


def test_snapline_simd_above_the_cpu_falls_back_with_a_warning(monkeypatch):
    # this CPU has every level: stand in for one that stops at AVX2
    monkeypatch.setattr(native, "cpu_level", lambda: "avx2")
    monkeypatch.setenv("SNAPLINE_SIMD", "avx512")
    with pytest.warns(RuntimeWarning, match="supports only avx2"):
        assert native.initial_level() == "avx2"
    monkeypatch.setenv("SNAPLINE_SIMD", "Portable")
    assert native.initial_level() == "portable"
    monkeypatch.delenv("SNAPLINE_SIMD")
    assert native.initial_level() == "avx2"
    with pytest.raises(ValueError, match="level='avx512'"):
        native.set_level("avx512")


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ to compile the portable-only build")
def test_portable_only_build_of_the_extension(tmp_path):
    """The kernels compiled without any x86 code (as on another architecture) run the
    portable path and still equal the numba references."""
    include = sysconfig.get_paths()["include"]
    target = tmp_path / ("_fastscan" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(["g++", "-O3", "-ffp-contract=off", "-std=c++17", "-DSNAPLINE_NO_X86", "-fPIC", "-shared",
                    "-pthread", f"-I{include}", str(REPO / "indexer" / "_fastscan.cpp"),
                    str(REPO / "indexer" / "_refine.cpp"), str(REPO / "indexer" / "_prepare.cpp"),
                    "-o", str(target)],
                   check=True, capture_output=True, timeout=300)
    spec = importlib.util.spec_from_file_location("_fastscan", target)
    native = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(native)
    assert native.cpu_level() == 0
    p = make_problem(3, 13, 4, 64, 9, 50)
    args = fastscan._check_scan_args(**p)
    nq, nprobe, m = args[0].shape[:3]
    out = (np.empty((nq, 50), np.float32), np.empty((nq, 50), np.int64), np.empty((nq, 50), np.int32))
    native.scan4(*args, np.empty(0, np.uint32), *out, nq, nprobe, m, args[2].shape[1], args[7].size - 1,
                 args[10].size, 50, 2, 0)
    assert_same(out, scan4(**p, backend="numba"))
    # and its refinement kernel: integer rows and queries, so the sums are exact
    from indexer.refine_kernel import _F16, refine_rows
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, (500, 21)).astype(np.uint8)
    q = rng.integers(0, 256, (4, 21)).astype(np.float32)
    pos = rng.integers(-1, 500, (4, 30))
    got = (np.empty((4, 10), np.float32), np.empty((4, 10), np.int64))
    native.refine(q, pos, rows, _F16, *got, 4, 21, 30, 500, 21, 10, 0, 0, float("inf"), 2, 0)
    want = refine_rows(q, pos, rows, "uint8", "l2", 10, np.float32(np.inf), backend="numba")
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    # and its probes, lines and quantized tables
    from indexer.fastscan_search import _prepare
    ncent, nedge, m, nq, nprobe, nlines = 40, 6, 4, 5, 7, 20
    dist = rng.random((nq, ncent), dtype=np.float32) * 100
    edges = rng.integers(0, ncent, (ncent, nedge)).astype(np.int32)
    len2 = rng.random((ncent, nedge), dtype=np.float32) * 10
    lutq = rng.standard_normal((nq, m, 16)).astype(np.float32)
    tables = rng.standard_normal((ncent, m, 16)).astype(np.float32)
    t_min, t_span = tables.min(axis=2), np.ptp(tables, axis=2).astype(np.float32)
    rule = np.array([0, 0, 1], dtype=np.float32)
    outs = [(np.empty((nq, nlines), np.int64), np.empty((nq, nlines), np.int32),
             *(np.empty((nq, nlines), np.float32) for _ in range(4)),
             np.empty((nq, nprobe, m, 16), np.uint8), np.empty(nq, np.float32)) for _ in range(2)]
    native.prepare(dist, edges, len2, rule, lutq, tables, t_min, t_span, *outs[0], nq, ncent, nedge,
                   nprobe, nlines, m, 2, 0)
    _prepare(dist, edges, len2, rule, nprobe, nlines, lutq, tables, t_min, t_span, *outs[1])
    for g, e in zip(*outs):
        np.testing.assert_array_equal(g.view(np.uint8), e.view(np.uint8))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_allowed_rows_skip_the_others_before_they_take_a_place(seed):
    """With a row set, the scan returns the r best ALLOWED rows: the unrestricted scan's
    whole order with the other rows struck out, cut at r (native and numba alike)."""
    from indexer.rowsets import bitset_of
    p = make_problem(seed, 7, 3, 16, 9, 12)
    n = p["lam_idx"].size
    keep = np.random.default_rng(seed).random(n) < 0.3
    full = scan4(**{**p, "r": n}, backend="numba")
    backends = ["numba"] + (["native"] if native.native_available() else [])
    for backend in backends:
        d, pos, line = scan4(**p, allowed=bitset_of(keep), backend=backend)
        for q in range(d.shape[0]):
            ok = (full[1][q] >= 0) & keep[np.maximum(full[1][q], 0)]
            want = full[1][q][ok][:12]
            got = pos[q][pos[q] >= 0]
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(d[q][:got.size], full[0][q][ok][:12])
    with pytest.raises(ValueError, match="ceil"):
        scan4(**p, allowed=np.zeros(3, np.uint32))

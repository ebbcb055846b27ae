"""VLQIndex with 4-bit codes: the SIMD scan ranks, exact ADC re-ranks (SPEC 2)."""
from pathlib import Path

import numpy as np
import pytest

from indexer import VLQIndex, fastscan, native
from indexer.fastscan_search import search_fastscan
from shards import open_vectors

SIFT_SMALL = Path(__file__).resolve().parents[2] / "data" / "sift-small"


def decoded(index):
    lists = index.lists
    lists.compact()
    return index.quantizer.decode(lists.list_ids(), lists.lambda_idx, lists.codes), lists.ids


def exact_distances(q, index, I):
    rec, ids = decoded(index)
    row_of = {int(i): r for r, i in enumerate(ids)}
    rows = np.array([[row_of[int(i)] for i in row] for row in I])
    return ((q[:, None, :].astype(np.float64) - rec[rows].astype(np.float64)) ** 2).sum(-1)


@pytest.fixture(scope="module")
def index4(small_data):
    index = VLQIndex(small_data["d"], nlist=32, nedge=8, code_bytes=8, nlambda=64, pq_bits=4)
    index.train(small_data["learn"])
    index.add(small_data["base"])
    return index


@pytest.fixture(scope="module")
def sift_index4():
    learn = open_vectors(str(SIFT_SMALL / "learn.u8bin")).read()
    base = open_vectors(str(SIFT_SMALL / "base.u8bin")).read()
    index = VLQIndex(128, nlist=64, nedge=8, code_bytes=16, pq_bits=4)
    index.train(learn)
    index.add(base)
    index.lists.compact()   # search() does it; the tests below call search_fastscan directly
    assert index.lists.nrows == base.shape[0]
    query = open_vectors(str(SIFT_SMALL / "query.u8bin")).read(0, 50).astype(np.float32)
    return index, query


def test_codes_are_two_4bit_subcodes_per_byte(index4):
    assert index4.quantizer.pq_codebook.shape == (16, 16, 2)
    assert index4.shape.pq_bits == 4 and index4.shape.pq_m == 16
    assert index4.lists.packed.shape[1:] == (8, 32)


@pytest.mark.parametrize("data", ["blobs", "sift"])
def test_returned_distances_are_exact_adc(data, index4, sift_index4, small_data):
    index, q = (index4, small_data["query"]) if data == "blobs" else sift_index4
    D, I = index.search(q, k=20, nprobe=8, nlines=32)
    assert (I >= 0).all()
    exact = exact_distances(q, index, I)
    assert (np.abs(D - exact) / np.maximum(exact, 1e-9)).max() < 1e-4


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_full_rerank_of_everything_equals_brute_force(small_data, backend):
    index = VLQIndex(small_data["d"], nlist=16, nedge=4, code_bytes=8, nlambda=32, pq_bits=4,
                     backend=backend)
    index.train(small_data["learn"])
    index.add(small_data["base"][:5000])
    q = small_data["query"][:30]
    D, I = index.search(q, k=10, nprobe=16, nlines=64, rerank=5000)
    rec, ids = decoded(index)
    dist = ((q[:, None, :].astype(np.float64) - rec[None].astype(np.float64)) ** 2).sum(-1)
    rows = np.argsort(dist, axis=1, kind="stable")[:, :10]
    ref = np.take_along_axis(dist, rows, axis=1)
    np.testing.assert_allclose(D, ref, rtol=1e-4)
    assert ((I == ids[rows]) | np.isclose(D, ref, rtol=1e-6)).all()


def test_fast_scan_with_full_rerank_equals_exact_scan_of_the_same_lines(index4, small_data):
    """torch scans every code of the selected lines with exact ADC; the fast scan with a
    re-rank of every candidate must find the same neighbours."""
    q = small_data["query"]
    D, I = index4.search(q, k=10, nprobe=6, nlines=20, rerank=index4.ntotal)
    exact = VLQIndex.from_arrays(index4.to_arrays(), backend="torch")
    D_ref, I_ref = exact.search(q, k=10, nprobe=6, nlines=20)
    np.testing.assert_allclose(D, D_ref, rtol=1e-5)
    assert ((I == I_ref) | np.isclose(D, D_ref, rtol=1e-6)).all()


def test_a_longer_rerank_never_returns_a_worse_neighbour(index4, small_data):
    q = small_data["query"]
    previous = None
    for rerank in (10, 40, 160, index4.ntotal):
        D, _ = index4.search(q, k=10, nprobe=8, nlines=32, rerank=rerank)
        if previous is not None:
            assert (D <= previous * (1 + 1e-6)).all()
        previous = D
    assert rerank == index4.ntotal


@pytest.mark.skipif(not native.native_available(), reason="indexer._fastscan is not built")
def test_native_and_numba_scans_return_identical_neighbours(sift_index4):
    index, q = sift_index4
    enc = index.encoder.encode(q)
    dist_qc = index.quantizer.centroid_distances(enc)
    native, ref = (search_fastscan(index.quantizer, index.lists, enc, dist_qc, 10, 8, 64, 40,
                                   scan_backend=b) for b in ("native", "numba"))
    np.testing.assert_array_equal(native[1], ref[1])
    np.testing.assert_array_equal(native[0], ref[0])


def _prepare_outputs(fn, dist_qc, quantizer, rule, nprobe, nlines, lutq, **kw):
    nq = dist_qc.shape[0]
    tables, t_min, t_span = quantizer.centroid_tables_with_bounds()
    out = (np.empty((nq, nlines), np.int64), np.empty((nq, nlines), np.int32),
           *(np.empty((nq, nlines), np.float32) for _ in range(4)),
           np.empty((nq, nprobe) + lutq.shape[1:], np.uint8), np.empty(nq, np.float32))
    fn(dist_qc, quantizer.edges, quantizer.edge_len2, rule, nprobe, nlines, lutq, tables, t_min,
       t_span, *out, **kw)
    return out


@pytest.mark.skipif(not native.native_available(), reason="native kernel not built")
def test_native_prepare_equals_the_numba_prepare_at_every_level(sift_index4):
    """indexer._fastscan.prepare (probes, line selection, line terms, quantized tables) gives
    the numba `_prepare`'s bits: l2 and inner-product line rules, all lines or a few, ties
    between centroid and line distances (rounded distances), infinite distances, a single
    probe; an edge out of range is a ValueError, never a read."""
    import indexer.fastscan_search as fss
    index, q = sift_index4
    quantizer = index.quantizer
    enc = index.encoder.encode(q)
    lutq = quantizer.query_tables(enc)
    exact = quantizer.centroid_distances(enc)
    tied = np.round(exact / 5000.0).astype(np.float32) * np.float32(5000.0)
    with_inf = exact.copy()
    with_inf[::3, ::7] = np.inf
    assert len(np.unique(tied[0])) < tied.shape[1] // 2       # many ties
    ip_rule = np.array([1.0, -0.25, 1.25], dtype=np.float32)
    nedge = quantizer.edges.shape[1]
    levels = native.LEVELS[: native.LEVELS.index(native.cpu_level()) + 1]
    previous = native.simd_level()
    try:
        for dist_qc, rule in ((exact, quantizer.line_rule), (tied, quantizer.line_rule),
                              (with_inf, quantizer.line_rule), (exact, ip_rule), (tied, ip_rule)):
            for nprobe, nlines in ((1, 1), (1, nedge), (8, 20), (8, 8 * nedge), (32, 100), (64, 64)):
                expected = _prepare_outputs(fss._prepare, dist_qc, quantizer, rule, nprobe,
                                            nlines, lutq)
                for level in levels:
                    native.set_level(level)
                    got = _prepare_outputs(fss.prepare_native, dist_qc, quantizer, rule, nprobe,
                                           nlines, lutq, threads=2)
                    for g, e in zip(got, expected):
                        np.testing.assert_array_equal(g.view(np.uint8), e.view(np.uint8))
    finally:
        native.set_level(previous)
    bad = quantizer.edges.copy()
    bad[3, 1] = quantizer.nlist
    tables, t_min, t_span = quantizer.centroid_tables_with_bounds()
    out = _prepare_outputs(lambda *a: None, exact, quantizer, quantizer.line_rule, 8, 20, lutq)
    with pytest.raises(ValueError, match="out of range"):
        fss.prepare_native(exact, bad, quantizer.edge_len2, quantizer.line_rule, 8, 20, lutq,
                           tables, t_min, t_span, *out)


@pytest.mark.skipif(not native.native_available(), reason="native kernel not built")
def test_native_rerank_equals_the_numba_rerank_at_every_level(sift_index4, monkeypatch):
    """indexer._fastscan.rerank4 (AVX-512 gathers or portable C++) gives the numba re-rank's
    bits: full and short candidate lists (padding), k above the candidate count, a NaN
    distance, and a candidate out of range is a ValueError, never a read."""
    import indexer.fastscan_search as fss
    index, q = sift_index4
    enc = index.encoder.encode(q)
    dist_qc = index.quantizer.centroid_distances(enc)
    captured, native_rerank = {}, fss.rerank4_native
    monkeypatch.setattr(fss, "rerank4_native", lambda *a: captured.setdefault("args", a)
                        or fss._rerank(*a))
    search_fastscan(index.quantizer, index.lists, enc, dist_qc, 10, 8, 64, 40, scan_backend="native")
    args = list(captured["args"][:-2])
    args[0] = args[0].copy()
    args[0][3, 7:] = -1                         # a query with 7 candidates: padded output
    lam_values = args[11].copy()
    lam_values[args[10][args[0][5, 2]]] = np.nan  # NaN distances (sorted last)
    args[11] = lam_values
    for k in (10, 40, 55):
        expected = (np.empty((q.shape[0], k), np.float32), np.empty((q.shape[0], k), np.int64))
        fss._rerank(*args, *expected)
        levels = native.LEVELS[: native.LEVELS.index(native.cpu_level()) + 1]
        previous = native.simd_level()
        try:
            for level in levels:
                native.set_level(level)
                got = (np.empty_like(expected[0]), np.empty_like(expected[1]))
                native_rerank(*args, *got, threads=2)
                np.testing.assert_array_equal(got[0].view(np.uint32), expected[0].view(np.uint32))
                np.testing.assert_array_equal(got[1], expected[1])
        finally:
            native.set_level(previous)
    assert np.isnan(expected[0][5]).any() and (expected[1][3, 7:] == -1).all()
    bad = list(args)
    bad[0] = args[0].copy()
    bad[0][1, 0] = index.lists.nrows            # a row past the end
    with pytest.raises(ValueError, match="out of range"):
        native_rerank(*bad, np.empty((q.shape[0], 10), np.float32), np.empty((q.shape[0], 10), np.int64))


def test_save_load_keeps_4bit_codes(index4, small_data, tmp_path):
    q = small_data["query"]
    D0, I0 = index4.search(q, k=10, nprobe=8, nlines=32)
    index4.save(str(tmp_path / "idx"))
    loaded = VLQIndex.load(str(tmp_path / "idx"))
    assert loaded.pq_bits == 4 and loaded.ntotal == index4.ntotal
    D1, I1 = loaded.search(q, k=10, nprobe=8, nlines=32)
    np.testing.assert_array_equal(I0, I1)
    np.testing.assert_array_equal(D0, D1)


def test_bytes_per_vector_is_measured_from_the_arrays(index4):
    lists = index4.lists
    assert lists.id_offsets.dtype == np.uint32
    n = index4.ntotal
    want = (lists.packed.nbytes + lists.lambda_idx.nbytes + 4 * n + lists.offsets.nbytes) / n
    assert index4.bytes_per_vector == pytest.approx(want)
    # code bytes + lambda + 32-bit id, plus the block padding and offsets
    assert 8 + 1 + 4 < index4.bytes_per_vector < 8 + 1 + 4 + 1


def test_ids_spanning_2_to_the_32_are_kept_whole(small_data):
    index = VLQIndex(small_data["d"], nlist=16, nedge=4, code_bytes=8, nlambda=32, pq_bits=4)
    index.train(small_data["learn"])
    base = small_data["base"][:200]
    ids = np.arange(200, dtype=np.int64) * (1 << 30)
    index.add(base, ids=ids)
    _, I = index.search(base[:20], k=1, nprobe=16, nlines=64, rerank=200)
    assert index.lists.id_offsets.dtype == np.int64
    assert (I[:, 0] == ids[:20]).mean() >= 0.9
    assert set(I.ravel()) <= set(ids)


def test_pq_bits_is_checked():
    with pytest.raises(ValueError, match="pq_bits must be 4 or 8"):
        VLQIndex(32, nlist=8, nedge=4, code_bytes=8, pq_bits=6)
    with pytest.raises(ValueError, match="code_bytes=5 must divide dim=32"):
        VLQIndex(32, nlist=8, nedge=4, code_bytes=5, pq_bits=4)


def test_8bit_codes_keep_an_int16_term_within_one_step_of_the_exact_one(trained_index):
    lists = trained_index.lists
    lists.compact()
    assert lists.terms.dtype == np.int16 and lists.id_offsets.dtype == np.uint32
    exact = trained_index.quantizer.code_terms(lists.list_ids(), lists.lambda_idx, lists.codes)
    assert np.abs(lists.float_terms() - exact).max() <= lists.term_scale * 0.51 + 1e-3
    n = trained_index.ntotal
    want = (lists.codes.nbytes + n + 4 * n + 2 * n + lists.term_base.nbytes
            + lists.offsets.nbytes) / n
    assert trained_index.bytes_per_vector == pytest.approx(want)


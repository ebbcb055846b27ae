"""Run in a subprocess by test_extreme_inputs.py: extreme, NaN and inf queries and models
against the index and the compiled kernels. A crash (segfault) fails the calling test
instead of killing the suite.

    python tests/unit/extreme_cases.py {queries|models|kernels}

prints one JSON line per case: {"case", "outcome": "answer" | "ValueError", "message",
"problems"}; "problems" lists what is wrong with an answer (an id out of range or given
twice, a non-finite distance next to an id, distances not ascending).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
F32_MAX = np.float32(np.finfo(np.float32).max)


def emit(case: str, run) -> None:
    print(json.dumps({"case": case, "outcome": "started"}), flush=True)
    try:
        problems = run()
        doc = {"case": case, "outcome": "answer", "problems": problems}
    except ValueError as exc:
        doc = {"case": case, "outcome": "ValueError", "message": str(exc)}
    print(json.dumps(doc), flush=True)


def answer_problems(D: np.ndarray, I: np.ndarray, ntotal: int) -> list[str]:
    problems = []
    valid = I >= 0
    if ((I < -1) | (I >= ntotal)).any():
        problems.append(f"ids out of range: {I[(I < -1) | (I >= ntotal)][:5].tolist()}")
    if not np.isfinite(D[valid]).all():
        problems.append("non-finite distance next to an id")
    for row_d, row_i in zip(D, I):
        ids = row_i[row_i >= 0]
        if np.unique(ids).size != ids.size:
            problems.append(f"an id twice in one row: {ids.tolist()}")
            break
        if (np.diff(row_d[row_i >= 0]) < 0).any():
            problems.append("distances not ascending")
            break
    return problems


def sift():
    from shards import read_vectors

    data = REPO / "data" / "sift-small"
    learn = np.asarray(read_vectors(str(data / "learn.u8bin")))
    base = np.asarray(read_vectors(str(data / "base.u8bin")))[:3000]
    query = np.asarray(read_vectors(str(data / "query.u8bin")))[:8].astype(np.float32)
    return learn, base, query


def small_index(learn, base):
    from indexer import VLQIndex

    index = VLQIndex(128, nlist=16, nedge=4, code_bytes=8, nlambda=32)
    index.train(learn)
    index.add(base)
    return index


def search_both_backends(index, q):
    """Search with the numba kernel and the torch scan; both must agree on the outcome."""
    problems = []
    for backend in ("numba", "torch"):
        index.backend, index.device, index._device_lists = backend, "cpu", None
        D, I = index.search(q, k=10, nprobe=8, nlines=16)
        problems += [f"{backend}: {p}" for p in answer_problems(D, I, index.ntotal)]
    index.backend = "numba"
    return problems


def query_cases():
    learn, base, query = sift()
    index = small_index(learn, base)
    one = query[:1]
    cases = {
        "sift_query_times_1e18": lambda: query * np.float32(1e18),
        "sift_query_times_minus_1e18": lambda: query * np.float32(-1e18),
        "one_value_3e19": lambda: np.where(np.arange(128) == 5, np.float32(3e19), one),
        "norm_just_below_float32_max": lambda: np.full((1, 128), np.sqrt(F32_MAX / 129),
                                                       np.float32),
        "negative_norm_just_below_max": lambda: np.full((1, 128), -np.sqrt(F32_MAX / 130),
                                                             np.float32),
        "sift_query_times_1e15": lambda: query * np.float32(1e15),
        "float64_1e300": lambda: one.astype(np.float64) * 1e300,
        "float16_max": lambda: np.full((2, 128), 65504, np.float16),
        "nan_value": lambda: np.where(np.arange(128) == 7, np.float32(np.nan), one),
        "inf_value": lambda: np.where(np.arange(128) == 7, np.float32(np.inf), one),
        "minus_inf_row_3": lambda: np.vstack([query[:3], np.full((1, 128), -np.inf,
                                                                   np.float32)]),
        "all_zero": lambda: np.zeros((2, 128), np.float32),
        "denormals": lambda: np.full((2, 128), 1e-45, np.float32),
        "negative_sift": lambda: -query,
    }
    for name, make in cases.items():
        emit(name, lambda make=make: search_both_backends(index, make()))


def model_cases():
    from indexer import VLQIndex
    from shards import IndexArrays

    learn, base, query = sift()
    index = small_index(learn, base)
    good = index.to_arrays()

    def with_array(name, change, meta=None):
        arrays = dict(good.model_arrays)
        arrays[name] = change(np.array(arrays[name]) if name in arrays else None)
        data = IndexArrays(meta or good.model_meta, arrays, good.ids, good.list_ids,
                           good.lambda_idx, good.codes, good.next_id)
        loaded = VLQIndex.from_arrays(data)
        return search_both_backends(loaded, query)

    def put(index_tuple, value):
        def change(a):
            a[index_tuple] = value
            return a
        return change

    cases = {
        "centroid_nan": ("centroids", put((3, 5), np.nan)),
        "centroid_inf": ("centroids", put((0, 0), np.inf)),
        "centroid_1e30": ("centroids", put((2, 1), 1e30)),
        "edge_len2_nan": ("edge_len2", put((1, 1), np.nan)),
        "edge_len2_negative": ("edge_len2", put((1, 1), -4.0)),
        "edge_id_out_of_range": ("edges", put((1, 1), 16)),
        "edge_id_negative": ("edges", put((1, 1), -1)),
        "edges_float": ("edges", lambda a: a.astype(np.float32)),
        "lambda_nan": ("lambda_values", put(3, np.nan)),
        "lambda_minus_inf": ("lambda_values", put(0, -np.inf)),
        "lambda_shorter_than_nlambda": ("lambda_values", lambda a: a[:8]),
        "codebook_nan": ("pq_codebook", put((0, 0, 0), np.nan)),
        "codebook_16_centroids": ("pq_codebook", lambda a: a[:, :16]),
        "codebook_1e30": ("pq_codebook", lambda a: a * np.float32(1e30)),
    }
    for name, (array, change) in cases.items():
        emit(name, lambda array=array, change=change: with_array(array, change))
    emit("encoder_weight_nan", lambda: with_array(
        "encoder.weight", lambda a: np.full((128, 128), np.nan, np.float32),
        meta={**good.model_meta, "encoder": {"kind": "opq", "dim": 128, "dim_out": 128}}))
    # models changed in place after loading (past every load check): the search guards
    emit("in_place_centroid_nan", lambda: _mutated(index, query, "centroids", (3, 5)))
    emit("in_place_lambda_nan", lambda: _mutated(index, query, "lambda_values", 3))
    emit("in_place_edge_len2_nan", lambda: _mutated(index, query, "edge_len2", (0, 0)))


def _mutated(index, query, name, where):
    from indexer import VLQIndex

    data = index.to_arrays()
    copied = {name: np.array(a) for name, a in data.model_arrays.items()}
    fresh = VLQIndex.from_arrays(type(data)(data.model_meta, copied, data.ids, data.list_ids,
                                            data.lambda_idx, data.codes, data.next_id))
    getattr(fresh.quantizer, name)[where] = np.nan
    return search_both_backends(fresh, query)


def kernel_cases():
    """The compiled selections and the fused scan called directly with NaN/inf inputs:
    every position they return must be valid, whatever the values."""
    from indexer.coarse import select_lines
    from indexer.kernels import search_numba
    from indexer.selection import _select_smallest, _top_probes

    rng = np.random.default_rng(0)

    def selection(values, n):
        out = np.full(n, -7, np.int64)
        _select_smallest(values, n, np.empty_like(values), out)
        problems = []
        if ((out < 0) | (out >= values.size)).any() or np.unique(out).size != n:
            problems.append(f"positions {out.tolist()} for n={n} of {values.size}")
        finite = values[np.isfinite(values)]
        if not np.isnan(values).any() and n <= finite.size:   # a total order: exact
            if np.sort(values[out])[-1] > np.sort(values)[n - 1]:
                problems.append("not the n smallest")
        return problems

    def select_many(make):
        problems = []
        for trial in range(200):
            values = make(trial)
            for n in (1, 3, values.size // 2, values.size - 1):
                problems += selection(values, max(1, n))
        return problems[:5]

    def noisy(trial, fill):
        v = rng.normal(size=8 + trial % 40).astype(np.float32)
        v[rng.random(v.size) < 0.3] = fill
        return v

    emit("select_with_nan", lambda: select_many(lambda t: noisy(t, np.nan)))
    emit("select_all_nan", lambda: select_many(lambda t: np.full(5 + t % 9, np.nan, np.float32)))
    emit("select_with_inf", lambda: select_many(lambda t: noisy(t, np.inf)))
    emit("select_with_minus_inf", lambda: select_many(lambda t: noisy(t, -np.inf)))

    def probes(values, nprobe):
        heap_d, heap_p = np.empty(nprobe, np.float32), np.full(nprobe, -7, np.int64)
        _top_probes(values, nprobe, heap_d, heap_p, np.empty_like(values))
        ok = ((heap_p >= 0) & (heap_p < values.size)).all() and np.unique(heap_p).size == nprobe
        finite_first = np.isfinite(values).sum() >= nprobe and not np.isnan(heap_d).any()
        return [] if ok and (finite_first or np.isfinite(values).sum() < nprobe) else \
            [f"probes {heap_p.tolist()} {heap_d.tolist()}"]
    emit("top_probes_with_nan", lambda: sum((probes(noisy(t, np.nan), 4) for t in range(100)), []))

    # the fused scan: 40 centroids, 6 edges, 3000 codes; distances with NaN/inf
    k_cent, nedge, m_sub, n = 40, 6, 8, 3000
    edges = np.stack([rng.choice(np.delete(np.arange(k_cent), i), nedge, replace=False)
                      for i in range(k_cent)]).astype(np.int32)
    edge_len2 = rng.random((k_cent, nedge)).astype(np.float32) + 0.1
    list_ids = np.sort(rng.integers(0, k_cent * nedge, n))
    offsets = np.zeros(k_cent * nedge + 1, np.int64)
    np.cumsum(np.bincount(list_ids, minlength=k_cent * nedge), out=offsets[1:])
    codes = rng.integers(0, 256, (n, m_sub), dtype=np.uint8)
    lam_idx = rng.integers(0, 16, n).astype(np.uint8)
    lam_values = np.linspace(-0.2, 1.2, 16, dtype=np.float32)
    terms = rng.integers(-32768, 32767, n).astype(np.int16)   # int16 steps above a list base
    term_base = rng.random(k_cent * nedge).astype(np.float32)
    centroids = rng.random((k_cent, 2 * m_sub)).astype(np.float32)   # 2 dims per sub-space
    codebook = rng.random((m_sub, 256, 2)).astype(np.float32)

    def fused(dist_qc, lut=None):
        nq = dist_qc.shape[0]
        lut = rng.random((nq, m_sub, 256)).astype(np.float32) if lut is None else lut
        problems = []
        for nprobe, nlines in ((4, 10), (40, 240), (1, 1)):
            for ip in (0, 1):      # the l2 and the inner-product line rules
                rule = np.array([ip, lam_values.min(), lam_values.max()], dtype=np.float32)
                D, P = search_numba(dist_qc, lut, edges, edge_len2, rule, nprobe, nlines,
                                    lam_values, offsets, codes, lam_idx, terms, term_base,
                                    np.float32(1e-5), centroids, codebook, 20, 40)
                if ((P < -1) | (P >= n)).any():
                    problems.append(f"positions out of range with nprobe={nprobe} ip={ip}")
                ids, b, alpha, c = select_lines(dist_qc, edges, edge_len2, nprobe, nlines, rule)
                if ((ids < 0) | (ids >= k_cent * nedge)).any():
                    problems.append(f"select_lines: list ids out of range with nprobe={nprobe} "
                                    f"ip={ip}")
        return problems

    base = rng.random((6, k_cent)).astype(np.float32) * 100
    emit("fused_nan_distances", lambda: fused(np.where(rng.random(base.shape) < 0.3, np.nan,
                                                       base).astype(np.float32)))
    emit("fused_all_nan", lambda: fused(np.full((3, k_cent), np.nan, np.float32)))
    emit("fused_inf_distances", lambda: fused(np.where(rng.random(base.shape) < 0.5, np.inf,
                                                       base).astype(np.float32)))
    emit("fused_huge_distances", lambda: fused(base * np.float32(1e36)))
    emit("fused_nan_tables", lambda: fused(base, np.full((6, m_sub, 256), np.nan, np.float32)))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    {"queries": query_cases, "models": model_cases, "kernels": kernel_cases}[sys.argv[1]]()

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from bench.config import SYSTEMS, BenchConfig
from bench.dataset_files import find_dataset_files
from bench.plans import VLQ_NLINES_FACTORS, VLQ_NPROBES, plan_systems
from bench.plotting import pareto_front, plot_results
from bench.runner import run_benchmark
from indexer.evaluation import exact_ground_truth
from indexer.sizing import (
    MIN_POINTS_PER_CENTROID,
    blas_controller,
    ivf_nlist_for,
    set_threads,
    vlq_nlist_for,
)

FAISS_SYSTEMS = ("ivfpq", "opq_ivfpq", "ivfpq_fastscan")
RUN_KEYS = {"system", "index", "nlist", "bytes_per_vector", "bytes_method", "train_s", "add_s",
            "wall_s", "peak_rss_mb", "search"}
POINT_KEYS = {"params", "recall@1", "recall@10", "recall@100", "10recall@10", "qps",
              "stored_copy"}


def _write_bin(path: Path, x: np.ndarray) -> None:
    path.write_bytes(np.array(x.shape, dtype=np.uint32).tobytes() + x.tobytes())


def _write_dataset(folder: Path, nb=3000, nt=1000, nq=50, d=32, k=100, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    xb, xt, xq = (rng.standard_normal((n, d)).astype(np.float32) for n in (nb, nt, nq))
    folder.mkdir(parents=True)
    _write_bin(folder / "base.fbin", xb)
    _write_bin(folder / "learn.fbin", xt)
    _write_bin(folder / "query.fbin", xq)
    D, I = exact_ground_truth(xb, xq, k)
    (folder / "gt.ibin").write_bytes(np.array([nq, k], dtype=np.uint32).tobytes()
                                     + I.astype(np.int32).tobytes() + D.tobytes())
    return folder


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    data_dir = _write_dataset(root / "tiny-synth")
    systems = ("snapline",) + FAISS_SYSTEMS
    cfg = BenchConfig(data_dir=data_dir, out_dir=root / "out", code_bytes=8, threads=1,
                      nedges=(4,), nlambda=16, systems=systems, repeats=1,
                      encoders=("none", "opq"), nlist_vlq=8, ivf_nlist=16, pq_bits=(8,))
    results = run_benchmark(cfg)
    plot_results(cfg.out_dir / "results.json")   # the plot step, from the file on disk
    return cfg, results


def test_results_json_schema(bench):
    cfg, results = bench
    on_disk = json.loads((cfg.out_dir / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert on_disk["dataset"] == "tiny-synth"
    assert (on_disk["n_base"], on_disk["n_query"], on_disk["dim"]) == (3000, 50, 32)
    assert (on_disk["threads"], on_disk["code_bytes"]) == (1, 8)
    assert [run["system"] for run in on_disk["runs"]] == ["snapline"] * 2 + list(cfg.systems[1:])
    assert on_disk["skipped"] == [] and on_disk["failed"] == []
    for run in on_disk["runs"]:
        assert RUN_KEYS <= set(run), run.keys()
        assert run["peak_rss_mb"] > 0 and run["train_s"] >= 0 and run["add_s"] >= 0
        assert run["search"]
        for point in run["search"]:
            assert POINT_KEYS <= set(point)
            assert point["qps"] > 0
            for key in POINT_KEYS - {"params", "qps"}:
                assert 0.0 <= point[key] <= 1.0


def test_faiss_sizes_and_bytes(bench):
    _, results = bench
    runs = {run["system"]: run for run in results["runs"]}
    # nlist: 4 sqrt(3000) ~ 219 -> 256, halved until 1000 / nlist >= 39 -> 16
    assert runs["ivfpq"]["index"] == "IVF16,PQ8np"
    assert runs["opq_ivfpq"]["index"] == "OPQ8,IVF16,PQ8np"
    assert runs["ivfpq_fastscan"]["index"] == "IVF16,PQ16x4fs"
    for system in FAISS_SYSTEMS:
        run = runs[system]
        assert run["bytes_method"].startswith("resident, measured")
        assert run["bytes_per_vector"] == sum(run["bytes_detail"].values()) / 3000
        assert run["bytes_detail"]["codes"] == 3000 * 8 and run["bytes_detail"]["ids"] == 3000 * 8
        assert [p["params"]["nprobe"] for p in run["search"]] == [1, 2, 4, 8, 16]
    assert runs["ivfpq"]["bytes_per_vector"] == runs["opq_ivfpq"]["bytes_per_vector"] == 16.0
    # fast-scan pads every list to whole blocks of 32 codes: 16 lists hold at least one
    # partial block unless all sizes are multiples of 32
    assert 16.0 < runs["ivfpq_fastscan"]["bytes_per_vector"] <= 16.0 + 16 * 31 * 8 / 3000


def test_ivfpq_recall_rises_with_nprobe(bench):
    _, results = bench
    run = next(r for r in results["runs"] if r["system"] == "ivfpq")
    r10 = [p["recall@10"] for p in run["search"]]
    r100 = [p["recall@100"] for p in run["search"]]
    assert r10[-1] > r10[0] and r100[-1] > r100[0]
    assert all(b >= a - 0.02 for a, b in zip(r100, r100[1:])), r100
    assert r100[-1] >= 0.9  # every list probed: only PQ error remains


def test_snapline_run(bench):
    _, results = bench
    run = results["runs"][0]
    assert run["index"] == "VLQ nlist=8 nedge=4 PQ8"
    # measured: 8 code bytes + lambda byte + 32-bit id + int16 ADC term, plus per-list arrays
    assert run["bytes_per_vector"] >= 8 + 1 + 4 + 2
    assert run["add_alloc_peak_mb"] > 0
    assert run["index_mb"] == pytest.approx(3000 * run["bytes_per_vector"] / 2**20)
    params = [p["params"] for p in run["search"]]
    # nprobe up to nlist=8; nlines capped by nprobe * nedge (4)
    assert params == [{"nprobe": p, "nlines": n} for p in (2, 4, 8)
                      for n in sorted({min(f * p, 4 * p) for f in VLQ_NLINES_FACTORS})]
    assert run["nlist"] == 8 and run["pq_bits"] == 8


def test_encoder_runs_are_recorded(bench):
    _, results = bench
    runs = [r for r in results["runs"] if r["system"] == "snapline"]
    assert [r["encoder"] for r in runs] == ["none", "opq"]
    assert runs[1]["index"].endswith(" opq")
    assert runs[1]["encoder_params"]["kind"] == "opq"
    assert runs[1]["encoder_params"]["parameters"] == 32 * 32
    assert runs[1]["encode_vectors_per_s"] > 0
    assert runs[0]["encoder_params"] == {"kind": "none", "dim": 32, "parameters": 0}


@pytest.mark.parametrize("spec", ["pca", "gsl+qn1", "gsl+zz3", "opq+smh0.5"])
def test_bad_encoder_spec_refused(spec):
    with pytest.raises(ValueError):
        BenchConfig(data_dir="x", out_dir="y", encoders=("none", spec))


def test_plot_is_png(bench):
    cfg, _ = bench
    png = cfg.out_dir / "recall_qps.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5000


def test_sizing_rules():
    assert ivf_nlist_for(500_000, 100_000) == 2048  # 4 sqrt(n) = 2828
    assert vlq_nlist_for(2048, 100_000) == 1024
    assert ivf_nlist_for(10**9, 10**7) == 131072  # 126491 -> 2^17
    assert ivf_nlist_for(10**9, 10**6) == 16384  # 1e6 / 16384 = 61 >= 39
    assert ivf_nlist_for(3000, 1000) == 16
    assert vlq_nlist_for(16, 1000) == 8
    assert vlq_nlist_for(2048, 20_000) == 512  # 20000 / 512 = 39.06


def test_plan_skips_what_does_not_apply():
    cfg = BenchConfig(data_dir="x", out_dir="y", code_bytes=12, systems=FAISS_SYSTEMS,
                      ivf_nlist=256)
    plans, skipped = plan_systems(cfg, n_base=100_000, n_learn=100_000, d=96)
    assert [p.system for p in plans] == list(FAISS_SYSTEMS) and not skipped  # 96 % 24 == 0
    plans, skipped = plan_systems(cfg, n_base=100_000, n_learn=100_000, d=36)
    assert [p.system for p in plans] == ["ivfpq", "opq_ivfpq"]
    assert skipped[0]["system"] == "ivfpq_fastscan" and "d=36" in skipped[0]["reason"]


def test_plan_sweeps_and_nedge_cap(caplog):
    cfg = BenchConfig(data_dir="x", out_dir="y", code_bytes=16, nedges=(32,), pq_bits=(8,),
                      systems=("snapline", "ivfpq"))
    with caplog.at_level(logging.WARNING):
        plans, _ = plan_systems(cfg, n_base=3000, n_learn=1000, d=128)
    vlq = plans[0]   # nlist range 2..8 for snapline: the smallest first
    assert (vlq.nlist, vlq.nedge) == (2, 1) and "nedge=1" in vlq.index
    assert "nedge=32" in caplog.text
    plans, _ = plan_systems(cfg, n_base=500_000, n_learn=100_000, d=128)
    vlqs = [p for p in plans if p.system == "snapline"]
    ivfs = [p for p in plans if p.system == "ivfpq"]
    assert [p.nlist for p in vlqs] == [256, 512, 1024, 2048]
    assert [p.nlist for p in ivfs] == [512, 1024, 2048]   # 4096 leaves < 39 learn points
    assert [p["nprobe"] for p in ivfs[0].sweep] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    vlq = vlqs[1]
    assert {"nprobe": 128, "nlines": 2048} in vlq.sweep
    assert all(p["nlines"] <= p["nprobe"] * 32 for p in vlq.sweep)
    assert len(vlq.sweep) == len(VLQ_NPROBES) * len(VLQ_NLINES_FACTORS)


def test_plan_builds_snapline_at_every_nedge():
    """--nedge 8,32: one snapline build per (nlist, nedge); nlines goes up to all the lines of
    the probes (nprobe * nedge), and two values capped to the same nedge build once."""
    cfg = BenchConfig(data_dir="x", out_dir="y", nedges=(8, 32), pq_bits=(4,),
                      systems=("snapline",), nlists=(4, 256))
    plans, _ = plan_systems(cfg, n_base=100_000, n_learn=100_000, d=96)
    assert [(p.nlist, p.nedge) for p in plans] == [(4, 3), (256, 8), (256, 32)]
    e8 = plans[1]
    assert "nedge=8" in e8.index
    assert {p["nlines"] for p in e8.sweep if p["nprobe"] == 16} == {32, 64, 128}
    assert all(p["nlines"] <= p["nprobe"] * 8 for p in e8.sweep)


@pytest.mark.parametrize("kwargs, match", [
    ({"code_bytes": 0}, "code_bytes=0"),
    ({"threads": -1}, "threads=-1"),
    ({"nlambda": 300}, "nlambda=300"),
    ({"nlist_vlq": 1}, "nlist_vlq=1"),
    ({"ivf_nlist": 0}, "ivf_nlist=0"),
    ({"systems": ("ivfpq", "hnsw")}, "hnsw"),
    ({"systems": ()}, "systems"),
    ({"k": 1.5}, "k=1.5"),
    ({"nlists": (512, 1)}, r"nlists=\(512, 1\)"),
    ({"nlists": ()}, r"nlists=\(\)"),
    ({"pq_bits": (4, 6)}, r"pq_bits=\(4, 6\)"),
    ({"nedges": (8, 8)}, r"nedges=\(8, 8\)"),
    ({"nedges": (0,)}, r"nedges=\(0,\)"),
])
def test_config_validation_names_field_and_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BenchConfig(data_dir="x", out_dir="y", **kwargs)


def test_config_defaults():
    cfg = BenchConfig(data_dir="x", out_dir="y")
    assert cfg.systems == SYSTEMS and cfg.threads >= 1 and isinstance(cfg.data_dir, Path)
    assert (cfg.nedges, cfg.nlambda, cfg.k, cfg.nlist_vlq, cfg.ivf_nlist) == ((32,), 256, 100, None, None)
    assert cfg.nlists is None and cfg.pq_bits == (4, 8)


def test_find_dataset_files_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="base"):
        find_dataset_files(tmp_path)
    for stem in ("base", "query", "learn"):
        _write_bin(tmp_path / f"{stem}.u8bin", np.zeros((2, 4), dtype=np.uint8))
    with pytest.raises(FileNotFoundError, match="gt.ibin"):
        find_dataset_files(tmp_path)
    _write_bin(tmp_path / "base.fbin", np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(FileNotFoundError, match="exactly one base"):
        find_dataset_files(tmp_path)


def test_pareto_front_big_ann_way():
    points = [(0.5, 1000.0), (0.6, 1200.0), (0.7, 500.0), (0.65, 400.0), (0.9, 100.0),
              (0.0, 5000.0)]
    assert pareto_front(points) == [(0.6, 1200.0), (0.7, 500.0), (0.9, 100.0)]


def _results_doc(runs: list[dict]) -> dict:
    """A results.json as run_benchmark writes it, cut to what the plot reads."""
    return {"dataset": "hand-written", "code_bytes": 8, "threads": 1, "n_query": 50,
            "runs": runs}


def test_plot_from_results_json_alone(tmp_path):
    runs = [{"system": system, "index": name, "nlist": nlist, "bytes_per_vector": bpv,
             "search": [{"recall@10": r, "qps": q} for r, q in points]}
            for system, name, nlist, bpv, points in [
                ("ivfpq", "IVF16,PQ8np", 16, 16.0, [(0.4, 9000.0), (0.6, 5000.0), (0.8, 2000.0)]),
                ("ivfpq", "IVF32,PQ8np", 32, 16.0, [(0.5, 9500.0), (0.7, 3000.0)]),
                ("snapline", "VLQ nlist=8 nedge=4 PQ8", 8, 17.0,
                 [(0.5, 8000.0), (0.9, 1500.0), (0.7, 900.0)])]]
    results_json = tmp_path / "run" / "results.json"
    results_json.parent.mkdir()
    results_json.write_text(json.dumps(_results_doc(runs)))
    png = plot_results(results_json)
    assert png == tmp_path / "run" / "recall_qps.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    other = plot_results(results_json, tmp_path / "other.png")
    assert other == tmp_path / "other.png" and other.is_file()


def test_plot_refuses_what_is_not_a_results_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        plot_results(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text(json.dumps({"runs": []}))
    with pytest.raises(ValueError, match="dataset"):
        plot_results(tmp_path / "x.json")


def test_training_cap_keeps_39_points_per_centroid():
    for n_learn in (1000, 20_000, 100_000, 10**6):
        ivf = ivf_nlist_for(10**9, n_learn)        # 4 sqrt(1e9) is far above every cap here
        assert MIN_POINTS_PER_CENTROID * ivf <= n_learn < MIN_POINTS_PER_CENTROID * 2 * ivf
        assert MIN_POINTS_PER_CENTROID * vlq_nlist_for(ivf, n_learn) <= n_learn


def test_thread_control():
    import faiss

    before = faiss.omp_get_max_threads()
    try:
        assert set_threads(1)["faiss"] == 1 and faiss.omp_get_max_threads() == 1
    finally:
        set_threads(before)
    assert blas_controller() is blas_controller()   # libraries scanned once
    with blas_controller().limit(limits=1, user_api="blas"):
        pass

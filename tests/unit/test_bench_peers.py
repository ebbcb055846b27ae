"""The peers of `snapline bench`: their plans at every nlist, their bytes measured from
what they hold, real runs of each (ScaNN and LanceDB only where the `bench` extra is
installed), and the per-stage breakdown of a runner that reports one."""
import importlib.util

import faiss
import numpy as np
import pytest

from bench.config import PEER_PACKAGES, SYSTEMS, BenchConfig
from bench.dataset_files import find_dataset_files
from bench.faiss_runners import faiss_resident_bytes
from bench.peer_plans import rabitq_bits
from bench.plans import SNAPLINE_RERANK_FACTORS, SystemPlan, nlist_range, plan_systems
import bench.runner as runner_module
from bench.runner import run_benchmark, run_sweep
from indexer.evaluation import exact_ground_truth
from test_benchmark import _write_dataset

HAVE = {p: importlib.util.find_spec(p) is not None for p in ("scann", "lancedb")}


def test_nlist_range_rule():
    assert nlist_range(100_000, 100_000) == [128, 256, 512, 1024]
    assert nlist_range(100_000, 20_000) == [128, 256, 512]          # 20000 / 512 >= 39
    assert nlist_range(100_000, 20_000, shift=-1) == [64, 128, 256, 512]
    assert nlist_range(500_000, 10**6) == [512, 1024, 2048, 4096]
    assert nlist_range(500_000, 100_000) == [512, 1024, 2048]
    assert nlist_range(3000, 100) == [2]                              # none fits: largest that does
    with pytest.raises(ValueError, match="n_base"):
        nlist_range(0, 10)


def test_every_system_planned_at_every_nlist():
    cfg = BenchConfig(data_dir="x", out_dir="y", code_bytes=16)
    plans, skipped = plan_systems(cfg, n_base=100_000, n_learn=20_000, d=96)
    nlists = {}
    for plan in plans:
        nlists.setdefault(plan.system, set()).add(plan.nlist)
    peers = [s for s in SYSTEMS if s != "snapline" and (s not in PEER_PACKAGES
                                                          or HAVE[PEER_PACKAGES[s]])]
    for system in peers:
        want = {128, 256} if system == "lancedb_ivfpq" else {128, 256, 512}
        assert nlists[system] == want, system
    assert nlists["snapline"] == {64, 128, 256, 512}
    assert {(p.nlist, p.pq_bits) for p in plans if p.system == "snapline"} == {
        (n, b) for n in (64, 128, 256, 512) for b in (4, 8)}
    if HAVE["lancedb"]:
        assert skipped == [{"system": "lancedb_ivfpq", "nlist": 512,
                            "reason": "LanceDB trains at most n/256 = 390 partitions "
                                      "(its default sample_rate), not 512"}]
    by_key = {(p.system, p.nlist): p for p in plans}
    rabitq = by_key["ivf_rabitq", 256]
    assert rabitq.factory == "IVF256,RaBitQ" and "1 bit: 20 B code, over the 16 B" in rabitq.index
    assert by_key["ivf_rabitq_fastscan", 256].factory == "IVF256,RaBitQfs"
    rabitq_refine = by_key["ivf_rabitq_fastscan_refine", 256]
    assert rabitq_refine.factory == "IVF256,RaBitQfs,Refine(SQ8)"
    assert {"nprobe": 4, "qb": 8, "k_factor": 2} in rabitq_refine.sweep
    assert {"nprobe": 256, "qb": 8} in rabitq.sweep
    refine = by_key["ivfpq_fastscan_refine", 128]
    assert refine.factory == "IVF128,PQ32x4fs,Refine(SQ8)"
    assert {p["k_factor"] for p in refine.sweep} == {1, 2, 4, 8}
    assert [p["nprobe"] for p in by_key["ivfpq", 512].sweep] == [2 ** i for i in range(9)]
    if HAVE["scann"]:
        assert "dims_per_block=3" in by_key["scann", 128].index    # 96 / (2 * 16)
        assert {p["reorder"] for p in by_key["scann_reorder", 128].sweep} == {100, 200, 400}
    vlq4 = next(p for p in plans if p.system == "snapline" and p.pq_bits == 4)
    assert {p["rerank"] for p in vlq4.sweep} == {f * 100 for f in SNAPLINE_RERANK_FACTORS}
    assert "PQ32x4" in vlq4.index


def test_rabitq_bits_closest_under_budget():
    assert rabitq_bits(96, 16) == (1, 20)     # 12 B of bits + 8 B of factors: none fits
    assert rabitq_bits(96, 48) == (2, 44)
    assert rabitq_bits(128, 64) == (2, 52)


def test_what_does_not_apply_is_skipped_with_its_reason(monkeypatch):
    cfg = BenchConfig(data_dir="x", out_dir="y", code_bytes=12, nlists=(64,),
                      systems=("ivfpq_fastscan_refine", "scann", "lancedb_ivfpq", "ivfpq"))
    monkeypatch.setitem(PEER_PACKAGES, "lancedb_ivfpq", "no_such_package_h13")
    plans, skipped = plan_systems(cfg, n_base=100_000, n_learn=100_000, d=36)
    assert [p.system for p in plans] == ["ivfpq"]
    reasons = {s["system"]: s["reason"] for s in skipped}
    assert "PQ24x4fs,Refine(SQ8) needs d % 24 == 0, d=36" in reasons["ivfpq_fastscan_refine"]
    assert "'no_such_package_h13' is not installed" in reasons["lancedb_ivfpq"]
    assert ("d % 24 == 0, d=36" in reasons["scann"] if HAVE["scann"]
            else "not installed" in reasons["scann"])


def test_faiss_bytes_walk_the_lists():
    rng = np.random.default_rng(0)
    d, n = 32, 3000
    x = rng.standard_normal((n, d)).astype(np.float32)
    for factory, code in [("IVF16,PQ8np", 8), ("IVF16,PQ16x4fs", 8),
                          ("IVF16,PQ16x4fs,Refine(SQ8)", 8), ("IVF16,RaBitQ", 12)]:
        index = faiss.index_factory(d, factory)
        index.train(x)
        index.add(x)
        parts = faiss_resident_bytes(index)
        assert parts["codes"] == n * code and parts["ids"] == n * 8, factory
        assert parts["refine"] == (n * d if "Refine" in factory else 0), factory
        ivf = faiss.extract_index_ivf(index)
        sizes = [ivf.invlists.list_size(i) for i in range(16)]
        padded = sum(-(-s // 32) * 32 - s for s in sizes) * code if "fs" in factory else 0
        assert parts["padding"] == padded, factory


@pytest.fixture(scope="module")
def peer_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("peers")
    data_dir = _write_dataset(root / "tiny-synth")
    systems = ("ivfpq_fastscan_refine", "ivf_rabitq", "ivf_rabitq_fastscan",
               "ivf_rabitq_fastscan_refine", "scann", "scann_reorder", "lancedb_ivfpq")
    cfg = BenchConfig(data_dir=data_dir, out_dir=root / "out", code_bytes=8, threads=1,
                      systems=systems, repeats=1, nlists=(4, 8))
    return cfg, run_benchmark(cfg)


@pytest.mark.slow
def test_peer_runs(peer_runs):
    cfg, results = peer_runs
    assert not results["failed"], results["failed"]
    runs = {(r["system"], r["nlist"]): r for r in results["runs"]}
    missing = {s["system"] for s in results["skipped"]}   # packages not installed
    assert all("nlist" not in s for s in results["skipped"])   # 8 <= 3000 / 256
    for system in cfg.systems:
        if system in missing:
            assert not HAVE[PEER_PACKAGES[system]]
            continue
        for nlist in (4, 8):
            run = runs[system, nlist]
            assert run["bytes_per_vector"] == pytest.approx(
                sum(run["bytes_detail"].values()) / 3000), system
            assert len(run["search"]) == len({str(p["params"]) for p in run["search"]})
            assert max(p["recall@10"] for p in run["search"]) > 0.3, system
    refine = runs["ivfpq_fastscan_refine", 8]
    assert refine["bytes_per_vector"] >= 8 + 8 + 32   # codes, ids, SQ8 copy of 32 dims
    assert all(p["stored_copy"] for p in refine["search"])
    assert max(p["recall@10"] for p in refine["search"]) > 0.9
    assert runs["ivf_rabitq", 8]["bytes_per_vector"] == 12 + 8   # 4 B bits + 8 B factors
    if HAVE["scann"]:
        plain, reorder = runs["scann", 8], runs["scann_reorder", 8]
        assert plain["bytes_method"].startswith("on disk")
        assert "int8_dataset.npy" in reorder["bytes_detail"]
        assert reorder["bytes_per_vector"] > plain["bytes_per_vector"] + 32
    if HAVE["lancedb"]:
        lance = runs["lancedb_ivfpq", 8]
        assert lance["bytes_method"].startswith("on disk")
        assert [p["stored_copy"] for p in lance["search"]] == [
            bool(p["params"]["refine_factor"]) for p in lance["search"]]
        assert not list(cfg.out_dir.glob("lancedb-*")) and not list(cfg.out_dir.glob("scann-*"))


class ExactRunner:
    """A real (brute-force) runner that reports a per-stage breakdown."""

    def __init__(self, xb):
        self.xb = xb

    def search(self, q, k, params):
        return exact_ground_truth(self.xb, q, k)

    def stage_seconds(self, q, k, params):
        return {"coarse": 0.5 * params["nprobe"], "scan": 2.0}


def test_stage_breakdown_per_sweep_point(tmp_path, monkeypatch):
    data_dir = _write_dataset(tmp_path / "d", nb=500, nt=100, nq=20, d=8)
    files = find_dataset_files(data_dir)
    xb = np.fromfile(files.base, dtype=np.float32, offset=8).reshape(500, 8)
    cfg = BenchConfig(data_dir=data_dir, out_dir=tmp_path / "o", repeats=3, k=10)
    plan = SystemPlan("ivfpq", "exact", 1, ({"nprobe": 1}, {"nprobe": 4}))
    points = run_sweep(ExactRunner(xb), files, plan, cfg)
    assert [p["stages_ms_per_query"] for p in points] == [
        {"coarse": 0.5 / 20 * 1e3, "scan": 2.0 / 20 * 1e3},
        {"coarse": 2.0 / 20 * 1e3, "scan": 2.0 / 20 * 1e3}]
    assert all(p["recall@10"] == 1.0 and p["timed_calls"] == 3 for p in points)
    monkeypatch.setattr(runner_module, "SLOW_CALL_S", 0.0)   # every call counts as slow
    assert [p["timed_calls"] for p in run_sweep(ExactRunner(xb), files, plan, cfg)] == [1, 1]

"""Pareto fronts over all of a system's configurations and issue 13's acceptance rule,
on hand-made points."""
import json

import pytest

from bench.fronts import (
    FrontPoint,
    acceptance,
    bytes_label,
    fronts_markdown,
    pareto,
    qps_at_recall,
    system_points,
    write_fronts,
)
from bench.plotting import pareto_front


def _pts(pairs, bpv, **kw):
    return [FrontPoint(r, q, bpv, **kw) for r, q in pairs]


def test_front_keeps_what_nothing_beats_on_both():
    points = _pts([(0.5, 1000.0), (0.6, 1200.0), (0.7, 500.0), (0.65, 400.0), (0.9, 100.0),
                   (0.0, 5000.0), (0.7, 500.0), (0.6, 900.0), (0.9, 90.0)], 24.0)
    front = pareto(points)
    assert [(p.recall, p.qps) for p in front] == [(0.6, 1200.0), (0.7, 500.0), (0.9, 100.0)]
    # equal recall: the faster one only; equal QPS: the more accurate one only
    assert pareto_front([(0.5, 10.0), (0.5, 20.0), (0.4, 20.0)]) == [(0.5, 20.0)]


def test_qps_at_recall_is_step_wise_and_bytes_bound():
    points = _pts([(0.6, 1200.0), (0.9, 100.0)], 20.0) + _pts([(0.95, 900.0)], 40.0)
    assert qps_at_recall(points, 0.6).qps == 1200.0
    assert qps_at_recall(points, 0.61).qps == 900.0          # the 40 B point reaches 0.95
    assert qps_at_recall(points, 0.61, max_bytes=24.0).qps == 100.0
    assert qps_at_recall(points, 0.96) is None
    assert qps_at_recall(points, 0.91, max_bytes=24.0) is None


PEER = _pts([(0.4, 1000.0), (0.6, 800.0), (0.8, 400.0), (0.9, 100.0)], 24.0)
SNAP = _pts([(0.65, 900.0), (0.85, 500.0), (0.95, 150.0)], 20.0)


def test_rule_above_and_band():
    rule = acceptance(SNAP, PEER)
    # checked at the peer's front points from 0.5: 900/800, 500/400, 150/100
    assert rule["above"] and rule["checked"] == 3 and not rule["short"]
    assert rule["worst_ratio"] == pytest.approx(900 / 800) and rule["worst_at"] == 0.6
    # band 0.80..0.95: at 0.80 the peer's 400 vs 500; 0.81..0.85 the peer reaches only its
    # 100 QPS point vs snapline's 500; 0.86..0.90: 150 / 100; above 0.90 the peer is out
    assert rule["band_min"] == (0.8, pytest.approx(500 / 400))
    assert rule["band_max"] == (0.81, pytest.approx(5.0))


def test_rule_counts_only_snapline_points_within_the_peers_bytes():
    fat = _pts([(0.99, 1e6)], 32.0)   # faster everywhere, but more bytes than the peer
    assert acceptance(SNAP + fat, PEER) == acceptance(SNAP, PEER)
    rich_peer = _pts([(0.6, 800.0), (0.97, 50.0)], 40.0)
    rule = acceptance(SNAP + fat, rich_peer)
    assert rule["above"] and rule["worst_ratio"] == pytest.approx(1e6 / 800)


def test_rule_without_bytes_shows_the_speed_gap_alone():
    fat = _pts([(0.99, 1e6)], 32.0)
    assert acceptance(fat, PEER)["worst_ratio"] == 0.0        # 32 B > the peer's 24 B
    free = acceptance(fat, PEER, match_bytes=False)
    assert free["above"] and free["band_min"] == (0.8, pytest.approx(1e6 / 400))


def test_rule_reports_shortfalls():
    slow = _pts([(0.65, 700.0), (0.85, 500.0)], 20.0)   # below at 0.6, never reaches 0.9
    rule = acceptance(slow, PEER)
    assert not rule["above"]
    assert [(s["recall"], s["ratio"]) for s in rule["short"]] == [
        (0.6, pytest.approx(700 / 800)), (0.9, 0.0)]
    assert rule["worst_ratio"] == 0.0 and rule["worst_at"] == 0.9
    assert rule["band_min"] == (0.86, 0.0)   # 0.86..0.90: snapline has no point there
    low_peer = _pts([(0.3, 5000.0)], 24.0)
    assert acceptance(SNAP, low_peer)["checked"] == 0
    assert not acceptance(SNAP, low_peer)["above"]


def _run(system, index, nlist, bpv, points, **extra):
    return {"system": system, "index": index, "nlist": nlist, "bytes_per_vector": bpv,
            "search": [{"params": params, "recall@10": r, "qps": q} for r, q, params in points],
            **extra}


RESULTS = {
    "dataset": "hand", "code_bytes": 16, "threads": 2, "k": 100,
    "runs": [
        _run("snapline", "VLQ nlist=64", 64, 20.0, [(0.65, 900.0, {"nprobe": 8}),
                                                   (0.85, 500.0, {"nprobe": 16})]),
        _run("snapline", "VLQ nlist=128", 128, 22.0, [(0.95, 150.0, {"nprobe": 32})]),
        _run("ivfpq", "IVF128,PQ16np", 128, 24.0, [(0.6, 800.0, {"nprobe": 4}),
                                                   (0.8, 400.0, {"nprobe": 8})]),
        _run("ivfpq", "IVF256,PQ16np", 256, 24.0, [(0.9, 100.0, {"nprobe": 16})]),
        _run("lancedb_ivfpq", "LanceDB IVF128,PQ16", 128, 19.0,
             [(0.7, 300.0, {"nprobes": 8, "refine_factor": None}),
              (0.9, 200.0, {"nprobes": 8, "refine_factor": 2})]),
    ],
    "skipped": [{"system": "scann", "reason": "package 'scann' is not installed"}],
    "failed": [],
}


def test_system_points_group_every_configuration():
    points = system_points(RESULTS)
    assert list(points) == ["snapline", "ivfpq", "lancedb_ivfpq"]
    assert [p.nlist for p in points["snapline"]] == [64, 64, 128]
    assert bytes_label(points["snapline"]) == "20-22 B/vec"
    assert bytes_label(points["ivfpq"]) == "24 B/vec"
    assert [p.stored_copy for p in points["lancedb_ivfpq"]] == [False, True]


def test_fronts_md(tmp_path):
    text = fronts_markdown(RESULTS)
    rows = {line.split("|")[1].strip() + "|" + line.split("|")[3].strip(): line
            for line in text.splitlines()
            if line.startswith(("| ivfpq", "| lancedb", "| best peer"))}
    assert ("| yes | 1.12x at 0.600 | 1.25x at 0.80 | 5.00x at 0.81 | 1.25x at 0.80 / 5.00x at 0.81 |"
            in rows["ivfpq|yes"])
    # lancedb without refinement: 19 B/vec, snapline has no point that small
    assert "no (1 of 1 short)" in rows["lancedb_ivfpq|yes"]
    assert "lancedb_ivfpq|not yet: refinement copy" in rows
    # ivfpq and lancedb without refinement together: lancedb's (0.7, 300) is off that
    # front (ivfpq's (0.8, 400) beats it), so the best peer is ivfpq's front
    assert rows["best peer (all held peers)|yes"].endswith(
        "| 19-24 B/vec | yes | yes | 1.12x at 0.600 | 1.25x at 0.80 | 5.00x at 0.81 | "
        "1.25x at 0.80 / 5.00x at 0.81 |")
    assert "- skipped scann: package 'scann' is not installed" in text
    assert "0.950 / 150 (128, nprobe=32)" in text
    (tmp_path / "results.json").write_text(json.dumps(RESULTS))
    path = write_fronts(tmp_path / "results.json")
    assert path == tmp_path / "fronts.md" and path.read_text() == text


def test_stage_rows_lay_out_snaplines_front_with_its_stages():
    from bench.fronts import stage_rows

    def point(recall, qps, stages):
        return {"params": {"nprobe": 4}, "recall@10": recall, "qps": qps,
                "stages_ms_per_query": stages}

    results = {"threads": 1, "runs": [{"system": "snapline", "index": "VLQ a", "search": [
        point(0.6, 900.0, {"coarse": 0.01, "scan": 0.1}),
        point(0.5, 800.0, {"coarse": 0.01, "scan": 0.2}),          # beaten: not on the front
        point(0.9, 300.0, {"coarse": 0.01, "rerank": 0.05, "scan": 0.3})]},
        {"system": "ivfpq", "index": "IVF", "search": [point(0.99, 5000.0, {"scan": 1.0})]}]}
    rows = stage_rows(results)
    table = [r for r in rows if r.startswith("| VLQ")]
    assert len(table) == 2                                   # the front only, snapline only
    assert rows[2].split(" | ")[4:7] == ["coarse", "scan", "rerank"]   # search order
    assert table[1].endswith("| 0.3600 |")                   # the sum of its stages
    assert stage_rows({"threads": 1, "runs": []}) == []


def test_refinement_peers_are_held_once_snapline_refines():
    """A snapline run with a vector store (its points re-rank from stored vectors) holds
    the refinement-copy peers against snapline, at no more bytes than theirs."""
    refined = {**RESULTS, "runs": RESULTS["runs"] + [
        _run("snapline", "VLQ nlist=64 +refine", 64, 18.0,
             [(0.97, 250.0, {"nprobe": 16, "refine": 100})])]}
    points = system_points(refined)
    assert [p.stored_copy for p in points["snapline"]] == [False, False, False, True]
    text = fronts_markdown(refined)
    row = next(line for line in text.splitlines()
               if line.startswith("| lancedb_ivfpq") and "refinement copy" in line)
    assert "| yes: refinement copy |" in row
    # snapline's one point at <= 19 B (0.97, 250) beats lancedb's refined (0.9, 200), not
    # its unrefined (0.7, 300)
    assert "| no (1 of 2 short) | 0.83x at 0.700 |" in row


def test_snapline_refine_plans_sweep_refine_with_a_store():
    from bench.config import BenchConfig
    from bench.plans import SNAPLINE_REFINE_FACTORS, plan_systems
    from bench.snapline_runner import _store_for
    import numpy as np

    cfg = BenchConfig(data_dir="x", out_dir="y", code_bytes=16, pq_bits=(4,), refine=True,
                      systems=("snapline",), nlist_vlq=256)
    plans, _ = plan_systems(cfg, n_base=100_000, n_learn=50_000, d=96)
    assert [p.variant for p in plans] == ["", "refine"]
    assert {p["refine"] for p in plans[1].sweep} == {f * cfg.k for f in SNAPLINE_REFINE_FACTORS}
    assert "+refine" in plans[1].index and all("refine" not in p for p in plans[0].sweep)
    assert _store_for(np.array([[0.0, 255.0]], np.float32)) == "uint8"
    assert _store_for(np.array([[0.5, 1.0]], np.float32)) == "sq8"

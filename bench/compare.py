"""Markdown tables from benchmark results.json files (no stdout parsing).

    .venv/bin/python bench/compare.py bench/out/sift-real-dev-16/results.json ...

For each file: every run's Pareto front (R@10 vs QPS), and for every faiss IVFPQ point
with R@10 >= 0.5, snapline's QPS at that R@10 (linear interpolation between neighbouring
points of snapline's front; "below" when snapline's front never reaches that recall).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.plotting import pareto_front  # noqa: E402


def front(run, key="recall@10"):
    return sorted(pareto_front([(p[key], p["qps"]) for p in run["search"]]))


def qps_at(points, recall):
    """QPS of a front (sorted by recall) at a recall level, interpolated; None if out of reach."""
    best = None
    for (r0, q0), (r1, q1) in zip(points, points[1:]):
        if r0 <= recall <= r1:
            q = q0 if r1 == r0 else q0 + (q1 - q0) * (recall - r0) / (r1 - r0)
            best = q if best is None else max(best, q)
    for r, q in points:
        if r >= recall:
            best = q if best is None else max(best, q)
    return best


def report(path: Path) -> str:
    res = json.loads(path.read_text())
    out = [f"### {res['dataset']}, {res['code_bytes']} code bytes, {res['threads']} threads, "
           f"k={res['k']}, {res['n_query']} queries in one batch\n",
           "| index | bytes/vector | train s | add s | peak RSS MB | best R@1 | best R@10 | best R@100 |",
           "|---|---|---|---|---|---|---|---|"]
    for run in res["runs"]:
        s = run["search"]
        out.append(f"| {run['index']} | {run['bytes_per_vector']:.1f} | {run['train_s']:.1f} | "
                   f"{run['add_s']:.1f} | {run['peak_rss_mb']:.0f} | "
                   f"{max(p['recall@1'] for p in s):.3f} | {max(p['recall@10'] for p in s):.3f} | "
                   f"{max(p['recall@100'] for p in s):.3f} |")
    runs = {r["system"]: r for r in res["runs"]}
    if "snapline" in runs and "ivfpq" in runs:
        snap = front(runs["snapline"])
        out += ["", "| faiss IVFPQ point | its R@10 | its QPS | snapline QPS at that R@10 | ratio |",
                "|---|---|---|---|---|"]
        for p in runs["ivfpq"]["search"]:
            if p["recall@10"] < 0.5:
                continue
            q = qps_at(snap, p["recall@10"])
            ratio = "below (recall out of reach)" if q is None else f"{q / p['qps']:.2f}x"
            out.append(f"| nprobe={p['params']['nprobe']} | {p['recall@10']:.3f} | "
                       f"{p['qps']:.0f} | {'-' if q is None else f'{q:.0f}'} | {ratio} |")
    out += ["", "Full sweeps (R@1 / R@10 / R@100 / 10-R@10 / QPS):", ""]
    for run in res["runs"]:
        out.append(f"<details><summary>{run['index']}</summary>\n")
        out.append("| params | R@1 | R@10 | R@100 | 10-R@10 | QPS |\n|---|---|---|---|---|---|")
        for p in run["search"]:
            params = " ".join(f"{k}={v}" for k, v in p["params"].items())
            out.append(f"| {params} | {p['recall@1']:.3f} | {p['recall@10']:.3f} | "
                       f"{p['recall@100']:.3f} | {p['10recall@10']:.3f} | {p['qps']:.0f} |")
        out.append("\n</details>\n")
    return "\n".join(out)


if __name__ == "__main__":
    print("\n\n".join(report(Path(p)) for p in sys.argv[1:]))

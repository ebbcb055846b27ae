"""Markdown tables from benchmark results.json files (no stdout parsing).

    .venv/bin/python bench/compare.py bench/out/sift-real-dev-16/results.json ...

For each file: a table of runs (one per system and nlist); each system's Pareto front over
all its configurations and the issue-13 acceptance rule of snapline against every peer
(bench.fronts, the same text as fronts.md); an encoder ablation when it holds several
snapline runs with different encoders (recall at a fixed QPS); the full sweeps.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fronts import fronts_markdown  # noqa: E402


def ablation(res: dict, qps_floor: float) -> list[str]:
    """Encoder ablation: for each snapline run, the sweep point with the best R@10 among
    those at or above `qps_floor` QPS."""
    runs = [r for r in res["runs"] if r["system"] == "snapline" and "encoder" in r]
    if len(runs) < 2:
        return []
    out = ["", f"Encoder ablation at a fixed speed: best R@10 point with QPS >= {qps_floor:,.0f}", "",
           "| encoder | encoder parameters | encode vectors/s | train s | params | R@1 | R@10 | R@100 | QPS | validation R@10 by round |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        fast = [p for p in run["search"] if p["qps"] >= qps_floor]
        rounds = run.get("encoder_rounds") or []
        history = " / ".join(f"{h['val_recall@10']:.3f}" for h in rounds) or "-"
        enc = run["encoder_params"]
        speed = "-" if enc["kind"] == "none" else f"{run['encode_vectors_per_s']:,.0f}"
        if not fast:
            out.append(f"| {run['encoder']} | {enc['parameters']:,} | {speed} | {run['train_s']:.0f} "
                       f"| - | - | - | - | below {qps_floor:,.0f} | {history} |")
            continue
        p = max(fast, key=lambda p: p["recall@10"])
        params = " ".join(f"{k}={v}" for k, v in p["params"].items())
        out.append(f"| {run['encoder']} | {enc['parameters']:,} | {speed} | {run['train_s']:.0f} | "
                   f"{params} | {p['recall@1']:.3f} | {p['recall@10']:.3f} | {p['recall@100']:.3f} | "
                   f"{p['qps']:,.0f} | {history} |")
    return out


def report(path: Path, qps_floor: float = 10_000) -> str:
    res = json.loads(path.read_text())
    out = [f"### {res['dataset']}, {res['code_bytes']} code bytes, {res['threads']} threads, "
           f"k={res['k']}, {res['n_query']} queries in one batch\n",
           "| index | nlist | bytes/vector | bytes measured | train s | add s | sweep s | "
           "peak RSS MB | best R@1 | best R@10 | best R@100 |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in res["runs"]:
        s = run["search"]
        method = run.get("bytes_method", "resident").split(":")[0]
        sweep_s = run.get("wall_s", 0.0) - run["train_s"] - run["add_s"]
        out.append(f"| {run['index']} | {run.get('nlist', '-')} | {run['bytes_per_vector']:.1f} | "
                   f"{method} | {run['train_s']:.1f} | {run['add_s']:.1f} | "
                   f"{sweep_s:.0f} | {run['peak_rss_mb']:.0f} | "
                   f"{max(p['recall@1'] for p in s):.3f} | {max(p['recall@10'] for p in s):.3f} | "
                   f"{max(p['recall@100'] for p in s):.3f} |")
    out += ["", fronts_markdown(res)]
    out += ablation(res, qps_floor)
    out += ["", "Full sweeps (R@1 / R@10 / R@100 / 10-R@10 / QPS):", ""]
    for run in res["runs"]:
        out.append(f"<details><summary>{run['index']} (nlist {run.get('nlist')})</summary>\n")
        out.append("| params | R@1 | R@10 | R@100 | 10-R@10 | QPS |\n|---|---|---|---|---|---|")
        for p in run["search"]:
            params = " ".join(f"{k}={v}" for k, v in p["params"].items())
            out.append(f"| {params} | {p['recall@1']:.3f} | {p['recall@10']:.3f} | "
                       f"{p['recall@100']:.3f} | {p['10recall@10']:.3f} | {p['qps']:.0f} |")
        out.append("\n</details>\n")
    return "\n".join(out)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--qps", type=float, default=10_000, help="speed of the encoder ablation")
    args = parser.parse_args()
    print("\n\n".join(report(p, args.qps) for p in args.results))

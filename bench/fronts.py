"""Pareto fronts of a results.json, per system over all its configurations, and the
acceptance rule of issue 13 (snapline against each peer at no more bytes per vector).

    results = read_json("out/results.json")
    points = system_points(results)                  # {"snapline": [FrontPoint...], ...}
    rule = acceptance(points["snapline"], points["ivfpq"])
    write_fronts("out/results.json")                 # out/fronts.md

A point is on a front if no other point of the same system has both higher-or-equal
recall and higher-or-equal QPS, one of them strictly. A front's QPS at recall x is
step-wise conservative: the highest QPS among its points with recall >= x. fronts.md
ends with the per-stage breakdown of snapline's front (`stage_rows`: the
`stages_ms_per_query` each snapline sweep point records).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from bench.json_records import read_json

__all__ = ["FRONTS_FILE", "REFINE_SYSTEMS", "STAGE_ORDER", "FrontPoint", "acceptance",
           "bytes_label", "fronts_markdown", "pareto", "qps_at_recall", "stage_rows",
           "system_points", "uses_stored_copy", "write_fronts"]

FRONTS_FILE = "fronts.md"
#: peers whose extra bytes are a refinement copy: measured and plotted, held against
#: snapline once snapline has its own refinement (issue 13, acceptance)
REFINE_SYSTEMS = ("ivfpq_fastscan_refine", "ivf_rabitq_fastscan_refine", "scann_reorder")
RECALL_FLOOR = 0.5
RATIO_BAND = (0.8, 0.95)

T = TypeVar("T")


def uses_stored_copy(system: str, params: dict) -> bool:
    """True where a point re-ranks from a stored copy of the vectors (a refinement copy)."""
    return (system in REFINE_SYSTEMS or bool(params.get("refine_factor"))
            or bool(params.get("refine")))


@dataclass(frozen=True)
class FrontPoint:
    recall: float
    qps: float
    bytes_per_vector: float
    index: str = ""
    nlist: int | None = None
    params: dict = field(default_factory=dict, compare=False, hash=False)
    stored_copy: bool = False


def pareto(items: Iterable[T], recall: Callable[[T], float] = lambda p: p.recall,
           qps: Callable[[T], float] = lambda p: p.qps) -> list[T]:
    """The items no other item beats on both recall and QPS, by increasing recall.

    The big-ann-benchmarks way (``plotting/utils.py`` ``create_pointset``): fastest
    first, keep an item only if its recall is above that of every faster one. Items
    with zero recall or zero QPS are left out; of equal points one is kept.
    """
    ordered = sorted(items, key=lambda p: (-qps(p), -recall(p)))
    front, best = [], float("-inf")
    for item in ordered:
        if not recall(item) or not qps(item):
            continue
        if recall(item) > best:
            best = recall(item)
            front.append(item)
    return front


def qps_at_recall(points: Iterable[FrontPoint], x: float,
                  max_bytes: float = math.inf) -> FrontPoint | None:
    """The fastest point with recall >= x and bytes_per_vector <= max_bytes (None: none)."""
    eligible = [p for p in points if p.recall >= x and p.bytes_per_vector <= max_bytes]
    return max(eligible, key=lambda p: (p.qps, p.recall)) if eligible else None


def _system_key(run: dict) -> str:
    encoder = run.get("encoder")
    return run["system"] + ("" if encoder in (None, "none") else f" {encoder}")


def system_points(results: dict, recall_key: str = "recall@10") -> dict[str, list[FrontPoint]]:
    """Every point of every run, grouped by system (snapline runs of another encoder
    than "none" are their own system, e.g. "snapline opq"), in run order."""
    out: dict[str, list[FrontPoint]] = {}
    for run in results["runs"]:
        for p in run["search"]:
            params = p.get("params", {})
            copy = p.get("stored_copy", uses_stored_copy(run["system"], params))
            out.setdefault(_system_key(run), []).append(FrontPoint(
                p[recall_key], p["qps"], run["bytes_per_vector"], run["index"],
                run.get("nlist"), params, copy))
    return out


def bytes_label(points: Iterable[FrontPoint]) -> str:
    """"24 B/vec", or "19.5-26 B/vec" when the configurations differ."""
    values = sorted({round(p.bytes_per_vector, 1) for p in points})
    if not values:
        return "-"
    return f"{values[0]:g} B/vec" if len(values) == 1 else f"{values[0]:g}-{values[-1]:g} B/vec"


def _grid(low: float, high: float, step: float = 0.01) -> list[float]:
    return [round(low + i * step, 6) for i in range(int(round((high - low) / step)) + 1)]


def acceptance(snapline: list[FrontPoint], peer: list[FrontPoint],
               floor: float = RECALL_FLOOR, band: tuple[float, float] = RATIO_BAND,
               match_bytes: bool = True) -> dict:
    """Issue 13's rule for snapline against one peer, counting only snapline points
    whose bytes_per_vector is at most that of the peer point they are held against.

    (a) ``above``: at every recall x >= floor the peer's front reaches, snapline's QPS
    at recall >= x (among its points of <= the bytes of the peer's point there) is at
    least the peer's. Checking the peer's front points of recall >= floor is enough: on
    each step of the peer's front snapline's step-wise QPS is lowest at the step's end.
    ``worst_ratio`` is the lowest snapline/peer QPS ratio there (0 where snapline does
    not reach that recall at those bytes), ``short`` the points where it is below 1.
    (b) ``band_min``/``band_max``: the ratio of QPS over recall x in band (step 0.01)
    where the peer reaches x; None where snapline does not, counted as ratio 0.
    ``match_bytes=False`` drops the bytes condition (the speed gap alone, for context).
    """
    if not match_bytes:
        snapline = [replace(p, bytes_per_vector=-math.inf) for p in snapline]
    front = pareto(peer)
    checks = []
    for p in front:
        if p.recall < floor:
            continue
        s = qps_at_recall(snapline, p.recall, p.bytes_per_vector)
        checks.append((p, 0.0 if s is None else s.qps / p.qps))
    band_ratios = []
    for x in _grid(*band):
        p = qps_at_recall(front, x)
        if p is None:
            continue
        s = qps_at_recall(snapline, x, p.bytes_per_vector)
        band_ratios.append((x, 0.0 if s is None else s.qps / p.qps))
    worst = min(checks, key=lambda c: c[1]) if checks else None
    return {
        "above": bool(checks) and all(ratio >= 1.0 for _, ratio in checks),
        "checked": len(checks),
        "worst_ratio": None if worst is None else worst[1],
        "worst_at": None if worst is None else worst[0].recall,
        "short": [{"recall": p.recall, "peer_qps": p.qps, "ratio": r,
                   "bytes_per_vector": p.bytes_per_vector} for p, r in checks if r < 1.0],
        "band_min": min(band_ratios, key=lambda c: c[1]) if band_ratios else None,
        "band_max": max(band_ratios, key=lambda c: c[1]) if band_ratios else None,
    }


def _ratio(pair) -> str:
    return "-" if pair is None else f"{pair[1]:.2f}x at {pair[0]:.2f}"


def _front_rows(points: dict[str, list[FrontPoint]]) -> list[str]:
    out = ["| system | configs (nlists) | bytes/vector | front: R@10 / QPS (nlist, params) |",
           "|---|---|---|---|"]
    for system, pts in points.items():
        nlists = sorted({p.nlist for p in pts if p.nlist is not None})
        front = " ; ".join(
            f"{p.recall:.3f} / {p.qps:,.0f} ({p.nlist}, "
            + " ".join(f"{k}={v}" for k, v in p.params.items()) + ")" for p in pareto(pts))
        out.append(f"| {system} | {len(pts)} ({','.join(map(str, nlists))}) | "
                   f"{bytes_label(pts)} | {front} |")
    return out


def _acceptance_rows(snap: list[FrontPoint], peers: dict[str, list[FrontPoint]]) -> list[str]:
    """One row per peer (a peer with refinement-copy points gets a second row with them),
    then the front of all held peers together (the best peer at each recall)."""
    groups = []
    refines = any(p.stored_copy for p in snap)   # snapline has its own refinement (issue 15)
    for system, pts in peers.items():
        held = [p for p in pts if not p.stored_copy]
        if held:
            groups.append((system, "yes", held))
        if len(held) < len(pts):
            groups.append((system, "yes: refinement copy" if refines
                           else "not yet: refinement copy", pts))
    envelope = [p for _, label, group in groups if label.startswith("yes") for p in group]
    if len(peers) > 1 and envelope:
        groups.append(("best peer (all held peers)", "yes", envelope))
    out = ["| peer | peer bytes/vector | held against snapline | (a) above from 0.5 | "
           "worst ratio (at R) | (b) min ratio (at R) | (b) max ratio (at R) | "
           "(b) at any bytes: min / max |",
           "|---|---|---|---|---|---|---|---|"]
    for system, label, group in groups:
        rule = acceptance(snap, group)
        verdict = "no points >= 0.5" if not rule["checked"] else (
            "yes" if rule["above"] else f"no ({len(rule['short'])} of {rule['checked']} short)")
        worst = ("-" if rule["worst_ratio"] is None
                 else f"{rule['worst_ratio']:.2f}x at {rule['worst_at']:.3f}")
        free = acceptance(snap, group, match_bytes=False)
        out.append(f"| {system} | {bytes_label(group)} | {label} | {verdict} | "
                   f"{worst} | {_ratio(rule['band_min'])} | {_ratio(rule['band_max'])} | "
                   f"{_ratio(free['band_min'])} / {_ratio(free['band_max'])} |")
    return out


#: the stages in search order (VLQIndex.search(stages=...)); others follow by name
STAGE_ORDER = ("coarse", "tables", "lines", "lines+tables", "scan", "rerank", "merge")


def _front_points(results: dict, recall_key: str) -> list[tuple[dict, dict]]:
    points = [(run, point) for run in results["runs"] if run["system"] == "snapline"
              and run.get("encoder", "none") in (None, "none") for point in run["search"]]
    return pareto(points, recall=lambda rp: rp[1][recall_key], qps=lambda rp: rp[1]["qps"])


def stage_rows(results: dict, recall_key: str = "recall@10") -> list[str]:
    """Markdown lines: snapline's front points with the ms per query of each stage; []
    when no snapline point recorded stages."""
    front = [(run, p) for run, p in _front_points(results, recall_key)
             if p.get("stages_ms_per_query")]
    if not front:
        return []
    seen = {name for _, p in front for name in p["stages_ms_per_query"]}
    names = [s for s in STAGE_ORDER if s in seen] + sorted(seen - set(STAGE_ORDER))
    out = [f"Per-stage wall time on snapline's front (ms per query, {results['threads']} "
           f"thread(s), whole query set in one batch; one extra search call per point):", "",
           "| config | params | " + recall_key + " | QPS | " + " | ".join(names)
           + " | sum |", "|---" * (5 + len(names)) + "|"]
    for run, p in front:
        stages = p["stages_ms_per_query"]
        params = " ".join(f"{k}={v}" for k, v in p["params"].items())
        cells = [f"{stages[n]:.4f}" if n in stages else "" for n in names]
        out.append(f"| {run['index']} | {params} | {p[recall_key]:.3f} | {p['qps']:,.0f} | "
                   + " | ".join(cells) + f" | {sum(stages.values()):.4f} |")
    return out


def fronts_markdown(results: dict, recall_key: str = "recall@10") -> str:
    """fronts.md: each system's front over all its configurations, then the rule."""
    points = system_points(results, recall_key)
    out = [f"### {results['dataset']}: {results['code_bytes']} code bytes, "
           f"{results['threads']} threads, k={results['k']}, {recall_key}", ""]
    out += _front_rows(points)
    snap = points.get("snapline")
    peers = {s: pts for s, pts in points.items() if not s.startswith("snapline")}
    if snap and peers:
        out += ["", f"Acceptance (issue 13): snapline points counted only at <= the peer "
                    f"point's bytes/vector; (a) at or above the peer's front at every "
                    f"{recall_key} >= {RECALL_FLOOR}; (b) snapline/peer QPS over "
                    f"{recall_key} {RATIO_BAND[0]}-{RATIO_BAND[1]} (min, max; target 1.5x).", ""]
        out += _acceptance_rows(snap, peers)
    stages = stage_rows(results, recall_key)
    out += ["", *stages] if stages else []
    skipped = results.get("skipped") or []
    failed = results.get("failed") or []
    out += [""] + [f"- skipped {s['system']}: {s['reason']}" for s in skipped]
    out += [f"- failed {f['system']} nlist={f['nlist']}: {f['error']}" for f in failed]
    return "\n".join(out).rstrip() + "\n"


def write_fronts(results_json: str | Path, path: str | Path | None = None) -> Path:
    """Write fronts.md (default: beside results_json) from the file on disk; its path."""
    results_json = Path(results_json)
    path = results_json.parent / FRONTS_FILE if path is None else Path(path)
    path.write_text(fronts_markdown(read_json(results_json)))
    return path

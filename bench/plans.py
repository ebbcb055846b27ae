"""What each system of a run builds: its sizes and its search-parameter sweep.

Every IVF-based system, snapline included, is built at several nlist values (one child
process and one results.json run per (system, nlist)): the powers of two from about
n/1024 to n/128 (:func:`nlist_range`), capped so that the learn set gives every centroid
>= MIN_POINTS_PER_CENTROID points. snapline's VLQ has nlist * nedge lists, so its range
starts one power of two lower.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from bench.config import BenchConfig, System
from indexer.sizing import MIN_POINTS_PER_CENTROID

__all__ = ["SNAPLINE_RERANK_FACTORS", "VLQ_NLINES_FACTORS", "VLQ_NPROBES", "SystemPlan",
           "nlist_range", "plan_systems"]

logger = logging.getLogger(__name__)

#: snapline sweep: nprobe values, and nlines as multiples of nprobe (capped at nprobe*nedge)
VLQ_NPROBES = (2, 4, 8, 16, 32, 64, 128)
VLQ_NLINES_FACTORS = (2, 4, 8, 16)
#: 4-bit snapline: exact re-ranking of f * k candidates
SNAPLINE_RERANK_FACTORS = (1, 2)
#: snapline with a vector store: refinement of f * k candidates by the stored vectors
SNAPLINE_REFINE_FACTORS = (1, 2, 4)


@dataclass(frozen=True)
class SystemPlan:
    """What one child process builds: the system, its sizes and its sweep."""

    system: System
    index: str  # human-readable description, also the plot legend
    nlist: int
    sweep: tuple[dict, ...]
    factory: str | None = None  # faiss index_factory string
    nedge: int | None = None
    encoder: str = "none"
    pq_bits: int = 8            # snapline: 4 (fast scan + re-rank) or 8 bits per code
    variant: str = ""           # peers: e.g. "dims_per_block=3" (scann), "RaBitQ bits=1";
                                # snapline: "refine" (a vector store, `refine` swept)


def _power_of_two_near(x: float) -> int:
    return 2 ** max(0, round(math.log2(max(x, 1.0))))


def nlist_range(n_base: int, n_learn: int, shift: int = 0) -> list[int]:
    """Powers of two from ~n_base/1024 to ~n_base/128, times 2**shift, each leaving
    >= MIN_POINTS_PER_CENTROID learn points per centroid (the largest such power if none
    of the range does)."""
    if n_base < 1 or n_learn < 1:
        raise ValueError(f"need n_base >= 1 and n_learn >= 1, got {n_base} and {n_learn}")
    low = _power_of_two_near(n_base / 1024) * 2.0 ** shift
    high = _power_of_two_near(n_base / 128) * 2.0 ** shift
    values = []
    p = max(1, int(low))
    while p <= high:
        values.append(p)
        p *= 2
    kept = [p for p in values if MIN_POINTS_PER_CENTROID * p <= n_learn]
    if not kept:
        kept = [2 ** max(0, int(math.log2(max(1, n_learn // MIN_POINTS_PER_CENTROID))))]
    if len(kept) < len(values):
        logger.info("nlist %s dropped: the %d learn vectors give fewer than %d per centroid",
                    [p for p in values if p not in kept], n_learn, MIN_POINTS_PER_CENTROID)
    return kept


def _snapline_sweep(nlist: int, nedge: int, pq_bits: int, k: int,
                    refine: bool = False) -> tuple[dict, ...]:
    probes = [p for p in VLQ_NPROBES if p <= nlist] or [nlist]
    points = [{"nprobe": p, "nlines": n} for p in probes
              for n in sorted({min(f * p, p * nedge) for f in VLQ_NLINES_FACTORS})]
    if refine:
        return tuple({**point, "refine": f * k} for point in points
                     for f in SNAPLINE_REFINE_FACTORS)
    if pq_bits == 4:
        points = [{**point, "rerank": f * k} for point in points for f in SNAPLINE_RERANK_FACTORS]
    return tuple(points)


def _snapline_plans(cfg: BenchConfig, nlists: list[int]) -> list[SystemPlan]:
    """One plan per (nlist, nedge, pq_bits, encoder spec); an nedge lowered to nlist - 1
    when nlist is too small for it (once, if two values meet there)."""
    plans = []
    for nlist in nlists:
        if nlist < 2:
            raise ValueError(f"VLQ needs nlist >= 2, got nlist={nlist}")
        nedges = []
        for wanted in cfg.nedges:
            nedge = min(wanted, nlist - 1)
            if nedge != wanted:
                logger.warning("nedge=%d needs nlist > nedge; using nedge=%d for nlist=%d",
                               wanted, nedge, nlist)
            if nedge not in nedges:
                nedges.append(nedge)
        for nedge, bits, refine in ((e, b, r) for e in nedges for b in cfg.pq_bits
                                    for r in (False, True)[:1 + cfg.refine]):
            sweep = _snapline_sweep(nlist, nedge, bits, cfg.k, refine)
            pq = f"PQ{cfg.code_bytes}" if bits == 8 else f"PQ{2 * cfg.code_bytes}x4"
            plans.extend(SystemPlan("snapline", f"VLQ nlist={nlist} nedge={nedge} {pq}"
                                    + ("" if spec == "none" else f" {spec}")
                                    + (" +refine" if refine else ""),
                                    nlist, sweep, nedge=nedge, encoder=spec, pq_bits=bits,
                                    variant="refine" if refine else "")
                         for spec in cfg.encoders)
    return plans


def _nlists_of(cfg: BenchConfig, system: str, n_base: int, n_learn: int) -> list[int]:
    if system == "snapline":
        if cfg.nlist_vlq is not None:
            return [cfg.nlist_vlq]
        return list(cfg.nlists) if cfg.nlists else [
            p for p in nlist_range(n_base, n_learn, shift=-1) if p >= 2] or [2]
    if cfg.ivf_nlist is not None:
        return [cfg.ivf_nlist]
    return list(cfg.nlists) if cfg.nlists else nlist_range(n_base, n_learn)


def plan_systems(cfg: BenchConfig, n_base: int, n_learn: int, d: int
                 ) -> tuple[list[SystemPlan], list[dict]]:
    """Plans of every requested system at each of its nlists, plus what does not apply.

    A skipped entry is ``{"system", "reason"}`` (and ``"nlist"`` when only that nlist is
    skipped): a factory whose sub-quantizers do not divide d, a peer whose package is
    not installed (the `bench` extra).
    """
    # imported here: bench.peer_plans reads faiss' code sizes, bench.config stays light
    from bench.peer_plans import lancedb_nlists, peer_plan

    plans, skipped = [], []
    for system in cfg.systems:
        nlists = _nlists_of(cfg, system, n_base, n_learn)
        if system == "snapline":
            plans.extend(_snapline_plans(cfg, nlists))
            continue
        if system == "lancedb_ivfpq":
            nlists, dropped = lancedb_nlists(nlists, n_base)
            for nlist in dropped:
                reason = (f"LanceDB trains at most n/256 = {n_base // 256} partitions "
                          f"(its default sample_rate), not {nlist}")
                logger.warning("skipping %s nlist=%d: %s", system, nlist, reason)
                skipped.append({"system": system, "nlist": nlist, "reason": reason})
        for nlist in nlists:
            plan, reason = peer_plan(system, nlist, d, cfg)
            if plan is None:
                logger.warning("skipping %s: %s", system, reason)
                skipped.append({"system": system, "reason": reason})
                break   # the reason does not depend on nlist
            plans.append(plan)
    return plans, skipped

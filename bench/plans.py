"""What each system of a run builds: its sizes and its search-parameter sweep."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from bench.config import BenchConfig, System
from indexer.sizing import ivf_nlist_for, vlq_nlist_for

__all__ = ["VLQ_NLINES_FACTORS", "VLQ_NPROBES", "SystemPlan", "plan_systems"]

logger = logging.getLogger(__name__)

#: snapline sweep: nprobe values, and nlines as multiples of nprobe (capped at nprobe*nedge)
VLQ_NPROBES = (2, 4, 8, 16, 32, 64, 128)
VLQ_NLINES_FACTORS = (2, 3, 4, 6, 8, 12, 16)


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


def _powers_of_two(low: int, high: int) -> list[int]:
    out, p = [], low
    while p <= high:
        out.append(p)
        p *= 2
    return out


def _snapline_plans(cfg: BenchConfig, ivf_nlist: int, n_learn: int) -> list[SystemPlan]:
    """One plan per encoder spec; nedge lowered to nlist - 1 when nlist is too small."""
    nlist = cfg.nlist_vlq or vlq_nlist_for(ivf_nlist, n_learn)
    if nlist < 2:
        raise ValueError(f"VLQ needs nlist >= 2, got nlist={nlist} for n_learn={n_learn}")
    nedge = min(cfg.nedge, nlist - 1)
    if nedge != cfg.nedge:
        logger.warning("nedge=%d needs nlist > nedge; using nedge=%d for nlist=%d",
                       cfg.nedge, nedge, nlist)
    probes = [p for p in VLQ_NPROBES if p <= nlist] or [nlist]
    sweep = tuple({"nprobe": p, "nlines": n} for p in probes
                  for n in sorted({min(f * p, p * nedge) for f in VLQ_NLINES_FACTORS}))
    m = cfg.code_bytes
    return [SystemPlan("snapline", f"VLQ nlist={nlist} nedge={nedge} PQ{m}"
                       + ("" if spec == "none" else f" {spec}"),
                       nlist, sweep, nedge=nedge, encoder=spec)
            for spec in cfg.encoders]


def _faiss_factory(system: System, ivf_nlist: int, m: int) -> tuple[str, int]:
    """The index_factory string, and the number d must be a multiple of."""
    # PQ "np": no polysemous training, which only serves polysemous_ht filtering (off here)
    if system == "ivfpq_fastscan":
        return f"IVF{ivf_nlist},PQ{2 * m}x4fs", 2 * m
    if system == "opq_ivfpq":
        return f"OPQ{m},IVF{ivf_nlist},PQ{m}np", m
    return f"IVF{ivf_nlist},PQ{m}np", m


def plan_systems(cfg: BenchConfig, n_base: int, n_learn: int, d: int
                 ) -> tuple[list[SystemPlan], list[dict]]:
    """Sizes and sweeps of every requested system, plus the ones that do not apply.

    Sizes given in cfg are used as they are; ``None`` ones follow the production rules
    of :mod:`indexer.sizing` (``ivf_nlist_for``, then ``vlq_nlist_for`` of the IVF nlist
    in use). nedge is lowered to nlist - 1 when the VLQ nlist is too small for it.
    """
    ivf_nlist = cfg.ivf_nlist or ivf_nlist_for(n_base, n_learn)
    faiss_sweep = tuple({"nprobe": p} for p in _powers_of_two(1, min(256, ivf_nlist)))
    plans, skipped = [], []
    for system in cfg.systems:
        if system == "snapline":
            plans.extend(_snapline_plans(cfg, ivf_nlist, n_learn))
            continue
        factory, needs = _faiss_factory(system, ivf_nlist, cfg.code_bytes)
        if d % needs:
            reason = f"{factory} needs d % {needs} == 0, d={d}"
            logger.warning("skipping %s: %s", system, reason)
            skipped.append({"system": system, "reason": reason})
            continue
        plans.append(SystemPlan(system, factory, ivf_nlist, faiss_sweep, factory=factory))
    return plans, skipped

"""The peers' plans: faiss index_factory strings, ScaNN and LanceDB settings, sweeps.

Each peer is set the way its users set it at a code budget of ``code_bytes`` bytes:
8-bit PQ with code_bytes sub-quantizers, 4-bit fast-scan PQ with 2 * code_bytes (plus an
SQ8 refinement copy), RaBitQ at the bit count whose code (factors included) is closest to
but not above the budget (1 bit if none fits), ScaNN's anisotropic 4-bit AH with
2 * code_bytes blocks, LanceDB IVF_PQ with code_bytes sub-vectors.
"""
from __future__ import annotations

import importlib.util
import logging

import faiss

from bench.config import PEER_PACKAGES, BenchConfig
from bench.plans import SystemPlan

__all__ = ["FAISS_SYSTEMS", "REFINE_K_FACTORS", "RABITQ_QBS", "lancedb_nlists", "peer_plan",
           "rabitq_bits"]

logger = logging.getLogger(__name__)

FAISS_SYSTEMS = ("ivfpq", "opq_ivfpq", "ivfpq_fastscan", "ivfpq_fastscan_refine",
                 "ivf_rabitq", "ivf_rabitq_fastscan", "ivf_rabitq_fastscan_refine")
#: IndexRefine's k_factor: the refinement stage re-ranks k_factor * k candidates
REFINE_K_FACTORS = (1, 2, 4, 8)
#: RaBitQ's query quantization bits
RABITQ_QBS = (4, 8)
#: ScaNN with reordering: pre-reorder candidates as multiples of k
SCANN_REORDER_FACTORS = (1, 2, 4)
#: LanceDB refine_factor (None: no refinement from the stored vectors; 1: the k found
#: re-ranked exactly; 4 measured no better than 2 at k=100, at twice its ~5 s per call)
LANCEDB_REFINE_FACTORS = (None, 1, 2)
#: LanceDB's default IVF sample_rate: it trains at most n / 256 partitions
LANCEDB_SAMPLE_RATE = 256


def _probes(nlist: int) -> list[int]:
    out, p = [], 1
    while p <= min(256, nlist):
        out.append(p)
        p *= 2
    return out


def rabitq_bits(d: int, code_bytes: int, fastscan: bool = False) -> tuple[int, int]:
    """(bits, code size) of the RaBitQ whose code is closest to but not above code_bytes;
    1 bit when even that is above the budget."""
    sizes = {}
    for bits in range(1, 9):
        name = ("RaBitQfs" if fastscan else "RaBitQ") + ("" if bits == 1 else str(bits))
        sizes[bits] = faiss.extract_index_ivf(faiss.index_factory(d, f"IVF1,{name}")).code_size
    fitting = [bits for bits, size in sizes.items() if size <= code_bytes]
    bits = max(fitting, key=sizes.get) if fitting else 1
    return bits, sizes[bits]


def _faiss_plan(system: str, nlist: int, d: int, m: int) -> tuple[SystemPlan | None, str]:
    probes = _probes(nlist)
    if system.startswith("ivf_rabitq"):
        fastscan = "fastscan" in system
        refine = system.endswith("refine")
        bits, size = rabitq_bits(d, m, fastscan)
        name = ("RaBitQfs" if fastscan else "RaBitQ") + ("" if bits == 1 else str(bits))
        factory = f"IVF{nlist},{name}" + (",Refine(SQ8)" if refine else "")
        fit = (f"within the {m} B budget" if size <= m
               else f"over the {m} B budget: no bit count fits")
        index = f"{factory} ({bits} bit: {size} B code, {fit})"
        sweep = tuple({"nprobe": p, "qb": qb} for p in probes for qb in RABITQ_QBS)
        if refine:
            sweep = tuple({**point, "k_factor": f} for point in sweep for f in REFINE_K_FACTORS[:2])
        return SystemPlan(system, index, nlist, sweep, factory=factory,
                          variant=f"bits={bits}"), ""
    # PQ "np": no polysemous training, which only serves polysemous_ht filtering (off here)
    factory, needs = {
        "ivfpq": (f"IVF{nlist},PQ{m}np", m),
        "opq_ivfpq": (f"OPQ{m},IVF{nlist},PQ{m}np", m),
        "ivfpq_fastscan": (f"IVF{nlist},PQ{2 * m}x4fs", 2 * m),
        "ivfpq_fastscan_refine": (f"IVF{nlist},PQ{2 * m}x4fs,Refine(SQ8)", 2 * m),
    }[system]
    if d % needs:
        return None, f"{factory} needs d % {needs} == 0, d={d}"
    if system == "ivfpq_fastscan_refine":
        sweep = tuple({"nprobe": p, "k_factor": f} for p in probes for f in REFINE_K_FACTORS)
    else:
        sweep = tuple({"nprobe": p} for p in probes)
    return SystemPlan(system, factory, nlist, sweep, factory=factory), ""


def _scann_plan(system: str, nlist: int, d: int, cfg: BenchConfig
                ) -> tuple[SystemPlan | None, str]:
    blocks = 2 * cfg.code_bytes        # 4-bit AH: two blocks per code byte
    if d % blocks:
        return None, f"ScaNN AH with {blocks} 4-bit blocks needs d % {blocks} == 0, d={d}"
    dims = d // blocks
    probes = _probes(nlist)
    if system == "scann_reorder":
        sweep = tuple({"leaves_to_search": p, "reorder": f * cfg.k}
                      for p in probes for f in SCANN_REORDER_FACTORS)
        tail = ", reorder int8"
    else:
        sweep = tuple({"leaves_to_search": p} for p in probes)
        tail = ""
    index = f"ScaNN tree{nlist} AH{blocks}x4 (dims_per_block={dims}, aniso 0.2){tail}"
    return SystemPlan(system, index, nlist, sweep, variant=f"dims_per_block={dims}"), ""


def lancedb_nlists(nlists: list[int], n_base: int) -> tuple[list[int], list[int]]:
    """(kept, dropped): LanceDB trains at most n_base / 256 partitions (its default
    sample_rate), so larger nlists are dropped; if none is left, the largest power of two
    it trains is kept."""
    top = max(1, n_base // LANCEDB_SAMPLE_RATE)
    kept = [nlist for nlist in nlists if nlist <= top]
    dropped = [nlist for nlist in nlists if nlist > top]
    if not kept:
        kept = [2 ** (top.bit_length() - 1)]
    return kept, dropped


def _lancedb_plan(nlist: int, d: int, cfg: BenchConfig) -> tuple[SystemPlan | None, str]:
    m = cfg.code_bytes
    if d % m:
        return None, f"LanceDB IVF_PQ with num_sub_vectors={m} needs d % {m} == 0, d={d}"
    sweep = tuple({"nprobes": p, "refine_factor": r}
                  for p in _probes(nlist) for r in LANCEDB_REFINE_FACTORS)
    return SystemPlan("lancedb_ivfpq", f"LanceDB IVF{nlist},PQ{m}", nlist, sweep,
                      variant=f"num_sub_vectors={m}"), ""


def peer_plan(system: str, nlist: int, d: int, cfg: BenchConfig
              ) -> tuple[SystemPlan | None, str]:
    """The plan of one peer at one nlist, or (None, why it is skipped)."""
    package = PEER_PACKAGES.get(system)
    if package is not None and importlib.util.find_spec(package) is None:
        return None, (f"package {package!r} is not installed "
                      f"(pip install -e '.[bench]' installs the peers)")
    if system in FAISS_SYSTEMS:
        return _faiss_plan(system, nlist, d, cfg.code_bytes)
    if system in ("scann", "scann_reorder"):
        return _scann_plan(system, nlist, d, cfg)
    if system == "lancedb_ivfpq":
        return _lancedb_plan(nlist, d, cfg)
    raise ValueError(f"no plan for system {system!r}")

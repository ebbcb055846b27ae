"""One system under test behind one interface.

Every runner has ``train(x)``, ``add(x)``, ``search(q, k, params) -> (D, I)``, ``ntotal``
and ``bytes_per_vector`` (measured from what the system holds, after the base is added),
and optionally ``bytes_method`` (what the bytes measure), ``bytes_detail`` (bytes by part),
``finish_add()`` (a build step after the last add, timed with the adds),
``stage_seconds(q, k, params) -> {stage: seconds}`` (per-stage time of the whole query set)
and ``close()`` (temporary files). Peers' packages are imported only in their child.
"""
from __future__ import annotations

from bench.config import BenchConfig
from bench.faiss_runners import FAISS_ID_BYTES, FaissRunner
from bench.plans import SystemPlan

__all__ = ["FAISS_ID_BYTES", "FaissRunner", "make_runner"]


def make_runner(d: int, plan: SystemPlan, cfg: BenchConfig):
    """The runner of plan's system."""
    if plan.system == "snapline":
        # imported only for snapline: torch stays out of a faiss child's peak RSS
        from bench.snapline_runner import SnaplineRunner

        return SnaplineRunner(d, plan, cfg)
    if plan.system in ("scann", "scann_reorder"):
        from bench.scann_runner import ScannRunner

        return ScannRunner(d, plan, cfg)
    if plan.system == "lancedb_ivfpq":
        from bench.lancedb_runner import LanceDBRunner

        return LanceDBRunner(d, plan, cfg)
    if plan.factory is None:
        raise ValueError(f"{plan.system}: a faiss plan needs a factory string, got None")
    return FaissRunner(d, plan.factory, cfg.metric)

"""One system under test behind one interface: train, add, search, ntotal, bytes_per_vector."""
from __future__ import annotations

import faiss

from bench.config import BenchConfig
from bench.plans import SystemPlan

__all__ = ["FAISS_ID_BYTES", "FaissRunner", "make_runner"]

#: bytes of the 64-bit id faiss stores next to every code in its inverted lists.
FAISS_ID_BYTES = 8


class FaissRunner:
    def __init__(self, d: int, factory: str):
        self.index = faiss.index_factory(d, factory, faiss.METRIC_L2)
        self.ivf = faiss.extract_index_ivf(self.index)
        self.bytes_per_vector = float(self.ivf.code_size + FAISS_ID_BYTES)

    def train(self, x):
        self.index.train(x)

    def add(self, x):
        self.index.add(x)

    def search(self, q, k, params):
        self.ivf.nprobe = params["nprobe"]
        return self.index.search(q, k)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)


def make_runner(d: int, plan: SystemPlan, cfg: BenchConfig):
    """The runner of plan's system: a FaissRunner, or a bench.snapline_runner.SnaplineRunner."""
    if plan.system == "snapline":
        # imported only for snapline: torch stays out of a faiss child's peak RSS
        from bench.snapline_runner import SnaplineRunner

        return SnaplineRunner(d, plan, cfg)
    return FaissRunner(d, plan.factory)

"""BenchConfig: one benchmark run, validated where it is made."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["PEER_PACKAGES", "SNAPLINE_PQ_BITS", "SYSTEMS", "System", "BenchConfig"]

System = Literal["snapline", "ivfpq", "opq_ivfpq", "ivfpq_fastscan", "ivfpq_fastscan_refine",
                 "ivf_rabitq", "ivf_rabitq_fastscan", "ivf_rabitq_fastscan_refine", "scann",
                 "scann_reorder", "lancedb_ivfpq"]
SYSTEMS: tuple[System, ...] = ("snapline", "ivfpq", "opq_ivfpq", "ivfpq_fastscan",
                               "ivfpq_fastscan_refine", "ivf_rabitq", "ivf_rabitq_fastscan",
                               "ivf_rabitq_fastscan_refine", "scann", "scann_reorder",
                               "lancedb_ivfpq")
#: the package a system needs beyond the base install (the `bench` extra); a system whose
#: package does not import is skipped with that reason
PEER_PACKAGES: dict[str, str] = {"scann": "scann", "scann_reorder": "scann",
                                 "lancedb_ivfpq": "lancedb"}
SNAPLINE_PQ_BITS = (4, 8)


def _default_threads() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run. ``None`` sizes are chosen by :func:`bench.plans.plan_systems`.

    nlist: every IVF-based system is built at each value of ``nlists`` (default: the
    powers of two of :func:`bench.plans.nlist_range`); ``nlist_vlq`` fixes snapline's
    single VLQ nlist and ``ivf_nlist`` the peers' single nlist, over ``nlists``. snapline is
    built at each value of ``nedges`` too (graph edges per centroid, its lines per list).
    """

    data_dir: Path
    out_dir: Path
    code_bytes: int = 16
    threads: int = field(default_factory=_default_threads)
    nlist_vlq: int | None = None
    nedges: tuple[int, ...] = (32,)   # one snapline build per value (and per nlist)
    nlambda: int = 256
    ivf_nlist: int | None = None
    nlists: tuple[int, ...] | None = None
    pq_bits: tuple[int, ...] = SNAPLINE_PQ_BITS   # one snapline run per value
    k: int = 100
    systems: tuple[System, ...] = SYSTEMS
    encoders: tuple[str, ...] = ("none",)   # one snapline run per encoder spec
    repeats: int = 3
    add_batch_size: int = 100_000
    metric: Literal["l2", "ip", "cosine"] = "l2"   # every system ranks by it (gt.ibin's)
    refine: bool = False   # snapline runs with a vector store too, `refine` swept (issue 15)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        object.__setattr__(self, "systems", tuple(self.systems))
        object.__setattr__(self, "encoders", tuple(self.encoders))
        object.__setattr__(self, "pq_bits", tuple(self.pq_bits))
        object.__setattr__(self, "nedges", tuple(self.nedges))
        if self.nlists is not None:
            object.__setattr__(self, "nlists", tuple(self.nlists))
        self._check_sizes()
        if self.metric not in ("l2", "ip", "cosine"):
            raise ValueError(f"metric must be 'l2', 'ip' or 'cosine', got metric={self.metric!r}")
        # imported here, not at the top: a spawned faiss child unpickles a BenchConfig
        # (no __post_init__) and must not load torch, whose pages would count in its RSS
        from trainers.train_encoder import encoder_config_from_spec

        for spec in self.encoders:
            encoder_config_from_spec(spec)   # raises ValueError naming a bad spec
        if not self.encoders or len(set(self.encoders)) != len(self.encoders):
            raise ValueError(f"encoders must name distinct encoder specs, got {self.encoders!r}")
        self._check_systems()

    def _check_sizes(self) -> None:
        for name, low in [("code_bytes", 1), ("threads", 1), ("nlambda", 1),
                          ("k", 1), ("repeats", 1), ("add_batch_size", 1)]:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {name}={value!r}")
        if self.nlambda > 256:
            raise ValueError(f"nlambda must be <= 256 (one lambda byte), got nlambda={self.nlambda}")
        for name, low in [("nlist_vlq", 2), ("ivf_nlist", 1)]:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < low):
                raise ValueError(f"{name} must be None (auto) or an int >= {low}, "
                                 f"got {name}={value!r}")
        if self.nlists is not None and (
                not self.nlists or len(set(self.nlists)) != len(self.nlists)
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 2
                       for v in self.nlists)):
            raise ValueError(f"nlists must be None (auto) or distinct ints >= 2, "
                             f"got nlists={self.nlists!r}")
        if (not self.nedges or len(set(self.nedges)) != len(self.nedges)
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                       for v in self.nedges)):
            raise ValueError(f"nedges must be distinct ints >= 1, got nedges={self.nedges!r}")
        if (not self.pq_bits or len(set(self.pq_bits)) != len(self.pq_bits)
                or any(b not in SNAPLINE_PQ_BITS for b in self.pq_bits)):
            raise ValueError(f"pq_bits must be distinct values among {SNAPLINE_PQ_BITS}, "
                             f"got pq_bits={self.pq_bits!r}")

    def _check_systems(self) -> None:
        if not self.systems:
            raise ValueError("systems must name at least one system, got systems=()")
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown:
            raise ValueError(f"systems={self.systems!r}: unknown {unknown}, choose from {SYSTEMS}")
        if len(set(self.systems)) != len(self.systems):
            raise ValueError(f"systems must not repeat a system, got systems={self.systems!r}")

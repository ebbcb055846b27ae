"""snapline (VLQIndex with its encoder) behind the benchmark's runner interface."""
from __future__ import annotations

import time

import numpy as np

from bench.config import BenchConfig
from bench.plans import SystemPlan
from indexer import VLQIndex
from shards.shape import IndexShape
from trainers.train_encoder import encoder_config_from_spec, train_encoder

__all__ = ["SnaplineRunner"]


def _store_for(x: np.ndarray) -> str:
    """The vector store for refinement: uint8 for byte vectors (read as float32 here: exact
    at one byte a value), else sq8 (one byte a value and two a row: the peers' SQ8
    refinement copies cost as much)."""
    if np.issubdtype(x.dtype, np.integer) or (
            x.size and float(x.min()) >= 0 and float(x.max()) <= 255
            and bool(np.all(x == np.round(x)))):
        return "uint8"
    return "sq8"


class SnaplineRunner:
    def __init__(self, d: int, plan: SystemPlan, cfg: BenchConfig):
        self.encoder_cfg = encoder_config_from_spec(plan.encoder)
        self.shape = IndexShape(d, plan.nlist, plan.nedge, cfg.code_bytes, cfg.nlambda,
                                encoder=self.encoder_cfg.kind, code_dim=self.encoder_cfg.dim_out,
                                pq_bits=getattr(plan, "pq_bits", 8), metric=cfg.metric)
        self.index = None
        self.encoder_metrics: dict = {}
        self.refine = plan.variant == "refine"

    def train(self, x):
        encoder, quantizer, self.encoder_metrics = train_encoder(x, self.shape, self.encoder_cfg)
        self.index = VLQIndex.from_trained(encoder, quantizer, metric=self.shape.metric,
                                           stored_vectors=_store_for(x) if self.refine else None)

    def encoder_report(self, sample: np.ndarray) -> dict:
        """Encoder description and its encode throughput on this machine."""
        encoder = self.index.encoder
        encoder.encode(sample[:1000])
        seconds = float("inf")
        for _ in range(3):  # best of 3
            t0 = time.perf_counter()
            encoder.encode(sample)
            seconds = min(seconds, time.perf_counter() - t0)
        return {"encoder_params": encoder.describe(),
                "encode_vectors_per_s": sample.shape[0] / seconds,
                "encode_backend": getattr(encoder, "backend", "float32"),
                "encoder_rounds": self.encoder_metrics.get("rounds")}

    def add(self, x):
        self.index.add(x)

    def search(self, q, k, params):
        return self.index.search(q, k=k, **params)

    def stage_seconds(self, q, k, params) -> dict[str, float]:
        """Wall seconds of each search stage over the query set (one more search call)."""
        stages: dict[str, float] = {}
        self.index.search(q, k=k, stages=stages, **params)
        return stages

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def bytes_per_vector(self) -> float:
        """Measured from the resident arrays (VLQIndex.bytes_per_vector)."""
        return float(self.index.bytes_per_vector)

    bytes_method = ("resident: codes (with block padding) + lambda bytes + ids + ADC terms "
                    "(8-bit codes) + list offsets + stored vectors (refine runs), from the "
                    "arrays' nbytes, / ntotal")

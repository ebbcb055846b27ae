"""`snapline plan`: a sizing estimate for a billion-scale build (SPEC 5).

Sizes follow from the formats (SPEC 2 and 4) through the same functions that the build and
`snapline serve` check before they launch (cluster.estimate): resident bytes per vector
(PQ code, lambda byte, 64-bit id, float32 ADC term), a stored shard row (code, lambda, id,
list id, before zstd), the model arrays, and the peak memory of the trainer and of one
encode worker. The build time is extrapolated from the per-vector
encode cost measured now, on this machine's CPU with one thread, at the planned nlist,
nedge, dim and code size (random centroids and codebooks: the cost does not depend on
their values). GPU encode speed is not measured here and not claimed.
"""
from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import asdict, dataclass

import numpy as np

from cluster.build.encode_workers import READ_CHUNK_ROWS
from cluster.estimate import (encode_memory, model_bytes, resident_row_bytes, stored_row_bytes,
                              trainer_memory)
from indexer.coarse import build_graph
from indexer.quantizer import VLQQuantizer
from indexer.sizing import blas_controller, ivf_nlist_for, vlq_nlist_for
from shards.shape import IndexShape

GPU_MEM_USABLE = 0.8      # leave 20% of each GPU for the query batch, tables and the runtime


@dataclass(frozen=True)
class PlanConfig:
    n: int
    dim: int
    code_bytes: int = 16
    gpus: int = 8
    gpu_mem_gb: float = 80.0
    nlist: int | None = None          # default: the build's rule for a 1M-row sample
    nedge: int = 32
    sample_size: int = 1_000_000
    rows_per_shard: int = 10_000_000
    encode_workers: int | None = None  # default: this machine's cores
    calibrate_rows: int = 20_000

    def __post_init__(self):
        def flag(key: str) -> str:
            return f"--{key.replace('_', '-')}"

        for key in ("n", "dim", "code_bytes", "gpus", "nedge", "sample_size", "rows_per_shard",
                    "calibrate_rows", "encode_workers", "nlist"):
            value = getattr(self, key)
            if value is None and key in ("encode_workers", "nlist"):
                continue          # defaults: this machine's cores; the build's sizing rule
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{flag(key)} must be an integer > 0, got {value!r}"
                                 + (" (omit --nlist for the automatic size)"
                                    if key == "nlist" else ""))
        if not (isinstance(self.gpu_mem_gb, (int, float)) and math.isfinite(self.gpu_mem_gb)
                and self.gpu_mem_gb > 0):
            raise ValueError(f"--gpu-mem-gb must be a finite number > 0, got {self.gpu_mem_gb!r}")
        if self.nlist is not None and self.nlist < 2:
            raise ValueError(f"--nlist must be >= 2 (lines join two centroids), got {self.nlist}")
        if self.nlist is not None and self.nedge >= self.nlist:
            raise ValueError(f"--nedge/--nlist: nedge must be < nlist (edges go to other "
                             f"centroids), got nedge={self.nedge} with nlist={self.nlist}")
        if self.dim % self.code_bytes:
            raise ValueError(f"--code-bytes {self.code_bytes} must divide --dim {self.dim}")


def measure_encode_cost(dim: int, nlist: int, nedge: int, code_bytes: int, rows: int,
                        seed: int = 0) -> float:
    """Seconds per vector to encode (nearest centroid, line, lambda, PQ) on one thread."""
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((nlist, dim), dtype=np.float32)
    edges, edge_len2 = build_graph(centroids[: min(nlist, 4096)], min(nedge, min(nlist, 4096) - 1))
    reps = math.ceil(nlist / edges.shape[0])
    edges = np.tile(edges, (reps, 1))[:nlist] % nlist
    edge_len2 = np.tile(edge_len2, (reps, 1))[:nlist]
    quantizer = VLQQuantizer(
        centroids=centroids, edges=edges.astype(np.int32), edge_len2=edge_len2,
        lambda_values=np.linspace(-0.5, 1.5, 256, dtype=np.float32),
        pq_codebook=rng.standard_normal((code_bytes, 256, dim // code_bytes), dtype=np.float32))
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    with blas_controller().limit(limits=1):
        import faiss
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            quantizer.encode(x[:1000])     # warm up
            t0 = time.perf_counter()
            quantizer.encode(x)
            return (time.perf_counter() - t0) / rows
        finally:
            faiss.omp_set_num_threads(threads)


def plan(cfg: PlanConfig) -> dict:
    nlist = cfg.nlist or vlq_nlist_for(ivf_nlist_for(cfg.n, cfg.sample_size), cfg.sample_size)
    shape = IndexShape(cfg.dim, nlist, cfg.nedge, cfg.code_bytes)   # refuses nedge >= nlist
    resident_bpv, stored_bpv = resident_row_bytes(shape), stored_row_bytes(shape)
    model = model_bytes(shape)
    resident = cfg.n * resident_bpv + model
    gpus_needed = math.ceil(resident / (cfg.gpu_mem_gb * 1e9 * GPU_MEM_USABLE))
    shards = math.ceil(cfg.n / cfg.rows_per_shard)
    workers = cfg.encode_workers or os.cpu_count() or 1
    per_vector_s = measure_encode_cost(cfg.dim, nlist, cfg.nedge, cfg.code_bytes,
                                       cfg.calibrate_rows)
    build_s = cfg.n * per_vector_s / workers
    return {
        "config": asdict(cfg), "nlist": nlist, "lists": nlist * cfg.nedge,
        "resident_bytes_per_vector": resident_bpv, "resident_bytes": resident,
        "model_bytes": model,
        "trainer_memory_bytes": trainer_memory(shape, cfg.sample_size).bytes,
        "encode_worker_memory_bytes": encode_memory(shape, cfg.rows_per_shard, 1,
                                                    READ_CHUNK_ROWS).bytes,
        "gpus_needed": gpus_needed, "gpus_given": cfg.gpus,
        "fits": gpus_needed <= cfg.gpus,
        "shards": shards, "stored_bytes_per_shard_max": cfg.rows_per_shard * stored_bpv,
        "stored_bytes_max": cfg.n * stored_bpv,
        "encode_s_per_vector_measured": per_vector_s,
        "measured_on": f"{platform.processor() or platform.machine()}, 1 thread, "
                       f"{cfg.calibrate_rows} random {cfg.dim}-d vectors, nlist={nlist}",
        "encode_workers": workers, "build_hours_cpu": build_s / 3600,
    }


def format_plan(p: dict) -> str:
    c = p["config"]
    gb = 1e9
    return "\n".join([
        f"snapline plan: {c['n']:,} vectors, d={c['dim']}, {c['code_bytes']} code bytes, "
        f"nlist={p['nlist']:,} ({p['lists']:,} lists with nedge={c['nedge']})",
        f"  resident: {p['resident_bytes_per_vector']} B/vector -> {p['resident_bytes'] / gb:,.1f} GB "
        f"(model {p['model_bytes'] / gb:.2f} GB)",
        f"  GPUs to hold the lists at {GPU_MEM_USABLE:.0%} of {c['gpu_mem_gb']:g} GB: "
        f"{p['gpus_needed']} ({'fits' if p['fits'] else 'does NOT fit'} on {c['gpus']})",
        f"  memory (checked again before a build launches): trainer "
        f"{p['trainer_memory_bytes'] / gb:.1f} GB for a {c['sample_size']:,}-row sample, each "
        f"encode worker {p['encode_worker_memory_bytes'] / gb:.1f} GB",
        f"  shards: {p['shards']:,} of {c['rows_per_shard']:,} rows, at most "
        f"{p['stored_bytes_per_shard_max'] / gb:.2f} GB each before zstd "
        f"({p['stored_bytes_max'] / gb:,.1f} GB in all)",
        f"  encode cost measured here: {p['encode_s_per_vector_measured'] * 1e6:.1f} us/vector "
        f"({p['measured_on']})",
        f"  build time at that cost on {p['encode_workers']} CPU encode workers: "
        f"{p['build_hours_cpu']:,.1f} h (GPU encode speed not measured on this machine)",
    ])

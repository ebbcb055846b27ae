"""snapline against faiss IVFPQ baselines at the same code size (SPEC 6).

``run_benchmark(BenchConfig(...))`` reads a big-ann-benchmarks folder (base.*,
query.*, learn.* with extension .fbin/.u8bin/.i8bin, and gt.ibin), builds every
system in its own spawned child process (so each run's peak RSS is its own),
sweeps its search parameters, and writes ``out_dir/results.json`` and
``out_dir/recall_qps.png``.

Every system: trained on the learn file (as float32), base added in batches of
``add_batch_size`` rows read from the file, the whole query set searched as one
batch with k = ``cfg.k``. QPS = nq / median wall time of ``repeats`` timed
search calls after one warm-up call (recall is measured on the warm-up result).
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import statistics
import sys
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from indexer.evaluation import evaluate
from indexer.plotting import plot_recall_qps
from shards import open_vectors, read_ground_truth

__all__ = [
    "SYSTEMS",
    "BenchConfig",
    "SystemPlan",
    "find_dataset_files",
    "ivf_nlist_for",
    "vlq_nlist_for",
    "plan_systems",
    "set_threads",
    "run_benchmark",
]

logger = logging.getLogger(__name__)

System = Literal["snapline", "ivfpq", "opq_ivfpq", "ivfpq_fastscan"]
SYSTEMS: tuple[System, ...] = ("snapline", "ivfpq", "opq_ivfpq", "ivfpq_fastscan")
VECTOR_EXTENSIONS = (".fbin", ".u8bin", ".i8bin")
#: faiss warns when k-means gets fewer than 39 training points per centroid.
MIN_POINTS_PER_CENTROID = 39
#: bytes of the 64-bit id faiss stores next to every code in its inverted lists.
FAISS_ID_BYTES = 8
#: snapline sweep: nprobe values, and nlines as multiples of nprobe (capped at nprobe*nedge)
VLQ_NPROBES = (2, 4, 8, 16, 32, 64, 128)
VLQ_NLINES_FACTORS = (2, 3, 4, 6, 8, 12, 16)
QPS_METHOD = "nq / median wall seconds of {repeats} search calls after 1 warm-up; whole query set as one batch"


def _default_threads() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run. ``None`` sizes are chosen by :func:`plan_systems`."""

    data_dir: Path
    out_dir: Path
    code_bytes: int = 16
    threads: int = field(default_factory=_default_threads)
    nlist_vlq: int | None = None
    nedge: int = 32
    nlambda: int = 256
    ivf_nlist: int | None = None
    k: int = 100
    systems: tuple[System, ...] = SYSTEMS
    encoders: tuple[str, ...] = ("none",)   # one snapline run per encoder spec
    repeats: int = 3
    add_batch_size: int = 100_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        object.__setattr__(self, "systems", tuple(self.systems))
        for name, low in [("code_bytes", 1), ("threads", 1), ("nedge", 1), ("nlambda", 1),
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
        object.__setattr__(self, "encoders", tuple(self.encoders))
        from trainers.train_encoder import encoder_config_from_spec
        for spec in self.encoders:
            encoder_config_from_spec(spec)   # raises ValueError naming a bad spec
        if not self.encoders or len(set(self.encoders)) != len(self.encoders):
            raise ValueError(f"encoders must name distinct encoder specs, got {self.encoders!r}")
        if not self.systems:
            raise ValueError("systems must name at least one system, got systems=()")
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown:
            raise ValueError(f"systems={self.systems!r}: unknown {unknown}, choose from {SYSTEMS}")
        if len(set(self.systems)) != len(self.systems):
            raise ValueError(f"systems must not repeat a system, got systems={self.systems!r}")


@dataclass(frozen=True)
class DatasetFiles:
    base: Path
    query: Path
    learn: Path
    gt: Path


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


def find_dataset_files(data_dir: Path) -> DatasetFiles:
    """base.*, query.*, learn.* (.fbin/.u8bin/.i8bin) and gt.ibin in data_dir."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data_dir {data_dir} is not a directory")
    found = {}
    for stem in ("base", "query", "learn"):
        paths = [data_dir / f"{stem}{ext}" for ext in VECTOR_EXTENSIONS
                 if (data_dir / f"{stem}{ext}").is_file()]
        if len(paths) != 1:
            raise FileNotFoundError(
                f"{data_dir} must hold exactly one {stem}{{{','.join(VECTOR_EXTENSIONS)}}}, "
                f"found {[p.name for p in paths]}")
        found[stem] = paths[0]
    gt = data_dir / "gt.ibin"
    if not gt.is_file():
        raise FileNotFoundError(f"{data_dir} has no gt.ibin")
    return DatasetFiles(base=found["base"], query=found["query"], learn=found["learn"], gt=gt)


def _cap_for_training(nlist: int, n_learn: int) -> int:
    """Halve nlist until every centroid gets >= 39 training points (faiss guidance)."""
    while nlist > 1 and n_learn < MIN_POINTS_PER_CENTROID * nlist:
        nlist //= 2
    return nlist


def ivf_nlist_for(n_base: int, n_learn: int) -> int:
    """Power of two nearest 4 sqrt(n_base), lowered until n_learn / nlist >= 39."""
    if n_base < 1 or n_learn < 1:
        raise ValueError(f"need n_base >= 1 and n_learn >= 1, got {n_base} and {n_learn}")
    nlist = 2 ** max(0, round(math.log2(4 * math.sqrt(n_base))))
    return _cap_for_training(nlist, n_learn)


def vlq_nlist_for(ivf_nlist: int, n_learn: int) -> int:
    """Half the IVF nlist (VLQ has nlist * nedge much finer lists), same >= 39 rule."""
    return _cap_for_training(max(1, ivf_nlist // 2), n_learn)


def _powers_of_two(low: int, high: int) -> list[int]:
    out, p = [], low
    while p <= high:
        out.append(p)
        p *= 2
    return out


def plan_systems(cfg: BenchConfig, n_base: int, n_learn: int, d: int
                 ) -> tuple[list[SystemPlan], list[dict]]:
    """Sizes and sweeps of every requested system, plus the ones that do not apply.

    Sizes given in cfg are used as they are; ``None`` ones follow the generic rules
    (:func:`ivf_nlist_for`, then :func:`vlq_nlist_for` of the IVF nlist in use).
    nedge is lowered to nlist - 1 when the VLQ nlist is too small for it.
    """
    m = cfg.code_bytes
    ivf_nlist = cfg.ivf_nlist or ivf_nlist_for(n_base, n_learn)
    faiss_sweep = tuple({"nprobe": p} for p in _powers_of_two(1, min(256, ivf_nlist)))
    plans, skipped = [], []
    # PQ "np": no polysemous training, which only serves polysemous_ht filtering (off here)
    for system in cfg.systems:
        if system == "snapline":
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
            for spec in cfg.encoders:
                name = f"VLQ nlist={nlist} nedge={nedge} PQ{m}" + ("" if spec == "none" else f" {spec}")
                plans.append(SystemPlan(system, name, nlist, sweep, nedge=nedge, encoder=spec))
            continue
        if system == "ivfpq_fastscan":
            factory, needs = f"IVF{ivf_nlist},PQ{2 * m}x4fs", 2 * m
        elif system == "opq_ivfpq":
            factory, needs = f"OPQ{m},IVF{ivf_nlist},PQ{m}np", m
        else:
            factory, needs = f"IVF{ivf_nlist},PQ{m}np", m
        if d % needs:
            reason = f"{factory} needs d % {needs} == 0, d={d}"
            logger.warning("skipping %s: %s", system, reason)
            skipped.append({"system": system, "reason": reason})
            continue
        plans.append(SystemPlan(system, factory, ivf_nlist, faiss_sweep, factory=factory))
    return plans, skipped


def set_threads(n: int) -> dict[str, int]:
    """The same thread count for faiss, and for torch and numba when they are loaded."""
    faiss.omp_set_num_threads(n)
    settings = {"faiss": n}
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
        settings["torch"] = n
    numba = sys.modules.get("numba")
    if numba is not None:
        try:
            numba.set_num_threads(n)
            settings["numba"] = n
        except ValueError as exc:  # n above NUMBA_NUM_THREADS fixed at numba import
            logger.warning("numba threads left at %d: %s", numba.get_num_threads(), exc)
            settings["numba"] = numba.get_num_threads()
    return settings


class _FaissRunner:
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


class _SnaplineRunner:
    def __init__(self, d: int, plan: SystemPlan, cfg: BenchConfig):
        from shards.shape import IndexShape
        from trainers.train_encoder import encoder_config_from_spec

        self.encoder_cfg = encoder_config_from_spec(plan.encoder)
        self.shape = IndexShape(d, plan.nlist, plan.nedge, cfg.code_bytes, cfg.nlambda,
                                encoder=self.encoder_cfg.kind, code_dim=self.encoder_cfg.dim_out)
        self.index = None
        self.encoder_metrics: dict = {}

    def train(self, x):
        from indexer import VLQIndex
        from trainers.train_encoder import train_encoder

        encoder, quantizer, self.encoder_metrics = train_encoder(x, self.shape, self.encoder_cfg)
        self.index = VLQIndex.from_trained(encoder, quantizer)

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

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def bytes_per_vector(self) -> float:
        return float(self.index.bytes_per_vector)


def _read_float32(path: Path, start: int = 0, stop: int | None = None) -> np.ndarray:
    reader = open_vectors(str(path))
    return np.ascontiguousarray(reader.read(start, reader.n if stop is None else stop),
                                dtype=np.float32)


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def _run_system(cfg: BenchConfig, plan: SystemPlan, log_level: int) -> dict:
    """Build, fill and sweep one system; runs in its own spawned process."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=log_level, format="%(asctime)s %(processName)s %(message)s")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(cfg.threads)  # read by torch if it loads later
    files = find_dataset_files(cfg.data_dir)
    base = open_vectors(str(files.base))
    d = base.d
    if plan.system == "snapline":
        runner = _SnaplineRunner(d, plan, cfg)
    else:
        runner = _FaissRunner(d, plan.factory)
    set_threads(cfg.threads)
    run = {"system": plan.system, "index": plan.index, "nlist": plan.nlist,
           "startup_rss_mb": _peak_rss_mb()}  # interpreter + imports, before any data
    if plan.nedge is not None:
        run.update(nedge=plan.nedge, nlambda=cfg.nlambda)

    learn = _read_float32(files.learn)
    t0 = time.perf_counter()
    runner.train(learn)
    run["train_s"] = time.perf_counter() - t0
    del learn
    logger.info("%s: trained on %s in %.1f s", plan.index, files.learn.name, run["train_s"])

    if plan.system == "snapline":
        run.update(runner.encoder_report(np.ascontiguousarray(
            base.read(0, min(base.n, 100_000)), dtype=np.float32)), encoder=plan.encoder)
        # add() streams internally: hand it the whole base in its file dtype and trace
        # only what add() allocates above that input array (the memory check)
        base_rows = base.read(0, base.n)
        tracemalloc.start()
        t0 = time.perf_counter()
        runner.add(base_rows)
        run["add_alloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        del base_rows
    else:
        t0 = time.perf_counter()
        for i0 in range(0, base.n, cfg.add_batch_size):
            batch = base.read(i0, min(base.n, i0 + cfg.add_batch_size))
            runner.add(np.ascontiguousarray(batch, dtype=np.float32))
            del batch
    run["add_s"] = time.perf_counter() - t0
    if runner.ntotal != base.n:
        raise RuntimeError(f"{plan.index}: ntotal={runner.ntotal} after adding {base.n} vectors")
    run["ntotal"] = runner.ntotal
    run["bytes_per_vector"] = runner.bytes_per_vector
    run["index_mb"] = runner.ntotal * runner.bytes_per_vector / 2**20
    logger.info("%s: added %d vectors in %.1f s", plan.index, base.n, run["add_s"])

    queries = _read_float32(files.query)
    gt_ids, _ = read_ground_truth(str(files.gt))
    run["thread_settings"] = set_threads(cfg.threads)  # again: torch/numba may load lazily
    run["search"] = []
    for params in plan.sweep:
        _, I = runner.search(queries, cfg.k, params)
        seconds = []
        for _ in range(cfg.repeats):
            t0 = time.perf_counter()
            runner.search(queries, cfg.k, params)
            seconds.append(time.perf_counter() - t0)
        median = statistics.median(seconds)
        point = {"params": dict(params), **evaluate(I, gt_ids),
                 "qps": queries.shape[0] / median, "search_s": median}
        run["search"].append(point)
        logger.info("%s %s: R@1 %.3f R@10 %.3f R@100 %.3f 10-R@10 %.3f %.0f QPS",
                    plan.index, params, point["recall@1"], point["recall@10"],
                    point["recall@100"], point["10recall@10"], point["qps"])
    run["peak_rss_mb"] = _peak_rss_mb()
    return run


def _write_json(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def run_benchmark(cfg: BenchConfig) -> dict:
    """Run every system of cfg, write results.json and recall_qps.png, return the results."""
    files = find_dataset_files(cfg.data_dir)
    base, query, learn = (open_vectors(str(p)) for p in (files.base, files.query, files.learn))
    if not base.d == query.d == learn.d:
        raise ValueError(f"dimensions differ: base d={base.d}, query d={query.d}, learn d={learn.d}")
    gt_ids, _ = read_ground_truth(str(files.gt))
    if gt_ids.shape[0] != query.n:
        raise ValueError(f"gt.ibin has {gt_ids.shape[0]} rows for {query.n} queries: {gt_ids.shape}")
    if cfg.k > base.n:
        raise ValueError(f"k={cfg.k} exceeds the {base.n} base vectors")
    plans, skipped = plan_systems(cfg, base.n, learn.n, base.d)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    results = {
        "dataset": cfg.data_dir.resolve().name,
        "n_base": base.n, "n_query": query.n, "n_learn": learn.n, "dim": base.d,
        "dtype": str(np.dtype(base.dtype)),
        "threads": cfg.threads, "code_bytes": cfg.code_bytes, "k": cfg.k,
        "gt_k": int(gt_ids.shape[1]), "search_batch": query.n,
        "qps_method": QPS_METHOD.format(repeats=cfg.repeats),
        "peak_rss_method": "ru_maxrss of a spawned child process that runs only that system",
        "add_alloc_method": "snapline: tracemalloc peak during one add() of the whole base "
                            "(input array read before tracing; numpy allocations only; "
                            "add_s includes tracemalloc overhead)",
        "faiss_version": faiss.__version__,
        "config": {key: str(value) if isinstance(value, Path) else value
                   for key, value in asdict(cfg).items()},
        "runs": [], "skipped": skipped,
    }
    log_level = logging.getLogger().getEffectiveLevel()
    for plan in plans:
        logger.info("%s: building %s (%d threads)", plan.system, plan.index, cfg.threads)
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            run = pool.submit(_run_system, cfg, plan, log_level).result()
        logger.info("%s: train %.1f s, add %.1f s, peak RSS %.0f MB, %.1f bytes/vector",
                    plan.index, run["train_s"], run["add_s"], run["peak_rss_mb"],
                    run["bytes_per_vector"])
        results["runs"].append(run)
        _write_json(results, cfg.out_dir / "results.json")  # partial results survive a crash
    _write_json(results, cfg.out_dir / "results.json")
    plot_recall_qps(results, cfg.out_dir / "recall_qps.png")
    return results

"""A big-ann-benchmarks data folder: base.*, query.*, learn.* and gt.ibin (SPEC 6), and
the metric its ground truth is for.

    make_metric_set("deep-real-dev", "deep-ip-dev", metric="ip")   # the issue's IP set

A folder's `metric.json` names the metric of its gt.ibin (none: l2). `make_metric_set`
writes a copy whose base and learn rows are scaled by a seeded per-row factor (uniform in
`scale`), so that inner-product order differs from L2 order on a unit-norm set, with the
queries unchanged and the ground truth recomputed by brute force for the metric.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.evaluation import exact_ground_truth
from indexer.refine import check_metric, normalize_rows
from shards import open_vectors, read_ground_truth, write_ground_truth, write_vectors

__all__ = ["METRIC_FILE", "VECTOR_EXTENSIONS", "DatasetFiles", "check_dataset_metric",
           "find_dataset_files", "make_metric_set", "metric_rows", "read_float32"]

METRIC_FILE = "metric.json"

VECTOR_EXTENSIONS = (".fbin", ".u8bin", ".i8bin")


@dataclass(frozen=True)
class DatasetFiles:
    base: Path
    query: Path
    learn: Path
    gt: Path


def find_dataset_files(data_dir: str | Path) -> DatasetFiles:
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


def read_float32(path: Path, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows start..stop (default: to the end) of a vector file, as contiguous float32."""
    reader = open_vectors(str(path))
    return np.ascontiguousarray(reader.read(start, reader.n if stop is None else stop),
                                dtype=np.float32)


def metric_rows(x: np.ndarray, metric: str) -> np.ndarray:
    """float32 rows as a peer that knows only L2 or inner product needs them for `metric`:
    normalised for cosine, as they are otherwise."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return normalize_rows(x, "vectors") if metric == "cosine" else x


def dataset_metric(data_dir: str | Path) -> dict | None:
    """The record of `metric.json` in data_dir (its gt.ibin's metric), or None."""
    path = Path(data_dir) / METRIC_FILE
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or "metric" not in doc:
        raise ValueError(f"{path}: expected a mapping with 'metric', got {doc!r}")
    check_metric(doc["metric"])
    return doc


def check_dataset_metric(data_dir: str | Path, metric: str, rows: int = 1000) -> None:
    """Refuse to benchmark `metric` against a ground truth made for another one. A folder
    without metric.json holds l2 ground truth, which is also the ip and cosine one when
    its base rows are unit-norm (checked on the first `rows`)."""
    recorded = dataset_metric(data_dir)
    have = "l2" if recorded is None else recorded["metric"]
    if have == metric:
        return
    if recorded is None:
        files = find_dataset_files(data_dir)
        norms = np.linalg.norm(read_float32(files.base, 0, min(rows, open_vectors(
            str(files.base)).n)), axis=1)
        if np.allclose(norms, 1.0, atol=1e-3):
            return
    raise ValueError(f"{data_dir}: its gt.ibin is for metric {have!r}, the benchmark asks for "
                     f"{metric!r}; make a set for it (`snapline bench --scale-rows DIR "
                     f"--metric {metric}`, bench.dataset_files.make_metric_set)")


def make_metric_set(src_dir: str | Path, dst_dir: str | Path, metric: str = "ip",
                    scale: tuple[float, float] = (0.5, 2.0), seed: int = 0,
                    k: int | None = None) -> Path:
    """Write dst_dir: src_dir's base and learn rows each times a seeded factor uniform in
    `scale` (float32 .fbin), its queries unchanged, gt.ibin recomputed by brute force for
    `metric` (k: src's gt width), and metric.json recording how. An existing dst_dir with
    the same record is kept as it is."""
    check_metric(metric)
    low, high = float(scale[0]), float(scale[1])
    if not 0 < low <= high:
        raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale!r}")
    src, dst = find_dataset_files(src_dir), Path(dst_dir)
    record = {"metric": metric, "source": str(Path(src_dir).resolve()), "scale": [low, high],
              "seed": int(seed), "scaled": ["base", "learn"]}
    existing = dataset_metric(dst) if dst.is_dir() else None
    if existing is not None and {key: existing.get(key) for key in record} == record \
            and (k is None or existing.get("k") == k):
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scaled = {}
    for name in ("base", "learn"):
        x = read_float32(getattr(src, name))
        scaled[name] = x * rng.uniform(low, high, size=(x.shape[0], 1)).astype(np.float32)
        write_vectors(dst / f"{name}.fbin", scaled[name])
    query = read_float32(src.query)
    write_vectors(dst / "query.fbin", query)
    gt_width = read_ground_truth(str(src.gt))[0].shape[1] if k is None else k
    D, I = exact_ground_truth(scaled["base"], query, min(gt_width, scaled["base"].shape[0]),
                              metric=metric)
    write_ground_truth(str(dst / "gt.ibin"), I, D)
    (dst / METRIC_FILE).write_text(json.dumps({**record, "k": int(I.shape[1])}, indent=1))
    return dst

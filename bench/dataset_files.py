"""A big-ann-benchmarks data folder: base.*, query.*, learn.* and gt.ibin (SPEC 6)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shards import open_vectors

__all__ = ["VECTOR_EXTENSIONS", "DatasetFiles", "find_dataset_files", "read_float32"]

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

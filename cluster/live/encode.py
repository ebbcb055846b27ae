"""Encode stage of an append: source row ranges -> encoded rows gathered on the driver.

The build's machinery (cluster.build.encode_workers): the source cut into row-range
partitions (`PartitionDatasource`), one Ray Data actor pool whose actors load the model
once. Unlike the build's, these actors write nothing: `RowEncoder` (a plain class, no Ray
in it) returns each partition's list ids, lambdas, codes and, when the index keeps stored
vectors, the rows cast to its store's dtype; the driver gathers them in source order for
the one `publish_append`. So the driver holds every appended row encoded (the memory
bound stated in cluster.live.append).
"""
from __future__ import annotations

import math

import numpy as np
import ray

from cluster.build.encode_workers import READ_CHUNK_ROWS, PartitionDatasource
from indexer import VLQIndex
from indexer.refine import store_rows
from shards import Store, open_vectors

#: what a batch of RowEncoder carries per row: source row, list id, lambda, code bytes,
#: and the stored vector's bytes (uint8 view, so any store dtype crosses Ray Data alike)
COLUMNS = ("row", "list_id", "lambda", "code", "vector")


def part_rows(n_rows: int, workers: int) -> int:
    """Rows per partition: every worker gets one, at most a read chunk each."""
    return max(1, min(READ_CHUNK_ROWS, math.ceil(n_rows / max(workers, 1))))


class RowEncoder:
    """Partitions (part, start, stop) in, their encoded rows out: the callable of a
    map_batches actor pool, and a plain class. `stored` is the index's vector store dtype
    (None: no stored vectors)."""

    def __init__(self, store: Store, model_version: str, source: dict, stored: str | None):
        self.index = VLQIndex.from_model(store, model_version)
        self.reader = open_vectors(source["uri"], source.get("format"), store.storage_options,
                                   column=source.get("column"))
        self.stored = stored

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = [self.encode(int(a), int(b)) for a, b in zip(batch["start"], batch["stop"])]
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    def encode(self, start: int, stop: int) -> dict[str, np.ndarray]:
        x = self.reader.read(start, stop)
        try:
            list_ids, lambda_idx, codes = self.index.encode(x)
        except ValueError as exc:         # a bad row: name the file and where its rows start
            raise ValueError(f"--source {self.reader.uri}, rows [{start}, {stop}) counted "
                             f"from {start}: {exc}") from None
        out = {"row": np.arange(start, stop, dtype=np.int64),
               "list_id": list_ids.astype(np.uint32), "lambda": lambda_idx.astype(np.uint8),
               "code": codes}
        if self.stored is not None:
            kept = store_rows(x, self.stored, f"--source {self.reader.uri}", start)
            out["vector"] = kept.view(np.uint8).reshape(kept.shape[0], -1)
        return out


def encode_on_ray(*, store: Store, model_version: str, source: dict, n_rows: int, dim: int,
                  stored: str | None, workers: int, cpus_per_worker: float,
                  gpus_per_worker: float) -> dict[str, np.ndarray]:
    """Encode rows [0, n_rows) of the source on the connected Ray: (list_ids,
    lambda_idx, codes, vectors or None) in source row order."""
    # a bad row (NaN, a value a uint8 store cannot hold) raises its own ValueError, not
    # Ray Data's UserCodeException: bad input, exit 2 (cluster.exit_status)
    ray.data.DataContext.get_current().raise_original_map_exception = True
    datasource = PartitionDatasource(n_rows, part_rows(n_rows, workers))
    ds = ray.data.read_datasource(datasource, override_num_blocks=len(datasource.parts),
                                  num_cpus=0)
    encoded = ds.map_batches(
        RowEncoder, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(workers, len(datasource.parts))),
        num_cpus=cpus_per_worker, **({"num_gpus": gpus_per_worker} if gpus_per_worker else {}),
        fn_constructor_kwargs=dict(store=store, model_version=model_version, source=source,
                                   stored=stored))
    chunks: dict[str, list[np.ndarray]] = {}
    try:
        for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
            for key, value in batch.items():
                chunks.setdefault(key, []).append(np.asarray(value))
    except ValueError as exc:       # RayTaskError(ValueError): the actor's own first line
        cause = getattr(exc, "cause", None) or exc
        raise ValueError(str(cause.args[0] if cause.args else cause).splitlines()[0]) from None
    rows = np.concatenate(chunks.pop("row"))
    order = np.argsort(rows, kind="stable")
    if not np.array_equal(rows[order], np.arange(n_rows)):
        raise RuntimeError(f"encode stage returned {rows.size} rows, expected each of "
                           f"0..{n_rows - 1} once")
    out = {key: np.concatenate(chunks[key])[order] for key in ("list_id", "lambda", "code")}
    vectors = None
    if stored is not None:
        raw = np.ascontiguousarray(np.concatenate(chunks["vector"])[order])
        vectors = raw.view(np.dtype(stored)).reshape(n_rows, dim)
    return {"list_ids": out["list_id"], "lambda_idx": out["lambda"], "codes": out["code"],
            "vectors": vectors}

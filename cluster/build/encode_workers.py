"""Encode stage of the build: source row-range partitions -> Parquet shards (SPEC 5).

`PartitionDatasource` is a Ray Data datasource whose rows are partition descriptors
(part number, first row, end row) of the source; `ShardEncoder` is the callable class of
a `map_batches` actor pool (a plain class; `RayShardEncoder` adds the actor's ids): each
actor loads the model once, then turns each partition into one shard (read the rows in chunks, encode, write the part through shards/). The
vectors never pass through the object store, so an actor holds one partition's codes at
a time and a partition is one retryable unit of work.
"""
from __future__ import annotations

import logging
import resource
import time

import numpy as np
import pyarrow as pa
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from indexer import VLQIndex
from shards import IndexRoot, open_vectors
from shards.shard_file import ShardMeta
from shards.shard_writer import find_part, write_part

log = logging.getLogger(__name__)

READ_CHUNK_ROWS = 65_536


def partitions(n_rows: int, rows_per_shard: int) -> list[tuple[int, int, int]]:
    """(part number, start, stop) of every partition of [0, n_rows)."""
    return [(i, start, min(n_rows, start + rows_per_shard))
            for i, start in enumerate(range(0, n_rows, rows_per_shard))]


class PartitionDatasource(Datasource):
    """Row-range partitions of a source, one descriptor row per partition."""

    def __init__(self, n_rows: int, rows_per_shard: int):
        super().__init__()
        self.parts = partitions(n_rows, rows_per_shard)

    def estimate_inmemory_data_size(self) -> int:
        return 24 * len(self.parts)

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None,
                       data_context=None) -> list[ReadTask]:
        groups = np.array_split(np.arange(len(self.parts)), max(1, min(parallelism, len(self.parts))))
        tasks = []
        for group in groups:
            rows = [self.parts[i] for i in group.tolist()]
            table = pa.table({"part": [r[0] for r in rows], "start": [r[1] for r in rows],
                              "stop": [r[2] for r in rows]})
            meta = BlockMetadata(num_rows=len(rows), size_bytes=table.nbytes, exec_stats=None,
                                 input_files=None)
            tasks.append(ReadTask(lambda table=table: [table], meta))
        return tasks


class ShardEncoder:
    """Partitions in, one written (or already present) shard each out: the callable of a
    map_batches actor pool, and a plain class (no Ray in it). `node` and `worker` label
    the result rows (RayShardEncoder fills them with the actor's node and actor ids)."""

    def __init__(self, root: IndexRoot, version: str, model_version: str, source: dict, *,
                 node: str = "", worker: str = ""):
        self.root, self.version = root, version
        self.node, self.worker = node, worker
        self.index = VLQIndex.from_model(root.store, model_version)
        self.reader = open_vectors(source["uri"], source.get("format"),
                                   root.store.storage_options, column=source.get("column"))
        self.meta = dict(model_version=model_version, shape=self.index.shape,
                         source_uri=source["uri"])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = [self._encode_part(int(p), int(a), int(b))
               for p, a, b in zip(batch["part"], batch["start"], batch["stop"])]
        return {key: np.array([row[key] for row in out]) for key in out[0]}

    def _encode_part(self, number: int, start: int, stop: int) -> dict:
        t0 = time.perf_counter()
        meta = ShardMeta(**self.meta, row_start=start, row_stop=stop)
        entry = find_part(self.root, self.version, number, meta)
        skipped = entry is not None
        if entry is None:
            parts = [self.index.encode(self.reader.read(s, min(stop, s + READ_CHUNK_ROWS)))
                     for s in range(start, stop, READ_CHUNK_ROWS)]
            list_ids, lambda_idx, codes = (np.concatenate(p) for p in zip(*parts))
            entry = write_part(self.root, self.version, number,
                               np.arange(start, stop, dtype=np.int64), list_ids, lambda_idx,
                               codes, meta)
        return {"part": number, "path": entry.path, "rows": entry.rows, "bytes": entry.bytes,
                "sha256": entry.sha256, "skipped": skipped,
                "seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(),
                "node": self.node, "worker": self.worker}


class RayShardEncoder(ShardEncoder):
    """ShardEncoder in a Ray actor: the actor's node and actor ids label its rows."""

    def __init__(self, **kwargs):
        context = ray.get_runtime_context()
        super().__init__(**kwargs, node=context.get_node_id(),
                         worker=context.get_actor_id() or "")


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (what an encode result row reports)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # KiB on Linux


def encode_partitions(*, root: IndexRoot, version: str, model_version: str, source: dict,
                      n_rows: int, rows_per_shard: int, workers: int, cpus_per_worker: float,
                      gpus_per_worker: float) -> list[dict]:
    """Run the encode stage; returns one result row per partition, in part order."""
    source_parts = PartitionDatasource(n_rows, rows_per_shard)
    nparts = len(source_parts.parts)
    ds = ray.data.read_datasource(source_parts, override_num_blocks=nparts,
                                  num_cpus=0)  # descriptors only
    encoded = ds.map_batches(
        RayShardEncoder, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker, **({"num_gpus": gpus_per_worker} if gpus_per_worker else {}),
        fn_constructor_kwargs=dict(root=root, version=version, model_version=model_version,
                                   source=source))
    rows = sorted(encoded.take_all(), key=lambda r: int(r["part"]))
    seen = [int(r["part"]) for r in rows]
    if seen != list(range(nparts)):
        raise RuntimeError(f"encode stage returned parts {seen}, expected 0..{nparts - 1}")
    return rows

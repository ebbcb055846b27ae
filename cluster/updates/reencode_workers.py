"""The encode stage of a re-encode: shard i of the base version -> part i of the new one.

`ShardReencoder` is the callable class of a Ray Data `map_batches` actor pool (a plain
class; `RayShardReencoder` adds the actor's ids), as the build's `ShardEncoder` is: each
actor loads the new model and the base's tombstone set once, then for each shard number
reads the shard (verified), drops its tombstoned rows, takes the vectors of the others
(the stored `vector` column, else the source rows the plan names, read in chunks),
encodes them and writes the part with the same ids, attribute rows and stored vectors.
A finished part (same number, same metadata, named by its content) is found and skipped
on a rerun, so a killed re-encode resumes where it stopped.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np
import pyarrow as pa
import ray

from cluster.build.encode_workers import READ_CHUNK_ROWS, peak_rss_mb
from cluster.updates.reencode_plan import ReencodePlan, ShardInput
from indexer import VLQIndex
from shards import IndexRoot, open_vectors
from shards.loading import check_columns, read_part
from shards.manifest import ShardEntry
from shards.shard_file import ShardMeta
from shards.shard_writer import encode_part, find_part, save_part
from shards.tombstones import read_tombstones
from shards.vector_store import decode_rows

log = logging.getLogger(__name__)


class ShardReencoder:
    """Shard numbers in, one written (or already present) part each out."""

    def __init__(self, root: IndexRoot, version: str, plan: ReencodePlan, *,
                 node: str = "", worker: str = ""):
        self.root, self.version, self.plan = root, version, plan
        self.node, self.worker = node, worker
        self.base = root.version_location(plan.base.version)
        self.index = VLQIndex.from_model(root.store, plan.model_version)
        self.tombstones = read_tombstones(self.base, plan.base.tombstones)
        self.readers = {}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = [self._reencode(self.plan.inputs[int(i)]) for i in batch["shard"]]
        return {key: np.array([row[key] for row in out]) for key in out[0]}

    def _reencode(self, shard: ShardInput) -> dict:
        t0 = time.perf_counter()
        meta = replace(shard.meta, model_version=self.plan.model_version, shape=self.plan.shape)
        entry = find_part(self.root, self.version, shard.shard, meta)
        skipped = entry is not None
        if entry is None:
            entry = self._write(shard, meta)
        return {"part": shard.shard, "path": entry.path, "rows": entry.rows,
                "bytes": entry.bytes, "sha256": entry.sha256, "skipped": skipped,
                "dropped": shard.entry.rows - entry.rows,
                "seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(),
                "node": self.node, "worker": self.worker}

    def _write(self, shard: ShardInput, meta: ShardMeta) -> ShardEntry:
        part = read_part(self.base, shard.entry)
        check_columns(self.plan.base, self.base, part, shard.shard)
        live = np.flatnonzero(~np.isin(part.ids.astype(np.uint64), self.tombstones))
        ids = part.ids[live]
        vectors = None if part.vectors is None else part.vectors[live]
        if shard.source is None:
            encoded = self._encode(vectors)
        else:
            encoded = self._encode_from_source(shard, ids)
        attributes = None if part.attributes is None else part.attributes.take(pa.array(live))
        out = encode_part(shard.shard, ids, *encoded, meta, vectors, attributes)
        save_part(self.root.version_location(self.version), out)
        log.info("re-encoded shard %d (%s): %d rows, %d deleted rows dropped", shard.shard,
                 shard.entry.key, ids.shape[0], part.ids.shape[0] - ids.shape[0])
        return out.entry

    def _encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if x.shape[0] == 0:
            return (np.empty(0, np.int64), np.empty(0, np.uint8),
                    np.empty((0, self.plan.shape.code_bytes), np.uint8))
        return self.index.encode(decode_rows(x, self.plan.base.vectors, self.plan.shape.dim))

    def _encode_from_source(self, shard: ShardInput, ids: np.ndarray):
        """Codes of the source rows `ids` (id == source row), in the order of ids: the
        source is read in chunks of READ_CHUNK_ROWS rows, each starting at the next row
        needed (the rows of dropped ids are skipped where they leave a gap)."""
        rows = ids.astype(np.int64)
        n = rows.shape[0]
        if n and (rows.min() < shard.row_start or rows.max() >= shard.row_stop):
            raise ValueError(f"shard {shard.shard} ({shard.entry.key}): ids in [{rows.min()}, "
                             f"{rows.max()}] are not rows [{shard.row_start}, {shard.row_stop}) "
                             f"of its source {shard.source['uri']}; its vectors cannot be read "
                             f"back")
        reader = self._reader(shard.source)
        order = np.argsort(rows, kind="stable")
        wanted = rows[order]
        list_ids, lambda_idx = np.empty(n, np.int64), np.empty(n, np.uint8)
        codes = np.empty((n, self.plan.shape.code_bytes), np.uint8)
        lo = 0
        while lo < n:
            start = int(wanted[lo])
            stop = min(shard.row_stop, start + READ_CHUNK_ROWS)
            hi = int(np.searchsorted(wanted, stop, side="left"))
            at = order[lo:hi]
            list_ids[at], lambda_idx[at], codes[at] = self._encode(
                reader.read(start, stop)[wanted[lo:hi] - start])
            lo = hi
        return list_ids, lambda_idx, codes

    def _reader(self, source: dict):
        if source["uri"] not in self.readers:
            self.readers[source["uri"]] = open_vectors(
                source["uri"], source.get("format"), self.root.store.storage_options,
                column=source.get("column"))
        return self.readers[source["uri"]]


class RayShardReencoder(ShardReencoder):
    """ShardReencoder in a Ray actor: the actor's node and actor ids label its rows."""

    def __init__(self, **kwargs):
        context = ray.get_runtime_context()
        super().__init__(**kwargs, node=context.get_node_id(),
                         worker=context.get_actor_id() or "")


def reencode_shards(*, root: IndexRoot, version: str, plan: ReencodePlan, workers: int,
                    cpus_per_worker: float, gpus_per_worker: float) -> list[dict]:
    """Run the stage (an actor pool of at most `workers`, one shard per task); returns one
    result row per shard of the base, in shard order."""
    nshards = len(plan.inputs)
    ds = ray.data.from_items([{"shard": i} for i in range(nshards)],
                             override_num_blocks=nshards)
    encoded = ds.map_batches(
        RayShardReencoder, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=max(1, min(workers, nshards))),
        num_cpus=cpus_per_worker, **({"num_gpus": gpus_per_worker} if gpus_per_worker else {}),
        fn_constructor_kwargs=dict(root=root, version=version, plan=plan))
    rows = sorted(encoded.take_all(), key=lambda r: int(r["part"]))
    seen = [int(r["part"]) for r in rows]
    if seen != list(range(nshards)):
        raise RuntimeError(f"re-encode stage returned parts {seen}, expected 0..{nshards - 1}")
    return rows

"""Shard searchers: one process holds a group of a published version's shards as
resident inverted lists (on the GPU when the actor has one) and searches query batches.

`ShardSearcher` is a plain class (tested without Ray); `SearcherActor` is the same class
as a Ray actor that Ray restarts when it dies. Which shards a searcher holds is
cluster.serving.routing.shard_groups.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Sequence

import numpy as np
import ray

from cluster.serving.batching import BatchPolicy, ThreadBatcher
from cluster.serving.types import SearchParams, block_rows, check_queries, join_blocks
from indexer import VLQIndex
from indexer.sizing import set_threads
from shards import IndexRoot, Store, load_arrays

log = logging.getLogger(__name__)


class ShardSearcher:
    """Shards `shards` of an index version (a version folder, or an IndexRoot and
    `version`), searchable. Concurrent calls with the same parameters (several clients'
    batches, as an actor with max_concurrency > 1) are searched as one batch (`batching`);
    one search runs at a time."""

    def __init__(self, index: IndexRoot | Store | str, shards: Sequence[int], *,
                 version: str | None = None, backend: str = "auto", threads: int | None = None,
                 batching: BatchPolicy = BatchPolicy()):
        if threads is not None:     # several searchers on one machine share its cores
            set_threads(threads)
        manifest, data = load_arrays(index, list(shards), version=version)
        self.version = manifest.version
        self.shards = tuple(int(s) for s in shards)
        self.index = VLQIndex.from_arrays(data, backend=backend)
        self._search_lock = threading.Lock()
        self._batcher = ThreadBatcher(batching, self._search_batch)
        self._warm_up()
        log.info("searcher %d: version %s shards %s, %d vectors on %s/%s", os.getpid(),
                 self.version, self.shards, self.index.ntotal, self.index.backend,
                 self.index.device)

    def _warm_up(self) -> None:
        """Compile (or load the cached) scan kernel before the first real query."""
        if self.index.ntotal:
            self.index.search(np.zeros((1, self.index.dim), np.float32), 1, 1, 1)

    @property
    def metric(self) -> str:
        """What the index ranks by (indexes from before metrics were recorded: l2)."""
        return getattr(self.index.shape, "metric", "l2")

    def info(self) -> dict:
        return {"version": self.version, "shards": list(self.shards),
                "ntotal": self.index.ntotal, "metric": self.metric,
                "bytes_per_vector": self.index.bytes_per_vector,
                "backend": self.index.backend, "device": self.index.device, "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id() if ray.is_initialized() else None}

    def search(self, queries: np.ndarray, params: SearchParams) -> tuple[np.ndarray, np.ndarray]:
        """This group's k nearest, with the batch's filter and refinement (fewer stored
        or matching vectors than k: padded with -1 ids). A bad filter or refinement is the
        ValueError VLQIndex.search raises, naming it. Queries are checked before they join
        a batch: a bad one is its caller's error only."""
        q = check_queries(queries, self.index.dim)
        return self._batcher.submit(params, q, q.shape[0])

    def _search_batch(self, params: SearchParams, blocks: list[np.ndarray]) -> list:
        q = join_blocks(blocks)
        nq = q.shape[0]
        k_local = min(params.k, self.index.ntotal)
        if k_local == 0:
            D, I = np.full((nq, 0), np.inf, np.float32), np.full((nq, 0), -1, np.int64)
        else:
            options = {"rerank": params.rerank, "filter": params.filter}
            if params.refine is not None:     # re-rank no more candidates than the group holds
                options["refine"] = min(params.refine, self.index.ntotal)
            with self._search_lock:
                D, I = self.index.search(q, k_local, params.nprobe, params.nlines, **options)
        return [(D[rows], I[rows]) for rows in block_rows([b.shape[0] for b in blocks])]


# OpenMP threads (faiss, numba) that spin after each small batch take the cores the
# coordinator and the other searchers need: searchers let them sleep (bench/RESULTS.md
# "Issue 16, first pass": 88% of a core spinning vs 33%). A value set by the user wins.
SEARCHER_ENV = {"env_vars": {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}}
SEARCHER_CONCURRENCY = 64       # calls a searcher actor takes at once (batched together)
SearcherActor = ray.remote(max_restarts=-1, max_task_retries=0,
                           max_concurrency=SEARCHER_CONCURRENCY)(ShardSearcher)

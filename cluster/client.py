"""Python client of a snapline service (SPEC 5).

    from cluster.client import Client
    client = Client.connect(name="sift-demo", address="auto")
    D, I = client.search(queries, k=10, nprobe=32, nlines=256)
    D, I = client.search(queries, k=10, filter="lang = 'en' AND year >= 2020", refine=100)
    client.stats()

Queries are checked here (clear ValueErrors before anything is sent) and again by the
coordinator; what only the searchers can check (a filter's columns and syntax, refinement
without stored vectors) comes back as the ValueError they raised. A result that lacks some
shards raises PartialResultError unless `on_partial="partial"`, which returns it marked
(`result.partial`, `missing_shards`).
"""
from __future__ import annotations

import logging

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from cluster.serving.batching import BatchPolicy, ThreadBatcher
from cluster.serving.coordinator import get_coordinator
from cluster.ray_session import connect
from cluster.serving.types import (NAMESPACE, OnPartial, PartialResultError, SearchParams,
                                 SearchResult, ServiceUnavailableError, check_queries)

log = logging.getLogger(__name__)

REPLY_MARGIN_S = 30.0     # beyond the query timeout, for the round trip itself


class Client:
    """A handle on the coordinator of one index; thread-safe, and one per process is best:
    concurrent searches of its threads with the same parameters travel as one call."""

    def __init__(self, name: str, coordinator, info: dict,
                 batching: BatchPolicy = BatchPolicy()):
        self.name = name
        self._coordinator = coordinator
        self.dim = int(info["dim"])
        self._batcher = ThreadBatcher(batching, self._send_batch)

    @classmethod
    def connect(cls, name: str, address: str | None = "auto", *,
                batch_window_ms: float = 1.0, batch_max_queries: int = 256) -> "Client":
        """Join the Ray cluster at `address` (unless this process already has) and find
        the coordinator of index `name`; ValueError when there is none. While a search of
        this client is in flight, other threads' searches with the same parameters gather
        for up to `batch_window_ms` (0: never) and `batch_max_queries` queries, and go as
        one call; each thread gets its own rows (cluster/serving/batching.py)."""
        batching = BatchPolicy(batch_window_ms, batch_max_queries)
        connect(address, NAMESPACE, log_to_driver=False)
        coordinator = get_coordinator(name)
        info = cls._call(name, coordinator.describe.remote(), timeout=60)
        return cls(name, coordinator, info, batching)

    def search(self, queries: np.ndarray, k: int = 10, nprobe: int = 32, nlines: int = 256, *,
               rerank: int | None = None, filter: str | None = None, refine: int | None = None,
               on_partial: OnPartial = "raise", timeout_s: float | None = None) -> SearchResult:
        """k nearest of every query; unpacks as `D, I` (l2: distances ascending; ip and
        cosine: similarities descending), and carries `.version` (the index version that
        answered) and `.missing_shards`. `rerank`: how many codes per query each shard
        re-ranks with exact ADC (default: 2 k with 4-bit codes, k with 8-bit). `filter`: a
        SQL WHERE clause over the attribute columns; only rows it holds for are returned.
        `refine` (>= k): how many candidates per query each shard re-ranks by the exact
        distance to its stored vectors."""
        if on_partial not in ("raise", "partial"):
            raise ValueError(f"on_partial must be 'raise' or 'partial', got {on_partial!r}")
        if timeout_s is not None and (isinstance(timeout_s, bool) or
                                      not isinstance(timeout_s, (int, float)) or timeout_s <= 0):
            raise ValueError(f"timeout_s must be a number > 0, got {timeout_s!r}")
        q = check_queries(queries, self.dim)
        params = SearchParams(k=k, nprobe=nprobe, nlines=nlines, rerank=rerank, filter=filter,
                              refine=refine)
        result = self._batcher.submit((params, timeout_s), q, q.shape[0])
        if result.partial and on_partial == "raise":
            raise PartialResultError(result)
        return result

    def _send_batch(self, key, blocks: list[np.ndarray]) -> list[SearchResult]:
        params, timeout_s = key
        q = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
        ref = self._coordinator.search.remote(q, params, timeout_s)
        result = self._call(self.name, ref, timeout=(timeout_s or 600.0) + REPLY_MARGIN_S)
        return result.split([b.shape[0] for b in blocks])

    def stats(self) -> dict:
        """The service's: version, shards, searchers, replicas, queries served, batches,
        latency percentiles ...; and under "client" this client's own: searches answered
        and the calls that carried them."""
        stats = self._call(self.name, self._coordinator.stats.remote(), timeout=60)
        stats["client"] = {"searches": self._batcher.requests, "calls": self._batcher.batches}
        return stats

    def reload(self) -> str:
        """Serve the version CURRENT names now (the coordinator also polls it)."""
        return self._call(self.name, self._coordinator.reload.remote(), timeout=None)

    @staticmethod
    def _call(name: str, ref, timeout: float | None):
        try:
            return ray.get(ref, timeout=timeout)
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(exc, ValueError) and isinstance(cause, ValueError):
                raise cause from None           # a bad request: the service's own message
            raise
        except RayActorError as exc:
            raise ServiceUnavailableError(f"the snapline service for index {name!r} is "
                                          f"stopped or unreachable ({type(exc).__name__})") from exc
        except GetTimeoutError as exc:
            raise ServiceUnavailableError(f"the snapline service for index {name!r} did not "
                                          f"answer within {timeout} s") from exc

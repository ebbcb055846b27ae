"""Python client of a snapline service (SPEC 5).

    from cluster.client import Client
    client = Client.connect(name="sift-demo", address="auto")
    D, I = client.search(queries, k=10, nprobe=32, nlines=256)
    D, I = client.search(queries, k=10, filter="lang = 'en' AND year >= 2020", refine=100)
    client.stats()

The client searches the shard searchers itself (one actor hop; cluster/serving/fanout.py)
with the routing the coordinator hands out (the served version's groups and replicas),
refreshed at least every ROUTING_TTL_S; the coordinator stays the control plane (versions,
reloads, stats: the client reports what it counted at each refresh). Concurrent searches
of the client's threads with the same parameters travel as one batch.

Queries are checked here against the served version (clear ValueErrors before anything is
sent); what only the searchers can check (a filter's columns and syntax, refinement without
stored vectors) comes back as the ValueError they raised. A result that lacks some shards
raises PartialResultError unless `on_partial="partial"`, which returns it marked
(`result.partial`, `missing_shards`).
"""
from __future__ import annotations

import collections
import logging
import threading
import time

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from cluster.ray_session import connect
from cluster.serving.batching import BatchPolicy, ThreadBatcher
from cluster.serving.coordinator import CLIENT_COUNTERS, ROUTING_TTL_S, get_coordinator
from cluster.serving.fanout import ReplicaHealth, RoutingChanged, fan_out
from cluster.serving.routing import merge_answers
from cluster.serving.types import (NAMESPACE, OnPartial, PartialResultError, Routing,
                                 SearchParams, SearchResult, ServiceUnavailableError,
                                 join_blocks)
from indexer.merge import ranks_descending

log = logging.getLogger(__name__)

class Client:
    """A handle on one served index; thread-safe, and one per process is best: concurrent
    searches of its threads with the same parameters travel as one batch."""

    def __init__(self, name: str, coordinator, routing: Routing,
                 batching: BatchPolicy = BatchPolicy()):
        self.name = name
        self._coordinator = coordinator
        self._routing, self._routed_at = routing, time.monotonic()
        self._routing_lock = threading.Lock()
        self._health = ReplicaHealth()
        self._batcher = ThreadBatcher(batching, self._send_batch)
        self._counts = collections.Counter()        # since the last report
        self._latency_ms: list[float] = []
        self._batch_sizes: list[int] = []

    @classmethod
    def connect(cls, name: str, address: str | None = "auto", *,
                batch_window_ms: float = 3.0, batch_max_queries: int = 256) -> "Client":
        """Join the Ray cluster at `address` (unless this process already has) and find
        the coordinator of index `name`; ValueError when there is none. While a search of
        this client is in flight, other threads' searches with the same parameters gather
        for up to `batch_window_ms` (0: never) and `batch_max_queries` queries, and go as
        one batch; each thread gets its own rows (cluster/serving/batching.py)."""
        batching = BatchPolicy(batch_window_ms, batch_max_queries)
        connect(address, NAMESPACE, log_to_driver=False)
        coordinator = get_coordinator(name)
        return cls(name, coordinator, cls._call(name, coordinator.routing.remote(), timeout=60),
                   batching)

    @property
    def dim(self) -> int:
        return self._routing.dim

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
        t0 = time.perf_counter()
        if on_partial not in ("raise", "partial"):
            raise ValueError(f"on_partial must be 'raise' or 'partial', got {on_partial!r}")
        params = SearchParams(k=k, nprobe=nprobe, nlines=nlines, rerank=rerank, filter=filter,
                              refine=refine)
        try:
            q = self._current_routing().check(self.name, queries, params, timeout_s)
        except ValueError:
            self._counts["rejected_requests"] += 1
            raise
        result = self._batcher.submit((params, timeout_s), q, q.shape[0])
        self._counts["requests"] += 1
        self._latency_ms.append((time.perf_counter() - t0) * 1e3)
        if result.partial and on_partial == "raise":
            raise PartialResultError(result)
        return result

    def _send_batch(self, key, blocks: list[np.ndarray]) -> list[SearchResult]:
        params, timeout_s = key
        q = join_blocks(blocks)
        return self._search_now(q, params, timeout_s).split([b.shape[0] for b in blocks])

    def _search_now(self, q: np.ndarray, params: SearchParams, timeout_s) -> SearchResult:
        """One batch over every group of the served version (again on the new version if
        the service switched while it ran)."""
        routing = self._current_routing()
        deadline = time.monotonic() + (timeout_s or routing.timeout_s)
        while True:
            routing.check(self.name, q, params, timeout_s)    # may be a newer version
            try:
                parts, failures = fan_out(routing, q, params, deadline, self._health,
                                          lambda: self._refresh().version != routing.version)
                break
            except RoutingChanged:
                routing = self._current_routing()
            except ValueError:
                self._counts["rejected_batches"] += 1
                raise
        self._counts["replica_failures"] += failures
        D, I, missing = merge_answers([shards for shards, _ in routing.groups], parts,
                                      q.shape[0], params.k,
                                      descending=ranks_descending(routing.metric))
        self._counts["batches"] += 1
        self._counts["queries"] += q.shape[0]
        self._batch_sizes.append(q.shape[0])
        if missing:
            self._counts["partial_batches"] += 1
        return SearchResult(D, I, routing.version, missing)

    def _current_routing(self) -> Routing:
        if time.monotonic() - self._routed_at < ROUTING_TTL_S:
            return self._routing
        return self._refresh()

    def _refresh(self) -> Routing:
        """Fetch the routing, reporting what this client counted since the last report."""
        with self._routing_lock:
            report = self._take_report()
            try:
                self._routing = self._call(self.name, self._coordinator.routing.remote(report),
                                           timeout=60)
            except BaseException:
                self._restore_report(report)
                raise
            self._routed_at = time.monotonic()
            return self._routing

    def _take_report(self) -> dict:
        report = {key: self._counts.pop(key, 0) for key in CLIENT_COUNTERS}
        report["latency_ms"], self._latency_ms = self._latency_ms, []
        report["queries_per_batch"], self._batch_sizes = self._batch_sizes, []
        return report

    def _restore_report(self, report: dict) -> None:
        for key in CLIENT_COUNTERS:
            self._counts[key] += report[key]
        self._latency_ms[:0] = report["latency_ms"]
        self._batch_sizes[:0] = report["queries_per_batch"]

    def stats(self) -> dict:
        """The service's: version, shards, searchers, replicas, queries served, batches,
        latency percentiles ... (this client's counts reported first); and under "client"
        this client's own: searches answered and the batches that carried them."""
        self._refresh()
        stats = self._call(self.name, self._coordinator.stats.remote(), timeout=60)
        stats["client"] = {"searches": self._batcher.requests, "calls": self._batcher.batches}
        return stats

    def reload(self) -> str:
        """Serve the version CURRENT names now (the coordinator also polls it)."""
        version = self._call(self.name, self._coordinator.reload.remote(), timeout=None)
        self._refresh()
        return version

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

"""The query coordinator: a named, detached Ray actor that serves one index (SPEC 5).

It owns the serving state (index version, shard groups, searcher actors per group) and
hands it out as a Routing: Python clients fan their batches out to the searchers
themselves (cluster/serving/fanout.py, one actor hop) and report what they counted at each
refresh. It also answers batches sent to it (`search`): fanned out to one live replica of
every group, merged, stamped with the version. A batch reads the state once, so it never
mixes versions; a reload starts the new version's searchers beside the old ones, swaps
the state between two batches and releases the old searchers 2 * ROUTING_TTL_S later,
once the batches it sent them are done.

    start_service(ServeConfig(store, name, searchers=2, replicas=2))   # returns when ready
    get_coordinator(name); stop_service(name)

The coarse step (centroid distances, lookup tables) is not shared: every searcher holds
the whole model and computes it for its batch (bench/RESULTS.md "Serving" measures its
share of a search).
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass

import numpy as np
import ray
from ray.exceptions import RayActorError

from cluster.estimate import refuse_unless_fits, serving_memory
from cluster.ray_session import available_memory, connect
from cluster.serving.batching import AsyncBatcher, BatchPolicy
from cluster.serving.metrics import COUNTERS, ServiceMetrics
from cluster.serving.placement import (alive_nodes, coordinator_placement, replica_cpus,
                                       replica_placement)
from cluster.serving.fanout import ReplicaHealth, fan_out
from cluster.serving.http import start_http
from cluster.serving.routing import merge_answers, shard_groups
from cluster.serving.searcher import SEARCHER_ENV, SearcherActor
from cluster.serving.types import (NAMESPACE, Routing, SearchParams, SearchResult, ServeConfig,
                                   join_blocks)
from indexer.merge import ranks_descending
from shards import IndexRoot, Store, resolve
from shards.registry import mark_serving

log = logging.getLogger(__name__)

LATENCY_WINDOW = 10_000          # batches kept for the latency percentiles
RELEASE_POLL_S = 0.05            # how often a released version's batches are checked
MAX_CONCURRENCY = 256            # query batches in flight in the coordinator
ROUTING_TTL_S = 1.0              # clients refresh their routing at least this often
# what clients that route themselves report (Client._report)
CLIENT_COUNTERS = tuple(c for c in COUNTERS if c != "reloads")


@dataclass(frozen=True, eq=False)
class _Group:
    shards: tuple[int, ...]
    replicas: list                      # searcher actor handles


@dataclass(eq=False)
class _ServingState:
    version: str
    dim: int
    ntotal: int
    nlist: int
    nedge: int
    nshards: int
    groups: list[_Group]
    metric: str = "l2"           # what the searchers rank by: the merge's order
    timeout_s: float = 10.0      # the service's default per batch
    inflight: int = 0

    @property
    def descending(self) -> bool:
        return ranks_descending(self.metric)

    @functools.cached_property
    def routing(self) -> Routing:
        return Routing(self.version, self.dim, self.ntotal, self.nlist, self.nedge, self.metric,
                       tuple((g.shards, tuple(g.replicas)) for g in self.groups), self.timeout_s)


class QueryCoordinator:
    """Serves `cfg.name` from `cfg.store`; see the module docstring."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.root = _index_root(cfg)
        self._state: _ServingState | None = None
        self._load_lock: asyncio.Lock | None = None
        self._poller: asyncio.Task | None = None
        self._metrics = ServiceMetrics(cfg.name, LATENCY_WINDOW)
        self._health = ReplicaHealth()
        self._http, self._http_url = None, None
        self._started = time.time()
        self._last_reload_error: str | None = None
        self._batcher = AsyncBatcher(BatchPolicy(cfg.batch_window_ms,
                                                         cfg.batch_max_queries),
                                     self._send_batch)

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> dict:
        """Load the version CURRENT names (once), start polling CURRENT and the HTTP
        endpoint (cfg.http_port); returns stats."""
        await self._current_state()
        if self.cfg.http_port is not None and self._http is None:
            self._http, self._http_url = await start_http(self, self.cfg.http_host,
                                                          self.cfg.http_port)
            log.info("serving %s over HTTP at %s", self.cfg.name, self._http_url)
        return await self.stats()

    async def _current_state(self) -> _ServingState:
        if self._state is None:
            if self._load_lock is None:
                self._load_lock = asyncio.Lock()
            async with self._load_lock:
                if self._state is None:
                    version = self._published_version()
                    self._state = await self._start_version(version)
                    await self._mark_serving()
                    if self.cfg.poll_s > 0 and self._poller is None:
                        self._poller = asyncio.get_running_loop().create_task(self._poll())
        return self._state

    def _published_version(self) -> str:
        version = self.root.current_version()
        if version is None:
            raise FileNotFoundError(f"index {self.cfg.name!r} has no published version in "
                                    f"{self.cfg.store} (no CURRENT)")
        return version

    async def _start_version(self, version: str) -> _ServingState:
        """Start every searcher of a version and wait until each has loaded its shards."""
        manifest, _, _ = resolve(self.root, version=version)
        groups = []
        nodes = alive_nodes()
        for g, shards in enumerate(shard_groups(len(manifest.shards), self.cfg.searchers)):
            replicas = [SearcherActor.options(
                num_cpus=replica_cpus(self.cfg.searcher_cpus, nodes),
                num_gpus=self.cfg.searcher_gpus,
                runtime_env=SEARCHER_ENV,
                scheduling_strategy=replica_placement(nodes, g, r),
            ).remote(self.root, shards, version=version, backend=self.cfg.backend,
                     threads=self.cfg.searcher_threads,
                     batching=BatchPolicy(self.cfg.batch_window_ms, self.cfg.batch_max_queries,
                                         wait_for_callers=False))
                for r in range(self.cfg.replicas)]
            groups.append(_Group(shards, replicas))
        handles = [h for g in groups for h in g.replicas]
        try:
            try:
                infos = await asyncio.wait_for(
                    asyncio.gather(*[h.info.remote() for h in handles]), self.cfg.load_timeout_s)
            except RayActorError as exc:     # a searcher's constructor failed: bad data
                raise ValueError(f"index {self.cfg.name!r} version {version} does not load: "
                                 f"{exc}") from None
            if any(info["version"] != version for info in infos):
                raise RuntimeError(f"searchers loaded {sorted({i['version'] for i in infos})}, "
                                   f"expected {version}")
            metrics = sorted({info["metric"] for info in infos})
            if len(metrics) != 1:
                raise ValueError(f"index {self.cfg.name!r} version {version}: its shards rank "
                                 f"by different metrics {metrics}")
            ranks_descending(metrics[0])          # a metric this merge knows, or a clear error
        except BaseException:     # a version that does not load: nothing of it left running
            for h in handles:
                ray.kill(h, no_restart=True)
            raise
        log.info("serving %s/%s: %d shards in %d groups x %d replicas", self.cfg.name, version,
                 len(manifest.shards), len(groups), self.cfg.replicas)
        shape = manifest.shape
        return _ServingState(version=version, dim=shape.dim, ntotal=manifest.ntotal,
                             nlist=shape.nlist, nedge=shape.nedge,
                             nshards=len(manifest.shards), groups=groups, metric=metrics[0],
                             timeout_s=self.cfg.timeout_s)

    async def reload(self) -> str:
        """Serve the version CURRENT names now, if it is not the one served; returns it."""
        await self._current_state()
        async with self._load_lock:
            version = self._published_version()
            old = self._state
            if version == old.version:
                return version
            new = await self._start_version(version)
            self._state = new                     # the switch: between two batches
            self._metrics.count("reloads")
            log.info("switched %s from %s to %s", self.cfg.name, old.version, version)
            await self._mark_serving()
        asyncio.get_running_loop().create_task(self._release(old))
        return version

    async def _release(self, state: _ServingState) -> None:
        # clients that route themselves pick the new version up at their next refresh
        # (ROUTING_TTL_S); one that still calls an old searcher after this retries its
        # whole batch on the new version
        await asyncio.sleep(2 * ROUTING_TTL_S)
        while state.inflight:                     # batches that started on it finish on it
            await asyncio.sleep(RELEASE_POLL_S)
        for group in state.groups:
            for handle in group.replicas:
                ray.kill(handle, no_restart=True)
        log.info("released %s/%s", self.cfg.name, state.version)

    async def _mark_serving(self, version: str | None = "current") -> None:
        """Tell the store which version this coordinator serves (retention keeps it)."""
        version = self._state.version if version == "current" and self._state else version
        holder = f"coordinator-{ray.get_runtime_context().get_actor_id() or 'driver'}"
        try:
            await asyncio.to_thread(mark_serving, self.root, holder, version)
        except OSError as exc:      # serving goes on; retention may not see this record
            log.warning("could not record the served version in %s: %s", self.cfg.store, exc)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.poll_s)
            try:
                await self.reload()
                await self._mark_serving()        # heartbeat
                self._last_reload_error = None
            except Exception as exc:              # keep serving the old version
                self._last_reload_error = f"{type(exc).__name__}: {exc}"
                log.warning("reload of %s failed, still serving the old version: %s",
                            self.cfg.name, self._last_reload_error)

    async def shutdown(self) -> None:
        """Release every searcher (the caller then kills this actor)."""
        if self._poller is not None:
            self._poller.cancel()
        if self._http is not None:
            await self._http.cleanup()
            self._http = None
        await self._mark_serving(None)
        if self._state is not None:
            for group in self._state.groups:
                for handle in group.replicas:
                    ray.kill(handle, no_restart=True)
            self._state = None

    # -- queries ---------------------------------------------------------------
    async def search(self, queries: np.ndarray, params: SearchParams,
                     timeout_s: float | None = None) -> SearchResult:
        """Top-k over every shard of one version. Shards that no replica answered within
        the timeout are listed in `missing_shards` (the caller decides what that means).
        Concurrent requests with the same parameters and timeout share one fan-out
        (cfg.batch_window_ms, cfg.batch_max_queries); each gets its own rows."""
        t0 = time.perf_counter()
        state = await self._current_state()
        try:
            q = self._check_request(state, queries, params, timeout_s)
        except ValueError:
            self._metrics.count("rejected_requests")
            raise
        result = await self._batcher.submit((params, timeout_s), q, q.shape[0])
        self._metrics.latencies([(time.perf_counter() - t0) * 1e3])
        self._metrics.count("requests")
        return result

    async def _send_batch(self, key, blocks: list[np.ndarray]) -> list[SearchResult]:
        params, timeout_s = key
        q = join_blocks(blocks)
        result = await self._fan_out(q, params, timeout_s)
        return result.split([b.shape[0] for b in blocks])

    async def _fan_out(self, q: np.ndarray, params: SearchParams,
                       timeout_s: float | None) -> SearchResult:
        """One batch to one replica of every group of the state served now, merged."""
        state = await self._current_state()
        try:       # the state may have changed since the requests were checked
            q = self._check_request(state, q, params, timeout_s)
        except ValueError:
            self._metrics.count("rejected_batches")
            raise
        deadline = time.monotonic() + (timeout_s or self.cfg.timeout_s)
        state.inflight += 1
        try:      # every group's call ends before the batch does (a reload waits for it)
            parts, failures = await asyncio.to_thread(
                fan_out, state.routing, q, params, deadline, self._health, lambda: False)
        except ValueError:                # a bad filter or refine, found by a searcher
            self._metrics.count("rejected_batches")
            raise
        finally:
            state.inflight -= 1
        self._metrics.count("replica_failures", failures)
        D, I, missing = merge_answers([g.shards for g in state.groups], parts, q.shape[0],
                                      params.k, descending=state.descending)
        self._metrics.count("batches")
        self._metrics.count("queries", q.shape[0])
        self._metrics.batches([q.shape[0]])
        if missing:
            self._metrics.count("partial_batches")
        return SearchResult(D, I, state.version, missing)

    def _check_request(self, state, queries, params, timeout_s) -> np.ndarray:
        return state.routing.check(self.cfg.name, queries, params, timeout_s)

    # -- introspection -----------------------------------------------------------
    async def routing(self, report: dict | None = None) -> Routing:
        """The served version's routing, for clients that fan out themselves; `report`
        adds what such a client counted since its last call (CLIENT_COUNTERS, and
        "latency_ms": a list of request latencies) to this service's stats."""
        if report:
            for key in CLIENT_COUNTERS:
                self._metrics.count(key, int(report.get(key, 0)))
            self._metrics.latencies(report.get("latency_ms", ()))
            self._metrics.batches(report.get("queries_per_batch", ()))
        return (await self._current_state()).routing

    async def searchers(self) -> list[dict]:
        """Every searcher of the served version: group, replica, shards, actor handle."""
        s = await self._current_state()
        return [{"group": g, "replica": r, "shards": list(group.shards), "handle": h}
                for g, group in enumerate(s.groups) for r, h in enumerate(group.replicas)]

    async def stats(self) -> dict:
        s = self._state
        counts = self._metrics.counts
        lat = np.asarray(self._metrics.latency_ms, dtype=np.float64)
        pct = ({f"p{p}": float(np.percentile(lat, p)) for p in (50, 90, 99)} if lat.size
               else {})
        sizes = np.asarray(self._metrics.batch_sizes, dtype=np.float64)
        size_pct = ({"mean": float(sizes.mean()), "p50": float(np.percentile(sizes, 50)),
                     "max": int(sizes.max())} if sizes.size else {})
        return {"name": self.cfg.name, "store": self.cfg.store,
                "version": s.version if s else None, "metric": s.metric if s else None,
                "shards": s.nshards if s else 0,
                "ntotal": s.ntotal if s else 0,
                "searchers": len(s.groups) if s else 0, "replicas": self.cfg.replicas,
                "queries_served": counts["queries"], "batches": counts["batches"],
                "requests": counts["requests"],
                "queries_per_batch": {**size_pct, "window_batches": int(sizes.size)},
                "partial_batches": counts["partial_batches"],
                "rejected_batches": counts["rejected_batches"],
                "rejected_requests": counts["rejected_requests"],
                "replica_failures": counts["replica_failures"],
                "reloads": counts["reloads"], "last_reload_error": self._last_reload_error,
                "latency_ms": {**pct, "window_requests": int(lat.size)},
                "http": self._http_url, "node": ray.get_runtime_context().get_node_id(),
                "uptime_s": time.time() - self._started}


def _index_root(cfg: ServeConfig) -> IndexRoot:
    return Store(cfg.store, cfg.storage_options).index(cfg.name)


CoordinatorActor = ray.remote(max_restarts=-1, max_task_retries=0)(QueryCoordinator)


def start_service(cfg: ServeConfig, address: str | None = "auto") -> dict:
    """Start (or find) the detached coordinator of `cfg.name` and its searchers on the
    Ray cluster at `address` (joined unless this process already has); returns its stats
    once every searcher is ready. Refuses before any actor starts when the index has no
    published version or its searchers do not fit in the memory Ray reports free."""
    root = _index_root(cfg)
    version = root.current_version()
    if version is None:   # fail before Ray
        raise FileNotFoundError(f"index {cfg.name!r} has no published version in {cfg.store} "
                                f"(no CURRENT)")
    manifest, _, _ = resolve(root, version=version)
    connect(address, NAMESPACE, log_to_driver=False)
    refuse_unless_fits([_serving_need(manifest, cfg)], available_memory(), f"serving {cfg.name}")
    handle = CoordinatorActor.options(
        name=cfg.name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        max_concurrency=MAX_CONCURRENCY, **coordinator_placement()).remote(cfg)
    try:
        return ray.get(handle.start.remote())
    except BaseException:
        ray.kill(handle, no_restart=True)       # no orphaned detached actor
        raise


def _serving_need(manifest, cfg: ServeConfig):
    groups = shard_groups(len(manifest.shards), cfg.searchers)
    return serving_memory(manifest.shape, [sum(manifest.shards[s].rows for s in g) for g in groups],
                          cfg.replicas)


def get_coordinator(name: str):
    """The running coordinator of index `name`; ValueError naming it when there is none."""
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        raise ValueError(f"no snapline service for index {name!r} on this Ray cluster "
                         f"(namespace {NAMESPACE!r}); start one with `snapline serve`") from None


def stop_service(name: str, address: str | None = "auto") -> None:
    """Release the searchers of index `name`, then kill its coordinator for good."""
    connect(address, NAMESPACE, log_to_driver=False)
    handle = get_coordinator(name)
    try:
        ray.get(handle.shutdown.remote(), timeout=60)
    finally:
        ray.kill(handle, no_restart=True)

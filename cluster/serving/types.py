"""Configs, requests and results of the serving layer (plain dataclasses, no Ray).

`ServeConfig` says what to serve and how (searchers, replicas, timeouts, resources);
`SearchParams` are one query batch's search settings; `SearchResult` is the answer,
stamped with the index version that produced it and the shards that did not answer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from indexer.validation import check_queries  # noqa: F401  (the client's and coordinator's check)

NAMESPACE = "snapline"           # Ray namespace of every serving actor
OnPartial = Literal["raise", "partial"]


class PartialResultError(RuntimeError):
    """Some shards did not answer within the timeout; `.result` holds what did."""

    def __init__(self, result: "SearchResult"):
        super().__init__(f"partial result: shards {list(result.missing_shards)} of index "
                         f"version {result.version} did not answer in time; pass "
                         f"on_partial='partial' to accept partial results")
        self.result = result


class ServiceUnavailableError(ConnectionError):
    """The query coordinator is stopped or unreachable."""


def _positive(value, name: str, kind=int) -> None:
    if isinstance(value, bool) or not isinstance(value, (kind, np.integer) if kind is int
                                                  else (int, float)):
        raise ValueError(f"{name} must be a{'n integer' if kind is int else ' number'}, "
                         f"got {value!r}")
    if value <= 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be > 0{' and finite' if kind is not int else ''}, "
                         f"got {value}")


@dataclass(frozen=True)
class ServeConfig:
    """What the coordinator serves: index `name` of `store`, split into `searchers`
    shard groups, each held by `replicas` searcher actors (searchers x replicas actors)."""

    store: str
    name: str
    searchers: int = 1
    replicas: int = 1
    timeout_s: float = 10.0           # default per query batch
    poll_s: float = 5.0               # how often CURRENT is checked; 0 = only reload()
    load_timeout_s: float = 600.0     # a version's searchers must be ready within this
    searcher_cpus: float = 0.0        # Ray resources per searcher actor
    searcher_gpus: float = 0.0        # > 0: the lists are resident on the GPU (torch)
    searcher_threads: int | None = None   # scan threads per searcher (None: all cores)
    backend: Literal["auto", "numba", "torch"] = "auto"
    batch_window_ms: float = 3.0      # concurrent requests gather this long at most (0: never)
    batch_max_queries: int = 256      # queries per gathered fan-out at most
    http_port: int | None = None      # JSON endpoint on this port (0: a free one; None: none)
    http_host: str = "127.0.0.1"
    storage_options: dict | None = field(default=None, compare=False)

    def __post_init__(self):
        if not self.store or not self.name:
            raise ValueError(f"store and name are required, got store={self.store!r} "
                             f"name={self.name!r}")
        _positive(self.searchers, "searchers")
        _positive(self.replicas, "replicas")
        _positive(self.timeout_s, "timeout_s", float)
        _positive(self.load_timeout_s, "load_timeout_s", float)
        for name in ("poll_s", "searcher_cpus", "searcher_gpus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 \
                    or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.searcher_threads is not None:
            _positive(self.searcher_threads, "searcher_threads")
        if self.backend not in ("auto", "numba", "torch"):
            raise ValueError(f"backend must be 'auto', 'numba' or 'torch', got {self.backend!r}")
        check_batching(self.batch_window_ms, self.batch_max_queries)
        if self.http_port is not None and (isinstance(self.http_port, bool) or not isinstance(
                self.http_port, (int, np.integer)) or not 0 <= self.http_port <= 65535):
            raise ValueError(f"http_port must be a port number in [0, 65535] or None, "
                             f"got {self.http_port!r}")


def check_batching(window_ms, max_queries) -> None:
    """batch_window_ms a number in [0, 1000], batch_max_queries an integer >= 1."""
    if isinstance(window_ms, bool) or not isinstance(window_ms, (int, float)) \
            or not math.isfinite(window_ms) or not 0 <= window_ms <= 1000:
        raise ValueError(f"batch_window_ms must be a number in [0, 1000] (0: no batching), "
                         f"got {window_ms!r}")
    if isinstance(max_queries, bool) or not isinstance(max_queries, (int, np.integer)) \
            or max_queries < 1:
        raise ValueError(f"batch_max_queries must be an integer >= 1, got {max_queries!r}")


@dataclass(frozen=True)
class SearchParams:
    """One query batch's search settings, as every searcher passes them to VLQIndex.search."""

    k: int = 10
    nprobe: int = 32
    nlines: int = 256
    rerank: int | None = None   # 4-bit codes: codes re-ranked exactly (None: VLQIndex default)
    filter: str | None = None   # SQL WHERE clause over the attribute columns (None: all rows)
    refine: int | None = None   # candidates re-ranked by the exact distance to stored vectors

    def __post_init__(self):
        for name in ("k", "nprobe", "nlines"):
            _positive(getattr(self, name), name)
        if self.rerank is not None:
            _positive(self.rerank, "rerank")
        if self.filter is not None and (not isinstance(self.filter, str)
                                        or not self.filter.strip()):
            raise ValueError(f"filter must be a non-empty SQL WHERE clause string or None, "
                             f"got {self.filter!r}")
        if self.refine is not None:
            _positive(self.refine, "refine")
            if self.refine < self.k:
                raise ValueError(f"refine must be >= k (the candidates re-ranked by exact "
                                 f"distance include the k returned), got refine={self.refine} "
                                 f"with k={self.k}")


def join_blocks(blocks: list[np.ndarray]) -> np.ndarray:
    """The query blocks of a batch's requests as one (nq, d) array."""
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def block_rows(sizes) -> list[slice]:
    """Row slices of consecutive blocks of these sizes: each request's rows of an answer."""
    ends = np.cumsum(sizes)
    return [slice(int(e - n), int(e)) for n, e in zip(sizes, ends)]


@dataclass(frozen=True, eq=False)
class SearchResult:
    """distances float32 (nq, k), ids int64 (nq, k) with -1 for empty slots, the index
    version that answered, and the shards that did not (empty for a full answer).

    Unpacks as `D, I = result`."""

    distances: np.ndarray
    ids: np.ndarray
    version: str
    missing_shards: tuple[int, ...] = ()

    @property
    def partial(self) -> bool:
        return bool(self.missing_shards)

    def __iter__(self):
        return iter((self.distances, self.ids))

    def split(self, sizes: list[int]) -> list["SearchResult"]:
        """The answers of consecutive query blocks of these sizes (a batch's requests)."""
        return [SearchResult(self.distances[rows], self.ids[rows], self.version,
                             self.missing_shards) for rows in block_rows(sizes)]


@dataclass(frozen=True, eq=False)
class Routing:
    """What a client needs to search a served version itself: the version's shape, its
    shard groups and each group's searcher actor handles (a snapshot: the coordinator
    hands out a new one after a reload)."""

    version: str
    dim: int
    ntotal: int
    nlist: int
    nedge: int
    metric: str
    groups: tuple[tuple[tuple[int, ...], tuple], ...]     # (shards, replica handles) per group
    timeout_s: float                                      # the service's default per batch

    def check(self, name: str, queries, params: "SearchParams", timeout_s) -> np.ndarray:
        """The queries as float32 (nq, dim), or a ValueError naming what is wrong with the
        request for this version (the coordinator's and the client's one check)."""
        if not isinstance(params, SearchParams):
            raise ValueError(f"params: expected SearchParams, got {type(params).__name__}")
        q = check_queries(queries, self.dim)
        if params.k > self.ntotal:
            raise ValueError(f"k={params.k} exceeds the {self.ntotal} vectors of index "
                             f"{name!r} version {self.version}")
        if params.nprobe > self.nlist:
            raise ValueError(f"nprobe={params.nprobe} exceeds nlist={self.nlist}")
        if params.nlines > params.nprobe * self.nedge:
            raise ValueError(f"nlines={params.nlines} exceeds nprobe * nedge = "
                             f"{params.nprobe * self.nedge}")
        if timeout_s is not None and (isinstance(timeout_s, bool) or
                                      not isinstance(timeout_s, (int, float)) or timeout_s <= 0):
            raise ValueError(f"timeout_s must be a number > 0, got {timeout_s!r}")
        return q

"""The service's counters and histograms, kept for `stats()` and exported as Ray metrics
(Prometheus format at each node's Ray metrics endpoint, `ray start --metrics-export-port`),
tagged with the index name. One place counts: the coordinator, for what it served itself and
for what its clients reported at their routing refresh.

    snapline_requests_total{index}            searches answered
    snapline_queries_total{index}             queries in them
    snapline_batches_total{index}             batches sent to the searchers
    snapline_partial_batches_total{index}     batches with missing shards
    snapline_rejected_requests_total{index}   requests refused before a batch (bad input)
    snapline_rejected_batches_total{index}    batches a searcher refused (bad filter ...)
    snapline_replica_failures_total{index}    replica attempts that failed over
    snapline_reloads_total{index}             version switches
    snapline_request_latency_ms{index}        histogram, as the callers saw it
    snapline_batch_queries{index}             histogram of queries per batch
"""
from __future__ import annotations

import collections

from ray.util import metrics

COUNTERS = ("requests", "queries", "batches", "partial_batches", "rejected_requests",
            "rejected_batches", "replica_failures", "reloads")
LATENCY_BOUNDARIES_MS = [0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 200, 500, 1000,
                         2000, 5000, 10000]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


class ServiceMetrics:
    """Counts by name (`counts`, the stats' figures) and the same as Ray metrics."""

    def __init__(self, index: str, window: int):
        self.counts = collections.Counter()
        self.latency_ms = collections.deque(maxlen=window)
        self.batch_sizes = collections.deque(maxlen=window)
        tags = {"index": index}
        self._counters = {}
        for name in COUNTERS:
            counter = metrics.Counter(f"snapline_{name}_total",
                                      description=f"snapline service: {name.replace('_', ' ')}",
                                      tag_keys=("index",))
            counter.set_default_tags(tags)
            self._counters[name] = counter
        self._latency = metrics.Histogram(
            "snapline_request_latency_ms", description="snapline search latency as the caller "
            "saw it (ms)", boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("index",))
        self._latency.set_default_tags(tags)
        self._batch = metrics.Histogram(
            "snapline_batch_queries", description="queries per batch sent to the searchers",
            boundaries=BATCH_BOUNDARIES, tag_keys=("index",))
        self._batch.set_default_tags(tags)

    def count(self, name: str, n: int = 1) -> None:
        if n:
            self.counts[name] += n
            self._counters[name].inc(n)

    def latencies(self, values_ms) -> None:
        for v in values_ms:
            self.latency_ms.append(v)
            self._latency.observe(v)

    def batches(self, sizes) -> None:
        for n in sizes:
            self.batch_sizes.append(n)
            self._batch.observe(n)

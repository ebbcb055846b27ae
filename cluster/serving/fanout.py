"""A query batch sent by the caller's own process to one replica of every shard group of a
version, with failover: the client's direct path (one actor hop, no coordinator between).

Each group's replicas are tried in `replica_order` (round-robin start, recently failed ones
last); a replica that fails, dies or does not answer within its share of the time left is
marked down for REPLICA_COOLDOWN_S and the next is tried, round after round, until the
batch's deadline. A group that no replica answered is None in the answer (the caller
reports its shards missing). A searcher's ValueError (a bad filter, refinement without
stored vectors) is the request's error and is raised as is.

    parts, failures = fan_out(routing, queries, params, deadline, health, changed)
"""
from __future__ import annotations

import itertools
import threading
import time
from typing import Callable

import ray
from ray.exceptions import RayActorError, RayError, RayTaskError

from cluster.serving.routing import replica_order
from cluster.serving.types import Routing, SearchParams

REPLICA_COOLDOWN_S = 2.0         # a failed replica is tried last for this long
RETRY_PAUSE_S = 0.05             # between rounds over a group's replicas


class RoutingChanged(Exception):
    """A searcher is gone because the service serves another version now: the batch
    starts again on the new routing (never a mix of versions)."""


class ReplicaHealth:
    """Per (version, group): the round-robin turn, and per replica when it failed last."""

    def __init__(self):
        self._lock = threading.Lock()
        self._turns: dict[tuple[str, int], itertools.count] = {}
        self._down: dict[tuple[str, int, int], float] = {}

    def order(self, version: str, group: int, nreplicas: int) -> list[int]:
        with self._lock:
            turn = next(self._turns.setdefault((version, group), itertools.count()))
            down = [self._down.get((version, group, r), 0.0) for r in range(nreplicas)]
        return replica_order(turn, down, time.monotonic())

    def failed(self, version: str, group: int, replica: int) -> None:
        with self._lock:
            self._down[(version, group, replica)] = time.monotonic() + REPLICA_COOLDOWN_S


def fan_out(routing: Routing, q, params: SearchParams, deadline: float, health: ReplicaHealth,
            version_changed: Callable[[], bool]) -> tuple[list, int]:
    """(D, I) or None per group of `routing`, and how many replica attempts failed.
    `version_changed()` is asked when a searcher is dead: True raises RoutingChanged."""
    ngroups = len(routing.groups)
    parts: list = [None] * ngroups
    done, tried = [False] * ngroups, [0] * ngroups
    orders = [health.order(routing.version, g, len(routing.groups[g][1])) for g in range(ngroups)]
    retry_at: dict[int, float] = {}
    pending: dict = {}           # ref -> (group, replica, attempt deadline)
    failures = 0

    def launch(g: int, now: float) -> None:
        if tried[g] == len(orders[g]):          # a round over every replica failed
            orders[g], tried[g] = health.order(routing.version, g, len(orders[g])), 0
            retry_at[g] = now + RETRY_PAUSE_S
            return
        r = orders[g][tried[g]]
        # a hung replica gets its share of the time left, not all of it
        attempt_s = (deadline - now) / (len(orders[g]) - tried[g])
        tried[g] += 1
        pending[routing.groups[g][1][r].search.remote(q, params)] = (g, r, now + attempt_s)

    def fail(g: int, r: int, now: float) -> None:
        nonlocal failures
        failures += 1
        health.failed(routing.version, g, r)
        launch(g, now)

    now = time.monotonic()
    for g in range(ngroups):
        launch(g, now)
    try:      # the common case in one call: every first try answers within its share
        wait_s = max(0.0, min(a for _, _, a in pending.values()) - now)
        return ray.get(list(pending), timeout=wait_s), 0
    except RayError:
        pass      # which one failed, and why, is sorted out one by one below

    def collect(ready, now: float) -> None:
        for ref in ready:
            g, r, _ = pending.pop(ref)
            if done[g]:
                continue
            try:
                parts[g], done[g] = ray.get(ref), True
            except RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(exc, ValueError) and isinstance(cause, ValueError):
                    raise cause from None       # the request's own error, not the replica's
                fail(g, r, now)
            except RayActorError:
                if version_changed():
                    raise RoutingChanged() from None
                fail(g, r, now)
            except RayError:
                fail(g, r, now)

    while not all(done):
        now = time.monotonic()
        if now >= deadline:      # what has answered by now still counts
            if pending:
                collect(ray.wait(list(pending), num_returns=len(pending), timeout=0)[0], now)
            break
        for g in [g for g, t in retry_at.items() if t <= now]:
            del retry_at[g]
            launch(g, now)
        wake = min([a for _, _, a in pending.values()] + list(retry_at.values()) + [deadline])
        if pending:
            ready = ray.wait(list(pending), num_returns=1, timeout=max(0.0, wake - now))[0]
        else:
            ready = []
            time.sleep(max(0.0, wake - now))
        now = time.monotonic()
        collect(ready, now)
        for ref, (g, r, attempt_deadline) in list(pending.items()):
            if done[g] or attempt_deadline <= now:
                del pending[ref]                # answered by another, or hung: not awaited
                if not done[g]:
                    fail(g, r, now)
    return parts, failures

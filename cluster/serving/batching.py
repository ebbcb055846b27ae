"""Request batching: concurrent query requests with the same search parameters travel as
one batch, and each caller gets its own rows of the answer (SPEC 5).

A request goes out at once when no batch of its group (same `key`: search parameters and
timeout) is in flight, so a lone caller waits for nothing. While one is in flight, requests
gather until that batch returns, `window_s` has passed since they arrived, or they hold
`max_queries` queries, whichever comes first. Callers are checked before they join a batch,
so a batch-mate's bad input never reaches the others; what fails a whole batch (the service
is down, a filter no searcher accepts) has the same parameters, hence the same cause, for
every request in it.

    batcher = ThreadBatcher(BatchPolicy(window_ms=3.0, max_queries=256), send)
    rows = batcher.submit(key, queries)          # from many threads: send(key, [q, ...])
    rows = await AsyncBatcher(policy, send).submit(key, queries)     # from coroutines

`send(key, items)` answers a list of items (row blocks) with a list of per-item answers.
"""
from __future__ import annotations

import asyncio
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Hashable

import numpy as np

from cluster.serving.types import check_batching

__all__ = ["BatchPolicy", "ThreadBatcher", "AsyncBatcher"]


@dataclass(frozen=True)
class BatchPolicy:
    """window_ms: the longest a request waits for batch-mates while a batch of its group
    is in flight (0: no batching, every request alone); max_queries: a batch is sent once
    it holds this many queries (a bigger request travels alone). wait_for_callers: after
    a batch of several requests returns, wait (up to the window) until as many have
    arrived again (for callers that send their next request when their answer is back:
    the threads of a client); False: go as soon as nothing is in flight (for a server
    whose callers are independent processes: the searchers)."""

    window_ms: float = 3.0
    max_queries: int = 256
    wait_for_callers: bool = True

    def __post_init__(self):
        check_batching(self.window_ms, self.max_queries)

    @property
    def window_s(self) -> float:
        return self.window_ms / 1e3

    @property
    def enabled(self) -> bool:
        return self.window_ms > 0


@dataclass(eq=False)
class _Request:
    item: Any
    n: int
    arrived: float
    taken: bool = False
    done: bool = False
    answer: Any = None
    error: BaseException | None = None
    waiter: Any = None               # asyncio: the future the caller awaits


@dataclass(eq=False)
class _Group:
    pending: list[_Request] = field(default_factory=list)
    inflight: int = 0
    last_done: float = -math.inf        # when the group's last batch was answered
    last_requests: int = 0              # how many requests it carried

    def ready(self, policy: BatchPolicy, now: float) -> bool:
        """Should the pending requests go out now? At once when the group is idle;
        not when a batch of several callers has just returned and fewer requests than it
        carried arrived since (its callers are coming back with their next ones: wait for
        them, up to the window)."""
        if not self.pending:
            return False
        if sum(r.n for r in self.pending) >= policy.max_queries \
                or now - self.pending[0].arrived >= policy.window_s:
            return True
        if self.inflight:
            return False
        if not policy.wait_for_callers:
            return True
        back = sum(r.arrived >= self.last_done for r in self.pending)
        return not (self.last_requests > back and now - self.last_done < policy.window_s)

    def take(self, policy: BatchPolicy) -> list[_Request]:
        """The oldest pending requests, up to max_queries queries (at least one)."""
        batch, n = [], 0
        while self.pending and (not batch or n + self.pending[0].n <= policy.max_queries):
            r = self.pending.pop(0)
            r.taken = True
            batch.append(r)
            n += r.n
        self.inflight += 1
        return batch


class _Batcher:
    def __init__(self, policy: BatchPolicy):
        self.policy = policy
        self._groups: dict[Hashable, _Group] = {}
        self.batches = 0                 # batches sent
        self.requests = 0                # requests answered through them

    def _join(self, key: Hashable, item, n: int) -> tuple[_Group, _Request]:
        group = self._groups.setdefault(key, _Group())
        request = _Request(item, n, time.monotonic())
        group.pending.append(request)
        return group, request

    def _finish(self, key: Hashable, group: _Group, batch: list[_Request], answers,
                error: BaseException | None) -> None:
        if error is None and len(answers) != len(batch):
            error = RuntimeError(f"batch send answered {len(answers)} items for {len(batch)}")
        for i, r in enumerate(batch):
            r.error = error
            r.answer = None if error is not None else answers[i]
            r.done = True
        group.inflight -= 1
        group.last_done, group.last_requests = time.monotonic(), len(batch)
        self.batches += 1
        self.requests += len(batch)
        if not group.pending and not group.inflight and len(batch) == 1:
            self._groups.pop(key, None)     # (a group whose callers may return is kept)

    @staticmethod
    def _answer(request: _Request):
        if request.error is not None:
            raise request.error
        return request.answer


class ThreadBatcher(_Batcher):
    """Batches the requests of many threads; the thread that sends a batch is one of its
    callers (no background thread). A finished batch wakes its own callers and at most
    one waiting request (to lead the next batch), not every waiting thread."""

    def __init__(self, policy: BatchPolicy,
                 send: Callable[[Hashable, list], list]):
        super().__init__(policy)
        self._send = send
        self._lock = threading.Lock()

    def submit(self, key: Hashable, item, n: int):
        """The answer `send` gave for `item` (n queries), or the error its batch raised."""
        if not self.policy.enabled:
            return self._send(key, [item])[0]
        with self._lock:
            group, request = self._join(key, item, n)
            request.waiter = threading.Event()
        while True:
            with self._lock:
                batch = None
                if request.done:
                    return self._answer(request)
                now = time.monotonic()
                if not request.taken and group.ready(self.policy, now):
                    batch = group.take(self.policy)
                    if group.pending and group.ready(self.policy, now):
                        group.pending[0].waiter.set()     # the rest of a full batch
                wait = (request.arrived + self.policy.window_s - now if not request.taken
                        else None)
                request.waiter.clear()
            if batch is None:
                request.waiter.wait(timeout=None if wait is None else max(wait, 0.0))
                continue
            answers, error = None, None
            try:                 # this thread sends the batch (its own request may not be
                answers = self._send(key, [r.item for r in batch])    # in it: a full cap)
            except BaseException as exc:       # every request of the batch gets it
                error = exc
            with self._lock:
                self._finish(key, group, batch, answers, error)
                for r in batch:
                    r.waiter.set()
                if group.pending:              # the oldest waiting request leads next
                    group.pending[0].waiter.set()


class AsyncBatcher(_Batcher):
    """Batches the requests of many coroutines of one event loop (an async Ray actor)."""

    def __init__(self, policy: BatchPolicy,
                 send: Callable[[Hashable, list], Awaitable[list]]):
        super().__init__(policy)
        self._send = send
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}

    async def submit(self, key: Hashable, item, n: int):
        if not self.policy.enabled:
            return (await self._send(key, [item]))[0]
        loop = asyncio.get_running_loop()
        group, request = self._join(key, item, n)
        request.waiter = loop.create_future()
        self._flush(key, group)
        if not request.taken and key not in self._timers:
            self._timers[key] = loop.call_later(self.policy.window_s, self._on_timer, key)
        await asyncio.shield(request.waiter)
        return self._answer(request)

    def _on_timer(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        group = self._groups.get(key)
        if group is None:
            return
        self._flush(key, group)
        if group.pending:               # the rest of a cap-limited take, or newer requests
            wait = max(0.0, group.pending[0].arrived + self.policy.window_s - time.monotonic())
            self._timers[key] = asyncio.get_running_loop().call_later(wait, self._on_timer, key)

    def _flush(self, key: Hashable, group: _Group) -> None:
        while group.ready(self.policy, time.monotonic()):
            batch = group.take(self.policy)
            asyncio.get_running_loop().create_task(self._run(key, group, batch))

    async def _run(self, key: Hashable, group: _Group, batch: list[_Request]) -> None:
        answers, error = None, None
        try:
            answers = await self._send(key, [r.item for r in batch])
        except BaseException as exc:       # every request of the batch gets it
            error = exc
        self._finish(key, group, batch, answers, error)
        for r in batch:
            if not r.waiter.done():
                r.waiter.set_result(None)
        if group.pending:                  # what waited for this batch goes now
            self._flush(key, group)
            if group.pending and key not in self._timers:
                self._on_timer(key)

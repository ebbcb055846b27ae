"""Request batching (cluster/serving/batching.py) without Ray: every caller gets the answer
to its own item, concurrent callers share batches, a lone caller is sent at once, the size
cap holds, an error reaches exactly the requests of its batch."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from cluster.serving.batching import AsyncBatcher, BatchPolicy, ThreadBatcher
from cluster.serving.types import SearchResult, ServeConfig

N_CALLERS = 16
SEND_S = 0.05         # how long one batch takes: callers that come meanwhile gather


class Recorder:
    """A send that answers each item with item * 10 and records every batch it was given.
    Items equal to `fail_on` make their whole batch fail."""

    def __init__(self, fail_on=None):
        self.batches: list[list] = []
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def answer(self, key, items):
        with self.lock:
            self.batches.append(list(items))
        if self.fail_on is not None and any(np.array_equal(i, self.fail_on) for i in items):
            raise ValueError(f"bad item in a batch of {len(items)}")
        return [(key, i * 10) for i in items]

    def send(self, key, items):
        time.sleep(SEND_S)
        return self.answer(key, items)

    async def send_async(self, key, items):
        await asyncio.sleep(SEND_S)
        return self.answer(key, items)


def _threads(batcher, items, keys):
    out, barrier = [None] * len(items), threading.Barrier(len(items))

    def run(i):
        barrier.wait()
        try:
            out[i] = batcher.submit(keys[i], items[i], items[i].shape[0])
        except Exception as exc:        # noqa: BLE001  (the test looks at what each got)
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def _coroutines(batcher, items, keys):
    async def one(i):
        try:
            return await batcher.submit(keys[i], items[i], items[i].shape[0])
        except Exception as exc:        # noqa: BLE001
            return exc

    async def main():
        return await asyncio.gather(*[one(i) for i in range(len(items))])

    return asyncio.run(main())


def _run(kind, policy, recorder, items, keys):
    if kind == "threads":
        return _threads(ThreadBatcher(policy, recorder.send), items, keys)
    return _coroutines(AsyncBatcher(policy, recorder.send_async), items, keys)


KINDS = ["threads", "async"]


@pytest.mark.parametrize("kind", KINDS)
def test_each_caller_gets_its_own_answer_and_callers_share_batches(kind):
    rec = Recorder()
    items = [np.full((1 + i % 3, 2), i) for i in range(N_CALLERS)]
    keys = [("a" if i % 2 else "b") for i in range(N_CALLERS)]
    out = _run(kind, BatchPolicy(window_ms=1000, max_queries=256), rec, items, keys)
    for i, (key, answer) in enumerate(out):
        assert key == keys[i]
        np.testing.assert_array_equal(answer, items[i] * 10)
    sent = [item for batch in rec.batches for item in batch]
    assert len(sent) == N_CALLERS                      # each item sent exactly once
    # two groups of 8: at most the first of each alone, the rest gathered behind it
    assert len(rec.batches) <= 4
    for batch in rec.batches:                          # a batch never mixes keys
        assert len({int(i[0, 0]) % 2 for i in batch}) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_lone_request_is_sent_at_once(kind):
    """Nothing in flight: the longest window is not waited for."""
    rec = Recorder()
    t0 = time.monotonic()
    out = _run(kind, BatchPolicy(window_ms=1000, max_queries=256), rec, [np.ones((1, 2))],
               ["k"])
    assert time.monotonic() - t0 < 0.9 and len(rec.batches) == 1
    np.testing.assert_array_equal(out[0][1], np.full((1, 2), 10))


@pytest.mark.parametrize("kind", KINDS)
def test_size_cap(kind):
    rec = Recorder()
    items = [np.full((100, 2), i) for i in range(N_CALLERS)] + [np.full((300, 2), 99)]
    out = _run(kind, BatchPolicy(window_ms=1000, max_queries=256), rec, items,
               ["k"] * len(items))
    assert all(not isinstance(o, Exception) for o in out)
    for batch in rec.batches:
        n = sum(i.shape[0] for i in batch)
        assert n <= 256 or len(batch) == 1             # a bigger request travels alone
    assert sum(len(b) for b in rec.batches) == len(items)


@pytest.mark.parametrize("kind", KINDS)
def test_window_zero_sends_every_request_alone(kind):
    rec = Recorder()
    items = [np.full((1, 2), i) for i in range(6)]
    out = _run(kind, BatchPolicy(window_ms=0, max_queries=256), rec, items, ["k"] * 6)
    assert [len(b) for b in rec.batches] == [1] * 6
    for i, (_, answer) in enumerate(out):
        np.testing.assert_array_equal(answer, items[i] * 10)


@pytest.mark.parametrize("kind", KINDS)
def test_an_error_reaches_the_requests_of_its_batch_only(kind):
    bad = np.full((1, 2), 7)
    rec = Recorder(fail_on=bad)
    items = [np.full((1, 2), i) for i in range(N_CALLERS)]
    out = _run(kind, BatchPolicy(window_ms=1000, max_queries=256), rec, items,
               ["k"] * N_CALLERS)
    failed_batch = next(b for b in rec.batches if any(np.array_equal(i, bad) for i in b))
    in_failed = {int(i[0, 0]) for i in failed_batch}
    for i, o in enumerate(out):
        if i in in_failed:
            assert isinstance(o, ValueError) and "bad item" in str(o)
        else:
            np.testing.assert_array_equal(o[1], items[i] * 10)


@pytest.mark.parametrize("kind", KINDS)
def test_batches_in_sequence_keep_answering(kind):
    """Three waves on one batcher: groups emptied and re-created keep working."""
    rec = Recorder()
    policy = BatchPolicy(window_ms=5, max_queries=4)
    batcher = (ThreadBatcher(policy, rec.send) if kind == "threads"
               else AsyncBatcher(policy, rec.send_async))
    for wave in range(3):
        items = [np.full((1, 2), wave * 100 + i) for i in range(10)]
        run = _threads if kind == "threads" else _coroutines
        out = run(batcher, items, ["k"] * 10)
        for i, (_, answer) in enumerate(out):
            np.testing.assert_array_equal(answer, items[i] * 10)
    assert all(sum(i.shape[0] for i in b) <= 4 for b in rec.batches)
    assert batcher.requests == 30 and batcher.batches == len(rec.batches)


def _three_rounds_of_8(kind, policy) -> tuple[list[int], np.ndarray]:
    """8 callers sending 3 requests each in a row: batch sizes and the gaps between sends."""
    rec, sent_at = Recorder(), []
    items = [np.full((1, 2), i) for i in range(8)]
    if kind == "threads":
        def send(key, batch):
            sent_at.append(time.monotonic())
            return rec.send(key, batch)

        batcher = ThreadBatcher(policy, send)
        barrier = threading.Barrier(8)

        def caller(i):
            barrier.wait()
            for _ in range(3):
                batcher.submit("k", items[i], 1)

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    else:
        async def send(key, batch):
            sent_at.append(time.monotonic())
            return await rec.send_async(key, batch)

        batcher = AsyncBatcher(policy, send)

        async def caller(i):
            for _ in range(3):
                await batcher.submit("k", items[i], 1)

        async def main():
            await asyncio.gather(*[caller(i) for i in range(8)])

        asyncio.run(main())
    sizes = [len(b) for b in rec.batches]
    assert sum(sizes) == 24
    return sizes, np.diff(sent_at)


@pytest.mark.parametrize("kind", KINDS)
def test_without_waiting_for_callers_a_free_batcher_sends_at_once(kind):
    """wait_for_callers=False (a searcher): whatever is pending goes as soon as nothing is
    in flight; no window (here 1 s) is ever waited out."""
    _, gaps = _three_rounds_of_8(kind, BatchPolicy(window_ms=1000, max_queries=256,
                                                   wait_for_callers=False))
    assert (gaps < 0.5).all()


@pytest.mark.parametrize("kind", KINDS)
def test_returning_callers_go_out_once_all_are_back(kind):
    """After a batch of several returns, the next one waits for its callers to come back
    and goes as soon as all are back, not after the (here 1 s) window; only the last,
    which a caller that has finished never joins, waits the window out."""
    sizes, gaps = _three_rounds_of_8(kind, BatchPolicy(window_ms=1000, max_queries=256))
    assert sizes[-3:-1] == [8, 8]                        # all 8 back, then together
    assert (gaps[:-1] < 0.5).all()                       # no window waited out but
    assert gaps[-1] >= 0.9                               # for the caller that left


@pytest.mark.parametrize("window, cap, message", [
    (-1, 256, "batch_window_ms must be a number in \\[0, 1000\\]"),
    (float("nan"), 256, "batch_window_ms"), ("1", 256, "batch_window_ms"),
    (1.0, 0, "batch_max_queries must be an integer >= 1, got 0"),
    (1.0, 2.5, "batch_max_queries must be an integer"),
])
def test_bad_batching_settings_are_named(window, cap, message):
    with pytest.raises(ValueError, match=message):
        BatchPolicy(window, cap)
    with pytest.raises(ValueError, match=message):
        ServeConfig(store="s", name="n", batch_window_ms=window, batch_max_queries=cap)


def test_search_result_split():
    D = np.arange(12, dtype=np.float32).reshape(6, 2)
    I = np.arange(12, dtype=np.int64).reshape(6, 2)
    parts = SearchResult(D, I, "v1", (3,)).split([1, 3, 2])
    assert [p.ids.shape[0] for p in parts] == [1, 3, 2]
    np.testing.assert_array_equal(np.concatenate([p.ids for p in parts]), I)
    assert all(p.version == "v1" and p.missing_shards == (3,) for p in parts)

"""CURRENT is a compare-and-swap: concurrent publishers (threads and processes, local
and S3) never move it back, and a loser is told which version won (issue 12, item 6)."""
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from indexer import VLQIndex
from race_worker import publish_in_process, publish_one
from shards import PublishConflict, Store, publish
from shards.store import version_number

WRITERS = 8
# six writers ask for v000002..v000007, the older the longer they pause between reading
# CURRENT and swapping it; two choose their version themselves
VERSIONS = ["v000002", "v000003", "v000004", "v000005", "v000006", "v000007", None, None]
PAUSES = [0.8, 0.6, 0.4, 0.3, 0.1, 0.0, 0.2, 0.0]


def _variants(index, n):
    """n different contents: the same index plus i + 1 extra vectors."""
    out = []
    for i in range(n):
        idx = VLQIndex.from_arrays(index.to_arrays())
        idx.add(np.full((i + 1, index.dim), float(i), np.float32))
        out.append(idx.to_arrays())
    return out


class Watcher(threading.Thread):
    """Reads CURRENT in a loop; records every value it sees."""

    def __init__(self, root):
        super().__init__(daemon=True)
        self.root, self.seen, self.done = root, [], threading.Event()

    def run(self):
        while not self.done.is_set():
            current = self.root.current_version()
            if not self.seen or self.seen[-1] != current:
                self.seen.append(current)


def _check_race(root, outcomes, watcher):
    versions = root.versions()
    current = root.current_version()
    assert current == max(versions, key=version_number)      # ends at the highest published
    numbers = [version_number(v) for v in watcher.seen if v]
    assert numbers == sorted(numbers), f"CURRENT moved back: {watcher.seen}"
    assert all(o[0] in ("ok", "conflict") for o in outcomes), outcomes
    for outcome in outcomes:
        if outcome[0] == "ok":
            _, version, current_after = outcome
            assert version in versions
            assert version_number(current_after) >= version_number(version)
        else:
            assert "another writer" in outcome[1] or "never moves back" in outcome[1]
    assert any(o[0] == "ok" for o in outcomes)


@pytest.mark.parametrize("how", ["threads", "processes"])
def test_eight_racing_publishers_never_roll_current_back(index, store_uri, how):
    root = Store(store_uri).index("race")
    publish(root, index.to_arrays(), rows_per_shard=700)
    datas = _variants(index, WRITERS)
    watcher = Watcher(root)
    watcher.start()
    try:
        if how == "threads":
            barrier = threading.Barrier(WRITERS, timeout=120)
            with ThreadPoolExecutor(WRITERS) as pool:
                outcomes = list(pool.map(lambda a: publish_one(store_uri, *a, barrier),
                                         zip(datas, VERSIONS, PAUSES)))
        else:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(WRITERS) as pool:
                outcomes = pool.map(publish_in_process,
                                    [(store_uri, *a) for a in zip(datas, VERSIONS, PAUSES)])
    finally:
        watcher.done.set()
        watcher.join()
    _check_race(root, outcomes, watcher)


def test_a_paused_writer_cannot_roll_current_back(index, other_index_arrays, store_uri):
    """A reads CURRENT (v000001) for its v000002, pauses; B publishes v000003; A must
    not write CURRENT = v000002 (before the fix it did, silently)."""
    root = Store(store_uri).index("race")
    publish(root, index.to_arrays(), rows_per_shard=700)
    b_data = _variants(index, 1)[0]
    done = {}

    def pause(step, *args):
        if step == "swap" and "b" not in done:
            done["b"] = publish(root, b_data, rows_per_shard=700)    # B, while A waits

    with pytest.raises(PublishConflict, match="v000002 was not made CURRENT.*v000003"):
        publish(root, other_index_arrays, rows_per_shard=700, on_step=pause)
    assert done["b"].version == "v000003" == root.current_version()


def test_identical_content_makes_one_version(index, store_uri):
    """Two publishers of the same content: one version, whether they overlap entirely or
    the second chooses its version after the first made it CURRENT."""
    root = Store(store_uri).index("same")
    data = _variants(index, 1)[0]
    first_done = threading.Event()
    barrier = threading.Barrier(2, timeout=60)
    results = {}

    def writer(name, wait_for_first):
        def hook(step, *args):
            if step == "model" and wait_for_first:
                first_done.wait(60)
            if step == "manifest" and not wait_for_first and name == "c":
                barrier.wait()
            if step == "manifest" and name == "d":
                barrier.wait()
        results[name] = publish(root, data, rows_per_shard=700, on_step=hook)
        if name == "a":
            first_done.set()

    runs = [("a", False), ("b", True), ("c", False), ("d", False)]
    threads = [threading.Thread(target=writer, args=r) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {m.version for m in results.values()} == {"v000001"}
    assert root.versions() == ["v000001"] == [root.current_version()]


@pytest.fixture(scope="module")
def other_index_arrays(small_data):
    idx = VLQIndex(small_data["d"], nlist=16, nedge=4, code_bytes=8, nlambda=32, seed=1)
    idx.train(small_data["learn"][::2])
    idx.add(small_data["base"][2000:3000])
    return idx.to_arrays()

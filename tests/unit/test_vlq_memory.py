"""add() streams: what it allocates is bounded by the batch, not by the input size."""
import tracemalloc

import numpy as np

from indexer import VLQIndex


def test_add_allocates_per_batch_not_per_input(small_data):
    d = small_data["d"]
    batch = 4096
    idx = VLQIndex(d, nlist=16, nedge=4, code_bytes=8, nlambda=32, add_batch_size=batch)
    idx.train(small_data["learn"])
    rng = np.random.default_rng(0)
    x = np.repeat(small_data["base"], 10, axis=0)          # 200k x 32 float64 below: 51 MB
    x = (x + rng.normal(scale=0.1, size=x.shape)).astype(np.float64)
    tracemalloc.start()
    idx.add(x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    final_bytes = idx.ntotal * idx.bytes_per_vector
    batch_bytes = batch * d * 8
    # a float32 copy of the whole input alone would be x.nbytes / 2 = 25.6 MB
    assert peak < 2 * final_bytes + 24 * batch_bytes, (peak, final_bytes, batch_bytes)
    assert peak < x.nbytes / 2


def test_load_holds_the_rows_once_plus_one_shard(small_data, tmp_path):
    """load_arrays reads shard by shard into arrays sized for all rows: what it allocates
    (traced: numpy arrays, the file bytes) stays under the rows once plus a few shards'
    worth (one shard's file, its decoded columns), where reading every shard and then
    concatenating held them more than twice."""
    from shards import Store, load_arrays, publish

    d, nshards = small_data["d"], 20
    idx = VLQIndex(d, nlist=16, nedge=4, code_bytes=8, nlambda=32)
    idx.train(small_data["learn"])
    x = np.repeat(small_data["base"], 5, axis=0)                      # 100k rows
    idx.add(x)
    root = Store(str(tmp_path / "store")).index("big")
    publish(root, idx.to_arrays(), rows_per_shard=x.shape[0] // nshards)
    load_arrays(root, shards=[0])           # imports and caches, outside the measurement
    tracemalloc.start()
    _, data = load_arrays(root)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rows = sum(getattr(data, f).nbytes for f in ("ids", "list_ids", "lambda_idx", "codes"))
    assert data.ids.shape[0] == x.shape[0]
    assert peak < rows * (1 + 6 / nshards), (peak, rows)

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

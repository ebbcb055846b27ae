import numpy as np
import pytest


def clustered(n: int, d: int, seed: int, ncenters: int = 40) -> np.ndarray:
    """Gaussian blobs: a stand-in for real descriptors with neighbourhood structure."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(1234).normal(size=(ncenters, d)).astype(np.float32) * 4
    return (centers[rng.integers(0, ncenters, n)] + rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture(scope="session")
def small_data():
    d = 32
    return {"d": d, "learn": clustered(6000, d, 1), "base": clustered(20000, d, 2),
            "query": clustered(100, d, 3)}


@pytest.fixture(scope="session")
def trained_index(small_data):
    from indexer import VLQIndex

    index = VLQIndex(small_data["d"], nlist=32, nedge=8, code_bytes=8, nlambda=64)
    index.train(small_data["learn"])
    index.add(small_data["base"])
    return index

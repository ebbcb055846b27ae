import numpy as np
import pytest


def clustered(n: int, d: int, seed: int, ncenters: int = 40) -> np.ndarray:
    """Gaussian blobs: a stand-in for real descriptors with neighbourhood structure."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(1234).normal(size=(ncenters, d)).astype(np.float32) * 4
    return (centers[rng.integers(0, ncenters, n)] + rng.normal(size=(n, d))).astype(np.float32)


def rows_equal_but_near_ties(D1, I1, D2, I2, rtol: float = 1e-5) -> np.ndarray:
    """Per query: do two top-k answers agree? Ids equal; or the distances agree (rtol)
    and every position where the ids differ holds a near-tie (a neighbouring distance
    within rtol, or the last slot, whose rival past k is unseen): the same neighbours,
    ordered differently by float rounding (another batch size or thread count)."""
    D1, D2 = np.asarray(D1, np.float64), np.asarray(D2, np.float64)
    same = (np.asarray(I1) == np.asarray(I2)).all(axis=1)
    for row in np.flatnonzero(~same):
        d = D1[row]
        if not np.allclose(d, D2[row], rtol=rtol):
            continue
        tol = rtol * np.maximum(np.abs(d), 1e-30)
        tied = np.zeros(d.size, bool)
        tied[:-1] |= np.abs(np.diff(d)) <= tol[:-1]
        tied[1:] |= np.abs(np.diff(d)) <= tol[1:]
        tied[-1] = True
        same[row] = bool(tied[np.asarray(I1)[row] != np.asarray(I2)[row]].all())
    return same


@pytest.fixture(scope="session")
def small_data():
    d = 32
    return {"d": d, "learn": clustered(6000, d, 1), "base": clustered(20000, d, 2),
            "query": clustered(100, d, 3)}


@pytest.fixture(scope="module")
def index(small_data):
    """A small trained index with 2,000 vectors, one per test module (the modules that
    use it leave it unchanged)."""
    from indexer import VLQIndex

    idx = VLQIndex(small_data["d"], nlist=16, nedge=4, code_bytes=8, nlambda=32)
    idx.train(small_data["learn"])
    idx.add(small_data["base"][:2000])
    return idx


@pytest.fixture(scope="session")
def trained_index(small_data):
    from indexer import VLQIndex

    index = VLQIndex(small_data["d"], nlist=32, nedge=8, code_bytes=8, nlambda=64)
    index.train(small_data["learn"])
    index.add(small_data["base"])
    return index


# -- a real S3 endpoint: moto_server on a free loopback port (as s3fs's own tests do) --
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

S3_ENV = {"AWS_ACCESS_KEY_ID": "snapline-test-key", "AWS_SECRET_ACCESS_KEY": "snapline-test-secret",
          "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """Start moto_server; export credentials and AWS_ENDPOINT_URL for botocore/s3fs."""
    exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    old = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(S3_ENV, AWS_ENDPOINT_URL=endpoint)
    try:
        import requests

        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(endpoint, timeout=1)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on {endpoint}")
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture()
def s3_bucket(s3_endpoint):
    """A fresh bucket per test (3-63 characters, lowercase)."""
    import s3fs

    import uuid

    name = f"snapline-test-{uuid.uuid4().hex[:16]}"
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(name)
    s3fs.S3FileSystem.clear_instance_cache()
    yield name


@pytest.fixture(params=["local", "s3"])
def store_uri(request, tmp_path):
    """The same test against a local folder and the local S3 endpoint."""
    if request.param == "local":
        return str(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/store"

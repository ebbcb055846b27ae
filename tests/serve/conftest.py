"""Serving tests on a real local Ray (in-process `ray.init`, 2 CPUs) and small indexes of
the bundled SIFT data published into a temporary store as 1, 2 and 4 shards. Every row has
attributes (`tag` = id % 1000, `lang` = 'en' for even ids, 'fr' for odd ones) and, where the
index can keep them, its stored vectors (for refine)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import ray

from cluster.serving.types import NAMESPACE
from tests.conftest import _free_port

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "data" / "sift-small"
NB = 20_000
PARAMS = dict(k=10, nprobe=16, nlines=128)
SHARDINGS = {"sift-1": 1, "sift-2": 2, "sift-4": 4}


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray; yields the port of its Prometheus metrics endpoint."""
    port = _free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=NAMESPACE,
             log_to_driver=False, _metrics_export_port=port)
    try:
        yield port
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def sift():
    from shards import open_vectors

    return {name: open_vectors(str(BUNDLED / f"{name}.u8bin")).read()
            for name in ("base", "query", "learn")}


def attributes(ids: np.ndarray):
    """The attribute rows of `ids`: tag (0.1% of rows per value), lang (50% each)."""
    import pyarrow as pa

    return pa.table({"tag": pa.array(ids % 1000, pa.int64()),
                     "lang": pa.array(np.where(ids % 2 == 0, "en", "fr"))})


@pytest.fixture(scope="module")
def trained(sift):
    from indexer import VLQIndex

    index = VLQIndex(128, nlist=64, nedge=16, code_bytes=16, backend="numba",
                     stored_vectors="uint8")
    index.train(sift["learn"])
    index.add(sift["base"], attributes=attributes(np.arange(NB)))
    return index


@pytest.fixture(scope="module")
def store(tmp_path_factory, trained):
    """A store with the same index published as 1, 2 and 4 shards."""
    from shards import Store, publish

    path = tmp_path_factory.mktemp("store")
    arrays = trained.to_arrays()
    for name, nshards in SHARDINGS.items():
        manifest = publish(Store(str(path)).index(name), arrays, rows_per_shard=-(-NB // nshards))
        assert len(manifest.shards) == nshards
    return str(path)

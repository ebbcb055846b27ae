"""LanceDB IVF_PQ (the `lancedb` package) behind the runner interface.

A local table in a temporary folder under the run's out_dir (removed by ``close``):
``add`` appends the base (ids = row numbers), ``finish_add`` creates the IVF_PQ index,
which LanceDB trains on the table itself. The whole query set goes in one search call
(LanceDB's multi-vector query, rows tagged with query_index). bytes_per_vector is the
bytes of the index files on disk (the table's _indices folder) / n; the raw vectors the
table also stores (read by refine_factor) are not counted.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["LanceDBRunner"]

TABLE = "vectors"
#: LanceDB's distance type for each metric (cosine: LanceDB normalises itself)
LANCE_METRIC = {"l2": "l2", "ip": "dot", "cosine": "cosine"}


class LanceDBRunner:
    bytes_method = ("on disk: bytes of the index files (the table's _indices folder), / n; "
                    "the table's raw vectors (read by refine_factor) not counted")

    def __init__(self, d: int, plan, cfg):
        import lancedb

        self.d, self.plan, self.cfg = d, plan, cfg
        self.folder = Path(tempfile.mkdtemp(prefix="lancedb-", dir=cfg.out_dir))
        self.db = lancedb.connect(str(self.folder))
        self.table = None
        self.n = 0
        self.bytes_detail: dict[str, int] = {}

    def train(self, x):
        """LanceDB trains IVF and PQ on the table's own rows when the index is created."""

    def add(self, x):
        import pyarrow as pa

        x = np.ascontiguousarray(x, dtype=np.float32)
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), self.d)
        batch = pa.table({"id": pa.array(np.arange(self.n, self.n + x.shape[0], dtype=np.int64)),
                          "vector": vectors})
        if self.table is None:
            self.table = self.db.create_table(TABLE, data=batch)
        else:
            self.table.add(batch)
        self.n += x.shape[0]

    def finish_add(self):
        self.table.create_index(metric=LANCE_METRIC[self.cfg.metric], index_type="IVF_PQ",
                                num_partitions=self.plan.nlist,
                                num_sub_vectors=self.cfg.code_bytes)
        indices = self.folder / f"{TABLE}.lance" / "_indices"
        self.bytes_detail = {str(p.relative_to(indices)): p.stat().st_size
                             for p in indices.rglob("*") if p.is_file()}
        if not self.bytes_detail:
            raise RuntimeError(f"LanceDB wrote no index files under {indices}")

    def search(self, q, k, params):
        query = self.table.search(np.ascontiguousarray(q, dtype=np.float32)).limit(k)
        query = query.nprobes(params["nprobes"]).select(["id", "_distance"]).distance_type(
            LANCE_METRIC[self.cfg.metric])   # the index's: another would scan every row
        if params.get("refine_factor"):
            query = query.refine_factor(params["refine_factor"])
        table = query.to_arrow()
        qi = table.column("query_index").to_numpy() if q.shape[0] > 1 else \
            np.zeros(table.num_rows, dtype=np.int64)
        ids = table.column("id").to_numpy()
        dist = table.column("_distance").to_numpy()
        order = np.lexsort((dist, qi))
        D = np.full((q.shape[0], k), np.inf, dtype=np.float32)
        I = np.full((q.shape[0], k), -1, dtype=np.int64)
        qi, ids, dist = qi[order], ids[order], dist[order]
        rank = np.arange(qi.size) - np.searchsorted(qi, qi)   # position within its query
        keep = rank < k
        I[qi[keep], rank[keep]] = ids[keep]
        D[qi[keep], rank[keep]] = dist[keep]
        return D, I

    @property
    def ntotal(self) -> int:
        return 0 if self.table is None else int(self.table.count_rows())

    @property
    def bytes_per_vector(self) -> float:
        return sum(self.bytes_detail.values()) / max(1, self.n)

    def close(self):
        shutil.rmtree(self.folder, ignore_errors=True)

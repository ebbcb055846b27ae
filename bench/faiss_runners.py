"""faiss peers behind the runner interface, with bytes per vector measured from the index.

``faiss_resident_bytes(index)`` walks the inverted lists: list_size x code_size per list
(fast-scan's BlockInvertedLists: whole blocks of n_per_block codes, block_size bytes
each, so the padding of every list's last block counts), the 64-bit id of every vector,
and the codes of a refinement index (IndexRefine's refine_index). RaBitQ's per-vector
factors are part of its code_size.
"""
from __future__ import annotations

import faiss

from bench.dataset_files import metric_rows

__all__ = ["FAISS_ID_BYTES", "FaissRunner", "faiss_resident_bytes"]

#: bytes of the 64-bit id faiss stores next to every code in its inverted lists.
FAISS_ID_BYTES = 8

BYTES_METHOD = ("resident, measured: inverted-list codes (list_size x code_size; "
                "fast-scan: whole blocks of n_per_block codes) + 8-byte ids "
                "+ refinement codes (refine_index ntotal x code_size), / ntotal")


def faiss_resident_bytes(index) -> dict[str, int]:
    """Bytes the index holds for its vectors, by part: codes, ids, padding, refine."""
    ivf = faiss.extract_index_ivf(index)
    invlists = faiss.downcast_InvertedLists(ivf.invlists)
    sizes = [invlists.list_size(i) for i in range(ivf.nlist)]
    n = sum(sizes)
    parts = {"codes": n * ivf.code_size, "ids": n * FAISS_ID_BYTES, "padding": 0, "refine": 0}
    if isinstance(invlists, faiss.BlockInvertedLists):
        per_block = invlists.n_per_block
        blocks = sum(-(-size // per_block) for size in sizes)
        parts["padding"] = blocks * invlists.block_size - parts["codes"]
    if isinstance(index, faiss.IndexRefine):
        refine = faiss.downcast_index(index.refine_index)
        parts["refine"] = int(refine.ntotal) * int(refine.code_size)
    return parts


class FaissRunner:
    """An index_factory index; sweep params nprobe, and k_factor (Refine) or qb (RaBitQ)."""

    bytes_method = BYTES_METHOD

    def __init__(self, d: int, factory: str, metric: str = "l2"):
        # the factory's object already has its own type (IndexRefine, IndexIVFRaBitQ ...); a
        # downcast_index copy would not own it and would dangle once the factory's is freed
        self.metric = metric   # cosine: inner product of normalised rows
        self.index = faiss.index_factory(d, factory, faiss.METRIC_L2 if metric == "l2"
                                         else faiss.METRIC_INNER_PRODUCT)
        self.ivf = faiss.downcast_index(faiss.extract_index_ivf(self.index))  # .qb of RaBitQ
        self.bytes_detail: dict[str, int] = {}

    def train(self, x):
        self.index.train(metric_rows(x, self.metric))

    def add(self, x):
        self.index.add(metric_rows(x, self.metric))

    def search(self, q, k, params):
        self.ivf.nprobe = params["nprobe"]
        if "k_factor" in params:
            self.index.k_factor = params["k_factor"]
        if "qb" in params:
            self.ivf.qb = params["qb"]
        return self.index.search(metric_rows(q, self.metric), k)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def bytes_per_vector(self) -> float:
        self.bytes_detail = faiss_resident_bytes(self.index)
        return sum(self.bytes_detail.values()) / max(1, self.ntotal)

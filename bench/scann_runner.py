"""ScaNN (the `scann` package) behind the runner interface.

ScaNN builds its searcher from the whole database in one call (tree partitioning and
anisotropic AH codebooks trained on a sample of it), so ``train`` keeps only the size of
the learn set (used as the training sample size), ``add`` collects the base, and
``finish_add`` builds. bytes_per_vector is the serialized searcher folder's bytes / n.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from bench.dataset_files import metric_rows

__all__ = ["ScannRunner"]

logger = logging.getLogger(__name__)

#: ScaNN's recommended anisotropic threshold (its README's example)
ANISOTROPIC_THRESHOLD = 0.2


class ScannRunner:
    """plan.system "scann" (AH only) or "scann_reorder" (AH, then int8 exact reordering)."""

    bytes_method = ("on disk: bytes of the folder searcher.serialize() writes, / n "
                    "(nothing subtracted; its hashed_dataset.npy holds one byte per 4-bit "
                    "block, datapoint_to_token.npy 4 bytes of partition per vector)")

    def __init__(self, d: int, plan, cfg):
        self.d, self.plan, self.cfg = d, plan, cfg
        self.blocks = 2 * cfg.code_bytes
        if d % self.blocks:
            raise ValueError(f"ScaNN AH with {self.blocks} blocks needs d % {self.blocks} == 0, "
                             f"d={d}")
        self.reorder = plan.system == "scann_reorder"
        self.n_train = 0
        self.batches: list[np.ndarray] = []
        self.searcher = None
        self.bytes_detail: dict[str, int] = {}
        self._bytes: float | None = None

    def train(self, x):
        self.n_train = int(x.shape[0])

    def add(self, x):
        self.batches.append(metric_rows(x, self.cfg.metric))

    def finish_add(self):
        import scann
        from scann.scann_ops.py.scann_builder import ReorderType

        db = np.concatenate(self.batches)
        self.batches = []
        nlist = self.plan.nlist
        distance = "squared_l2" if self.cfg.metric == "l2" else "dot_product"
        builder = scann.scann_ops_pybind.builder(db, self.cfg.k, distance).tree(
            num_leaves=nlist, num_leaves_to_search=min(nlist, 16),
            training_sample_size=min(db.shape[0], max(self.n_train, nlist))
        ).score_ah(self.d // self.blocks, anisotropic_quantization_threshold=ANISOTROPIC_THRESHOLD)
        if self.reorder:
            builder = builder.reorder(4 * self.cfg.k, quantize=ReorderType.INT8)
        builder.set_n_training_threads(self.cfg.threads)
        self.searcher = builder.build()
        self.searcher.set_num_threads(self.cfg.threads)
        self._measure(db.shape[0])

    def _measure(self, n: int) -> None:
        folder = Path(tempfile.mkdtemp(prefix="scann-", dir=self.cfg.out_dir))
        try:
            self.searcher.serialize(str(folder))
            self.bytes_detail = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self._bytes = sum(self.bytes_detail.values()) / n

    def search(self, q, k, params):
        kwargs = {"final_num_neighbors": k, "leaves_to_search": params["leaves_to_search"]}
        if self.reorder:
            kwargs["pre_reorder_num_neighbors"] = max(k, params["reorder"])
        I, D = self.searcher.search_batched_parallel(
            metric_rows(q, self.cfg.metric), batch_size=max(1, -(-q.shape[0] // (4 * self.cfg.threads))), **kwargs)
        return np.asarray(D, dtype=np.float32), np.asarray(I, dtype=np.int64)

    @property
    def ntotal(self) -> int:
        return 0 if self.searcher is None else int(self.searcher.size())

    @property
    def bytes_per_vector(self) -> float:
        if self._bytes is None:
            raise RuntimeError("ScaNN searcher not built: call finish_add() first")
        return self._bytes

"""IndexArrays: everything an index persists, as plain arrays (what `VLQIndex.to_arrays`
hands to shards/ and `load_arrays` hands back)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from shards.models import model_shape, model_version_of
from shards.shape import IndexShape

DEFAULT_ROWS_PER_SHARD = 1_000_000


@dataclass(frozen=True, eq=False)
class IndexArrays:
    """Model metadata and arrays, and the encoded rows (any order)."""

    model_meta: dict
    model_arrays: dict[str, np.ndarray]
    ids: np.ndarray
    list_ids: np.ndarray
    lambda_idx: np.ndarray
    codes: np.ndarray
    next_id: int
    vectors: np.ndarray | None = None   # (n, dim) uint8/float16/float32, row-aligned; for refine

    @classmethod
    def empty(cls, model_meta: dict, model_arrays: dict[str, np.ndarray]) -> "IndexArrays":
        """A model with no rows (what an index trained elsewhere starts from)."""
        code_bytes = model_shape(model_meta).code_bytes
        return cls(model_meta=model_meta, model_arrays=model_arrays, ids=np.empty(0, np.int64),
                   list_ids=np.empty(0, np.int64), lambda_idx=np.empty(0, np.uint8),
                   codes=np.empty((0, code_bytes), np.uint8), next_id=0)

    @cached_property
    def shape(self) -> IndexShape:
        """The index shape the model metadata records."""
        return model_shape(self.model_meta)

    @cached_property
    def model_version(self) -> str:
        """The hash of the model arrays (computed once)."""
        return model_version_of(self.model_arrays, self.shape.metric)

    @property
    def ntotal(self) -> int:
        return int(self.ids.shape[0])

    def part_rows(self, rows_per_shard: int) -> list[np.ndarray]:
        """Row numbers of each shard: all rows sorted by list id (stable), cut every
        `rows_per_shard` rows (one empty shard for an empty index)."""
        if rows_per_shard <= 0:
            raise ValueError(f"rows_per_shard must be > 0, got {rows_per_shard}")
        order = np.argsort(self.list_ids, kind="stable")
        return [order[start:start + rows_per_shard]
                for start in range(0, max(self.ntotal, 1), rows_per_shard)]

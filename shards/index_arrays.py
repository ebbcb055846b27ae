"""IndexArrays: everything an index persists, as plain arrays (what `VLQIndex.to_arrays`
hands to shards/ and `load_arrays` hands back)."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pyarrow as pa

from shards.models import model_shape, model_version_of
from shards.shape import IndexShape
from shards.shard_file import check_attributes, check_vectors
from shards.tombstones import as_id_set

DEFAULT_ROWS_PER_SHARD = 1_000_000


@dataclass(frozen=True, eq=False)
class IndexArrays:
    """Model metadata and arrays, and the encoded rows (any order).

    attributes: a pyarrow Table, one row per row (column names are plain identifiers),
    or None; vectors: stored vectors, n rows of a `shards.vector_store` format, or None;
    tombstones: sorted unique uint64 deleted ids (`load_arrays` has already dropped
    their rows; a publish writes the set as given and the rows as given)."""

    model_meta: dict
    model_arrays: dict[str, np.ndarray]
    ids: np.ndarray
    list_ids: np.ndarray
    lambda_idx: np.ndarray
    codes: np.ndarray
    next_id: int
    attributes: pa.Table | None = None
    vectors: np.ndarray | None = None
    tombstones: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))

    def __post_init__(self):
        n = int(np.shape(self.ids)[0])
        check_attributes(self.attributes, n)
        check_vectors(self.vectors, n, self.shape.dim)
        object.__setattr__(self, "tombstones", as_id_set(self.tombstones, "tombstones"))

    @classmethod
    def empty(cls, model_meta: dict, model_arrays: dict[str, np.ndarray]) -> "IndexArrays":
        """A model with no rows (what an index trained elsewhere starts from)."""
        code_bytes = model_shape(model_meta).code_bytes
        return cls(model_meta=model_meta, model_arrays=model_arrays, ids=np.empty(0, np.int64),
                   list_ids=np.empty(0, np.int64), lambda_idx=np.empty(0, np.uint8),
                   codes=np.empty((0, code_bytes), np.uint8), next_id=0)

    @property
    def store(self) -> str | None:
        """The stored vectors' format (`shards.vector_store`), None without."""
        return check_vectors(self.vectors, self.ntotal, self.shape.dim)

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

"""Storage: vector file readers (and, later, shard and model stores)."""

from shards.readers import (
    FORMATS,
    VectorReader,
    open_vectors,
    read_ground_truth,
    read_vectors,
    write_ground_truth,
    write_vectors,
)

__all__ = [
    "FORMATS",
    "VectorReader",
    "open_vectors",
    "read_ground_truth",
    "read_vectors",
    "write_ground_truth",
    "write_vectors",
]

"""Storage: vector file readers, Parquet shards, manifests, model artifacts (fsspec/s3fs).

The only package that touches a file system or S3.
"""

from shards.index_store import (
    IndexArrays,
    PublishConflict,
    current_version,
    load_arrays,
    publish,
    resolve,
    save_copy,
)
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
    "IndexArrays",
    "PublishConflict",
    "VectorReader",
    "current_version",
    "load_arrays",
    "open_vectors",
    "publish",
    "read_ground_truth",
    "read_vectors",
    "resolve",
    "save_copy",
    "write_ground_truth",
    "write_vectors",
]

"""Storage: vector file readers, Parquet shards, manifests, model artifacts (fsspec/s3fs).

The only package that touches a file system or S3. A `Store` is a store location with
its storage options; `store.index(name)` is the `IndexRoot` handle every index
operation takes. Live indexes (SPEC 7): `publish_append`, `publish_delete`,
`publish_compaction` each publish one new version from CURRENT's.
"""

from shards.commit import PublishConflict, publish, publish_parts
from shards.compaction import CompactionReport, publish_compaction
from shards.copies import save_copy
from shards.index_arrays import IndexArrays
from shards.live_versions import EncodedRows, publish_append, publish_delete
from shards.loading import load_arrays, resolve
from shards.models import load_model, save_model
from shards.readers import (
    FORMATS,
    VectorReader,
    open_vectors,
    read_ground_truth,
    read_vectors,
    write_ground_truth,
    write_vectors,
)
from shards.references import referenced_versions
from shards.shape import IndexShape
from shards.store import IndexRoot, Store

__all__ = [
    "CompactionReport",
    "EncodedRows",
    "FORMATS",
    "IndexArrays",
    "IndexRoot",
    "IndexShape",
    "PublishConflict",
    "Store",
    "VectorReader",
    "load_arrays",
    "load_model",
    "open_vectors",
    "publish",
    "publish_append",
    "publish_compaction",
    "publish_delete",
    "publish_parts",
    "read_ground_truth",
    "read_vectors",
    "referenced_versions",
    "resolve",
    "save_copy",
    "save_model",
    "write_ground_truth",
    "write_vectors",
]

"""The shard Parquet file (SPEC 4): one file of encoded vectors, sorted by list id.

Schema: id uint64, list_id uint32, lambda uint8, code fixed_size_binary[M], and an
optional `vector` fixed_size_list column (raw vectors for refinement / re-encode).
zstd compression; row groups hold whole lists (a list larger than the row-group
target is a row group of its own); key-value metadata `snapline.*` records the
format version, model version, the index shape (dim, nlist, nedge, M = code_bytes,
nlambda, encoder, code_dim), source URI and row range.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shards.shape import SHAPE_FIELDS, IndexShape

SHARD_FORMAT_VERSION = 2      # 2: the whole index shape in the key-value metadata
ROW_GROUP_ROWS = 65536
_PREFIX = "snapline."


@dataclass(frozen=True)
class ShardMeta:
    """A shard's key-value metadata: the model and shape it was encoded with, its source."""

    model_version: str
    shape: IndexShape
    source_uri: str = ""
    row_start: int | None = None
    row_stop: int | None = None

    def to_kv(self) -> dict[bytes, bytes]:
        """Flat `snapline.<field>` keys with JSON values (the shape's fields inlined)."""
        fields = {"format_version": SHARD_FORMAT_VERSION, "model_version": self.model_version,
                  **self.shape.to_dict(), "source_uri": self.source_uri,
                  "row_start": self.row_start, "row_stop": self.row_stop}
        return {f"{_PREFIX}{k}".encode(): json.dumps(v).encode() for k, v in fields.items()}

    @classmethod
    def from_kv(cls, kv: dict[bytes, bytes] | None, where: str) -> "ShardMeta":
        kv = kv or {}
        try:
            fields = {k.decode()[len(_PREFIX):]: json.loads(v) for k, v in kv.items()
                      if k.decode(errors="replace").startswith(_PREFIX)}
        except ValueError as exc:      # not UTF-8 or not JSON
            raise ValueError(f"{where}: unreadable snapline shard metadata ({exc})") from None
        version = fields.pop("format_version", None)
        if version != SHARD_FORMAT_VERSION:
            raise ValueError(f"{where}: unsupported shard format version {version!r}; this "
                             f"snapline reads version {SHARD_FORMAT_VERSION}")
        shape = IndexShape.from_dict({k: fields.pop(k) for k in SHAPE_FIELDS if k in fields}, where)
        try:
            return cls(shape=shape, **fields)
        except TypeError as exc:
            raise ValueError(f"{where}: bad shard metadata ({exc})") from None


@dataclass(frozen=True, eq=False)
class ShardData:
    ids: np.ndarray         # int64 (n,)
    list_ids: np.ndarray    # int64 (n,), ascending
    lambda_idx: np.ndarray  # uint8 (n,)
    codes: np.ndarray       # uint8 (n, M)
    vectors: np.ndarray | None
    meta: ShardMeta


def shard_schema(code_bytes: int, vector_type: pa.DataType | None = None,
                 dim: int | None = None) -> pa.Schema:
    fields = [pa.field("id", pa.uint64(), nullable=False),
              pa.field("list_id", pa.uint32(), nullable=False),
              pa.field("lambda", pa.uint8(), nullable=False),
              pa.field("code", pa.binary(code_bytes), nullable=False)]
    if vector_type is not None:
        fields.append(pa.field("vector", pa.list_(vector_type, dim), nullable=False))
    return pa.schema(fields)


def _row_groups(list_ids: np.ndarray, target: int) -> list[tuple[int, int]]:
    """Cut sorted rows [0, n) into groups of whole lists: a group closes at the first
    list boundary at or past `target` rows (a list longer than target stands alone)."""
    n = list_ids.shape[0]
    groups, begin = [], 0
    for boundary in (np.flatnonzero(np.diff(list_ids)) + 1).tolist():
        if boundary - begin >= target:
            groups.append((begin, boundary))
            begin = boundary
    if begin < n:
        groups.append((begin, n))
    return groups


def encode_shard(ids: np.ndarray, list_ids: np.ndarray, lambda_idx: np.ndarray,
                 codes: np.ndarray, meta: ShardMeta, vectors: np.ndarray | None = None,
                 row_group_rows: int = ROW_GROUP_ROWS) -> bytes:
    """Parquet bytes of one shard (rows sorted by list id, stable)."""
    n, m = codes.shape
    if m != meta.shape.code_bytes:
        raise ValueError(f"codes have {m} bytes, shard metadata says "
                         f"code_bytes={meta.shape.code_bytes}")
    for name, arr in (("ids", ids), ("list_ids", list_ids), ("lambda_idx", lambda_idx)):
        if arr.shape != (n,):
            raise ValueError(f"{name} shape {arr.shape} does not match {n} codes")
    order = np.argsort(list_ids, kind="stable")
    list_sorted = np.asarray(list_ids)[order]
    columns = [pa.array(np.asarray(ids, dtype=np.uint64)[order]),
               pa.array(list_sorted.astype(np.uint32)),
               pa.array(np.asarray(lambda_idx, dtype=np.uint8)[order]),
               pa.FixedSizeBinaryArray.from_buffers(
                   pa.binary(m), n, [None, pa.py_buffer(np.ascontiguousarray(codes[order]))])]
    vector_type = None
    if vectors is not None:
        if vectors.shape[0] != n or vectors.ndim != 2:
            raise ValueError(f"vectors shape {vectors.shape} does not match {n} codes")
        flat = pa.array(np.ascontiguousarray(vectors[order]).reshape(-1))
        vector_type = flat.type
        columns.append(pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]))
    schema = shard_schema(m, vector_type, None if vectors is None else vectors.shape[1])
    table = pa.Table.from_arrays(columns, schema=schema.with_metadata(meta.to_kv()))
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, table.schema, compression="zstd") as writer:
        for begin, end in _row_groups(list_sorted, row_group_rows):
            writer.write_table(table.slice(begin, end - begin), row_group_size=end - begin)
    return sink.getvalue()


def decode_shard(blob: bytes, where: str) -> ShardData:
    """Read shard bytes back; `where` names the file in every error."""
    try:
        table = pq.read_table(pa.BufferReader(blob))
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{where}: not a readable Parquet shard ({exc})") from None
    meta = ShardMeta.from_kv(table.schema.metadata, where)
    m = meta.shape.code_bytes
    expected = ["id", "list_id", "lambda", "code"]
    if table.column_names[:4] != expected or table.schema.field("code").type != pa.binary(m):
        raise ValueError(f"{where}: shard schema {table.schema.names} / code type "
                         f"{table.schema.field('code').type if 'code' in table.column_names else None}"
                         f" does not match {expected} with code fixed_size_binary[{m}]")
    n = table.num_rows
    code_arr = table.column("code").combine_chunks()
    data = code_arr.buffers()[1]
    codes = np.frombuffer(data, dtype=np.uint8, count=n * m,
                          offset=code_arr.offset * m).reshape(n, m)
    vectors = None
    if "vector" in table.column_names:
        vec = table.column("vector").combine_chunks()
        vectors = vec.flatten().to_numpy(zero_copy_only=False).reshape(n, vec.type.list_size)
    list_ids = table.column("list_id").to_numpy().astype(np.int64)
    if n and (np.diff(list_ids) < 0).any():
        raise ValueError(f"{where}: rows are not sorted by list_id")
    return ShardData(ids=table.column("id").to_numpy().astype(np.int64), list_ids=list_ids,
                     lambda_idx=table.column("lambda").to_numpy().astype(np.uint8),
                     codes=codes.copy(), vectors=vectors, meta=meta)

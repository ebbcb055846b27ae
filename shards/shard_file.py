"""The shard Parquet file (SPEC 4): one file of encoded vectors, sorted by list id.

Schema: id uint64, list_id uint32, lambda uint8, code fixed_size_binary[M], an
optional `vector` fixed_size_list<uint8|float16|float32>[dim] column (raw vectors for
refinement / re-encode; or uint8[dim + 2], sq8 rows: `shards.vector_store`) and optional
attribute columns `attr.<name>` (any Arrow type, read back as written; names are plain
identifiers, the prefix keeps them apart from the code columns).
zstd compression; row groups hold whole lists (a list larger than the row-group
target is a row group of its own); key-value metadata `snapline.*` records the
format version, model version, the index shape (dim, nlist, nedge, M = code_bytes,
nlambda, encoder, code_dim), source URI and row range.
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shards.shape import SHAPE_FIELDS, IndexShape
from shards.vector_store import store_of

SHARD_FORMAT_VERSION = 3      # 3: attribute columns; 2: the whole shape in the metadata
READABLE_SHARD_VERSIONS = (2, 3)
ROW_GROUP_ROWS = 65536
_PREFIX = "snapline."
ATTRIBUTE_PREFIX = "attr."
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CODE_COLUMNS = ["id", "list_id", "lambda", "code"]


def check_attributes(attributes: pa.Table | None, n: int, what: str = "attributes") -> None:
    """Attributes are a pyarrow Table of n rows whose column names are plain identifiers
    ([A-Za-z_][A-Za-z0-9_]*), each once."""
    if attributes is None:
        return
    if not isinstance(attributes, pa.Table):
        raise TypeError(f"{what} must be a pyarrow Table, got {type(attributes).__name__}")
    if attributes.num_rows != n:
        raise ValueError(f"{what} has {attributes.num_rows} rows, expected one per row ({n})")
    for name in attributes.column_names:
        if not isinstance(name, str) or not _IDENTIFIER.match(name):
            raise ValueError(f"{what}: column name {name!r} is not a plain identifier "
                             f"([A-Za-z_][A-Za-z0-9_]*)")
    if len(set(attributes.column_names)) != attributes.num_columns:
        raise ValueError(f"{what}: a column name appears twice in {attributes.column_names}")


def check_vectors(vectors: np.ndarray | None, n: int, dim: int) -> str | None:
    """Stored vectors are n rows of one of `shards.vector_store`'s formats for dim-d
    vectors; returns the format's name (None without vectors)."""
    if vectors is None:
        return None
    name = store_of(vectors, dim)
    if vectors.shape[0] != n:
        raise ValueError(f"stored vectors hold {vectors.shape[0]} rows, expected {n}")
    return name


def attribute_types(attributes: pa.Table | None) -> dict[str, str] | None:
    """What a manifest records of attribute columns: name -> Arrow type name."""
    if attributes is None:
        return None
    return {name: str(attributes.schema.field(name).type) for name in attributes.column_names}


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
        if version not in READABLE_SHARD_VERSIONS:
            raise ValueError(f"{where}: unsupported shard format version {version!r}; this "
                             f"snapline reads versions "
                             f"{', '.join(map(str, READABLE_SHARD_VERSIONS))}")
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
    attributes: pa.Table | None = None


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
                 row_group_rows: int = ROW_GROUP_ROWS,
                 attributes: pa.Table | None = None) -> bytes:
    """Parquet bytes of one shard (rows sorted by list id, stable; vectors and attribute
    rows follow their codes)."""
    n, m = codes.shape
    if m != meta.shape.code_bytes:
        raise ValueError(f"codes have {m} bytes, shard metadata says "
                         f"code_bytes={meta.shape.code_bytes}")
    for name, arr in (("ids", ids), ("list_ids", list_ids), ("lambda_idx", lambda_idx)):
        if arr.shape != (n,):
            raise ValueError(f"{name} shape {arr.shape} does not match {n} codes")
    check_vectors(vectors, n, meta.shape.dim)
    check_attributes(attributes, n)
    order = np.argsort(list_ids, kind="stable")
    list_sorted = np.asarray(list_ids)[order]
    columns = [pa.array(np.asarray(ids, dtype=np.uint64)[order]),
               pa.array(list_sorted.astype(np.uint32)),
               pa.array(np.asarray(lambda_idx, dtype=np.uint8)[order]),
               pa.FixedSizeBinaryArray.from_buffers(
                   pa.binary(m), n, [None, pa.py_buffer(np.ascontiguousarray(codes[order]))])]
    schema = shard_schema(m)
    if vectors is not None:
        flat = pa.array(np.ascontiguousarray(vectors[order]).reshape(-1))
        columns.append(pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]))
        schema = shard_schema(m, flat.type, vectors.shape[1])
    if attributes is not None:
        taken = attributes.take(pa.array(order))
        for name in taken.column_names:
            column = taken.column(name)
            columns.append(column.combine_chunks() if column.num_chunks != 1 else column.chunk(0))
            schema = schema.append(pa.field(ATTRIBUTE_PREFIX + name, column.type))
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
    expected = _CODE_COLUMNS
    unknown = [c for c in table.column_names[4:]
               if c != "vector" and not c.startswith(ATTRIBUTE_PREFIX)]
    if unknown:
        raise ValueError(f"{where}: unknown shard columns {unknown}")
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
        try:
            store_of(vectors, meta.shape.dim)
        except ValueError as err:
            raise ValueError(f"{where}: vector column of {vectors.dtype}[{vec.type.list_size}]"
                             f": {err}") from None
    names = [c for c in table.column_names if c.startswith(ATTRIBUTE_PREFIX)]
    attributes = None
    if names:
        attributes = table.select(names).rename_columns(
            [c[len(ATTRIBUTE_PREFIX):] for c in names]).replace_schema_metadata(None)
    list_ids = table.column("list_id").to_numpy().astype(np.int64)
    if n and (np.diff(list_ids) < 0).any():
        raise ValueError(f"{where}: rows are not sorted by list_id")
    return ShardData(ids=table.column("id").to_numpy().astype(np.int64), list_ids=list_ids,
                     lambda_idx=table.column("lambda").to_numpy().astype(np.uint8),
                     codes=codes.copy(), vectors=vectors, meta=meta, attributes=attributes)

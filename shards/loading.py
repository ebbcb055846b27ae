"""Reading an index back: find its manifest and model, read and verify its shards (SPEC 4).

What can be loaded: a self-contained copy (`save_copy`), an index version folder, or an
index root `<store>/indexes/<name>` (the version CURRENT names), each given as a URI
string, a `Store` of that folder, or an `IndexRoot` (optionally with a version).
Every shard's size, checksum and row count are checked against the manifest, and so is
the tombstone set; a shard or tombstone set kept from an earlier version is read from
that version's folder (`references.holder_folder`). The rows of tombstoned ids are
dropped here, so nothing after loading ever scans a deleted row.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shards.fsio import Location
from shards.index_arrays import IndexArrays
from shards.manifest import MANIFEST_FILE, Manifest, ShardEntry, read_manifest
from shards.models import model_shape, read_model
from shards.references import holder_folder
from shards.shard_file import ShardData, ShardMeta, attribute_types, check_vectors, decode_shard
from shards.tombstones import read_tombstones
from shards.store import CURRENT_FILE, INDEXES_DIR, MODELS_DIR, IndexRoot, Store, read_current
from shards.vector_store import store_dtype, store_width

Loadable = IndexRoot | Store | str


def _folder(where: Loadable, storage_options: dict | None, version: str | None) -> Location:
    if isinstance(where, IndexRoot):
        return where.version_location(version) if version else where.location
    if version is not None:
        raise ValueError(f"version={version!r} is for an IndexRoot, got {where!r}")
    return Store.of(where, storage_options).location


def resolve(where: Loadable, storage_options: dict | None = None, *,
            version: str | None = None) -> tuple[Manifest, Location, Location]:
    """(manifest, folder of the version, folder of its model) for a copy, an index
    version folder, or an index root (the version CURRENT names, or `version`)."""
    loc = _folder(where, storage_options, version)
    if not loc.exists(MANIFEST_FILE):
        if not loc.exists(CURRENT_FILE):
            raise FileNotFoundError(f"{loc.uri}: neither {MANIFEST_FILE} nor {CURRENT_FILE}; "
                                    f"not a snapline index")
        loc = loc.child(read_current(loc)[0])
    manifest = read_manifest(loc)
    if manifest.model_path is not None:
        return manifest, loc, loc.child(manifest.model_path)
    # <store>/indexes/<name>/<version> -> <store>/models/<model_version>
    parts = loc.path.rstrip("/").split("/")
    if len(parts) < 4 or parts[-3] != INDEXES_DIR:
        raise ValueError(f"{loc.uri}/{MANIFEST_FILE}: a store manifest must live at "
                         f"<store>/{INDEXES_DIR}/<name>/<version>/")
    store = loc.rooted_at("/".join(parts[:-3]), loc.uri.rsplit("/", 3)[0])
    return manifest, loc, store.child(MODELS_DIR, manifest.model_version)


def _verified_blob(loc: Location, entry: ShardEntry) -> tuple[bytes, str]:
    """The bytes of a shard a manifest of the version folder loc lists (from the folder
    that holds it), checked against its entry's size and sha256; and its URI."""
    folder = holder_folder(loc, entry.version)
    blob = folder.read_bytes(entry.path)
    where = f"{folder.uri}/{entry.path}"
    if len(blob) != entry.bytes:
        raise ValueError(f"{where}: {len(blob)} bytes, manifest says {entry.bytes} "
                         f"(truncated or replaced)")
    if hashlib.sha256(blob).hexdigest() != entry.sha256:
        raise ValueError(f"{where}: sha256 checksum mismatch (file corrupted or replaced)")
    return blob, where


def read_part_ids(loc: Location, entry: ShardEntry) -> np.ndarray:
    """The stored ids (uint64, tombstoned ones included) of a shard of the version folder
    loc, the file verified as `read_part` does; only the id column is decoded."""
    blob, where = _verified_blob(loc, entry)
    try:
        ids = pq.read_table(pa.BufferReader(blob), columns=["id"]).column("id").to_numpy()
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise ValueError(f"{where}: not a readable Parquet shard ({exc})") from None
    if ids.shape[0] != entry.rows:
        raise ValueError(f"{where}: {ids.shape[0]} rows, manifest says {entry.rows}")
    return ids.astype(np.uint64)


def read_part_meta(loc: Location, entry: ShardEntry) -> ShardMeta:
    """The key-value metadata (model, shape, source URI and row range) of a shard of the
    version folder loc, read from the Parquet footer alone: the file is not verified
    here (`read_part` verifies it when its rows are read)."""
    folder = holder_folder(loc, entry.version)
    where = f"{folder.uri}/{entry.path}"
    try:
        with folder.fs.open(folder.inside(entry.path), "rb") as f:
            schema = pq.read_schema(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: no such file") from None
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{where}: not a readable Parquet shard ({exc})") from None
    return ShardMeta.from_kv(schema.metadata, where)


def read_part(loc: Location, entry: ShardEntry) -> ShardData:
    """A shard of the version folder loc, verified against its manifest entry."""
    blob, where = _verified_blob(loc, entry)
    shard = decode_shard(blob, where)
    if shard.ids.shape[0] != entry.rows:
        raise ValueError(f"{where}: {shard.ids.shape[0]} rows, manifest says {entry.rows}")
    return shard


def _shard_numbers(shards: Sequence[int], loc: Location) -> list[int]:
    """Shard numbers to load: integers, each once (a shard loaded twice would answer
    every query with its ids twice)."""
    if isinstance(shards, (str, bytes)) or not hasattr(shards, "__iter__"):
        raise ValueError(f"{loc.uri}: shards must be a sequence of shard numbers, got {shards!r}")
    picked = list(shards)
    for i in picked:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise ValueError(f"{loc.uri}: shard numbers must be integers, got {i!r}")
    seen = set()
    for i in picked:
        if int(i) in seen:
            raise ValueError(f"{loc.uri}: shard {int(i)} is listed twice in shards={picked!r}; "
                             f"each shard may be loaded once")
        seen.add(int(i))
    return [int(i) for i in picked]


def check_columns(manifest: Manifest, loc: Location, part: ShardData, i: int) -> None:
    """A shard holds exactly the attribute columns (names and types) and the stored vector
    type that its manifest records: every shard of a version agrees."""
    where = f"{loc.uri}: shard {i} ({manifest.shards[i].key})"
    got = attribute_types(part.attributes) or {}
    want = manifest.attributes or {}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        raise ValueError(f"{where}: attribute columns missing {missing}, not in the "
                         f"manifest {extra}")
    for name, kind in want.items():
        if got[name] != kind:
            raise ValueError(f"{where}: attribute {name!r} is {got[name]}, the manifest "
                             f"says {kind}")
    vectors = check_vectors(part.vectors, part.ids.shape[0], manifest.shape.dim)
    if vectors != manifest.vectors:
        raise ValueError(f"{where}: stored vectors {vectors}, the manifest says "
                         f"{manifest.vectors}")


_ROW_FIELDS = ("ids", "list_ids", "lambda_idx", "codes", "vectors")


def _row_arrays(manifest: Manifest, nrows: int) -> dict:
    """Empty arrays for `nrows` rows, one per IndexArrays row field (vectors: None when
    the version stores none)."""
    dim, m = manifest.shape.dim, manifest.shape.code_bytes
    out = {"ids": np.empty(nrows, np.int64), "list_ids": np.empty(nrows, np.int64),
           "lambda_idx": np.empty(nrows, np.uint8), "codes": np.empty((nrows, m), np.uint8),
           "vectors": None}
    if manifest.vectors is not None:
        out["vectors"] = np.empty((nrows, store_width(manifest.vectors, dim)),
                                  store_dtype(manifest.vectors))
    return out


def _gather(loc: Location, manifest: Manifest, picked: Sequence[int],
            tombstones: np.ndarray) -> dict:
    """The live rows of the picked shards as IndexArrays fields. Shard by shard: each is
    read, verified and its live rows copied into arrays sized for all picked rows before
    the next is read, so the load holds the index's rows once plus one shard (not every
    shard decoded and then a concatenated copy)."""
    out = _row_arrays(manifest, sum(manifest.shards[i].rows for i in picked))
    tables, n = [], 0
    for i in picked:
        part = read_part(loc, manifest.shards[i])
        if (part.meta.model_version, part.meta.shape) != (manifest.model_version, manifest.shape):
            raise ValueError(f"{loc.uri}: a shard was encoded with model "
                             f"{part.meta.model_version} {part.meta.shape}, the manifest says "
                             f"{manifest.model_version} {manifest.shape}")
        check_columns(manifest, loc, part, i)
        keep = ~np.isin(part.ids.astype(np.uint64), tombstones)
        rows = int(keep.sum())
        for name in _ROW_FIELDS:
            if out[name] is not None:
                column = getattr(part, name)
                out[name][n:n + rows] = column if rows == keep.size else column[keep]
        if manifest.attributes is not None:
            tables.append(part.attributes.take(pa.array(np.flatnonzero(keep))))
        n += rows
        del part                        # before the next shard is read
    for name in _ROW_FIELDS:            # deleted rows: the arrays' first n rows (views)
        if out[name] is not None and n < out[name].shape[0]:
            out[name] = out[name][:n]
    out["attributes"] = pa.concat_tables(tables) if tables else None
    return out


def load_arrays(where: Loadable, shards: Sequence[int] | None = None,
                storage_options: dict | None = None, *,
                version: str | None = None) -> tuple[Manifest, IndexArrays]:
    """Read and verify a whole index, or the listed shard numbers of it. The rows of
    tombstoned ids are dropped (from ids, list_ids, lambda_idx, codes, vectors and
    attributes); `IndexArrays.tombstones` is the version's whole tombstone set.
    Attributes are None when no shard is loaded."""
    manifest, loc, model_loc = resolve(where, storage_options, version=version)
    picked = range(len(manifest.shards)) if shards is None else _shard_numbers(shards, loc)
    for i in picked:
        if not 0 <= i < len(manifest.shards):
            raise ValueError(f"{loc.uri}: shard {i} out of range [0, {len(manifest.shards)})")
    model_meta, model_arrays = read_model(model_loc, manifest.model_version)
    shape = model_shape(model_meta, model_loc.uri)
    if shape != manifest.shape:
        wrong = ", ".join(f"{k}={v!r} (model: {shape.to_dict()[k]!r})"
                          for k, v in manifest.shape.to_dict().items() if shape.to_dict()[k] != v)
        raise ValueError(f"{loc.uri}/{MANIFEST_FILE}: the manifest's shape disagrees with its "
                         f"model {manifest.model_version}: {wrong}")
    tombstones = read_tombstones(loc, manifest.tombstones)
    data = IndexArrays(model_meta=model_meta, model_arrays=model_arrays,
                       next_id=manifest.next_id, tombstones=tombstones,
                       **_gather(loc, manifest, picked, tombstones))
    return manifest, data

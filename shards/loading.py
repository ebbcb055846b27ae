"""Reading an index back: find its manifest and model, read and verify its shards (SPEC 4).

What can be loaded: a self-contained copy (`save_copy`), an index version folder, or an
index root `<store>/indexes/<name>` (the version CURRENT names), each given as a URI
string, a `Store` of that folder, or an `IndexRoot` (optionally with a version).
Every shard's size, checksum and row count are checked against the manifest.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from shards.fsio import Location
from shards.index_arrays import IndexArrays
from shards.manifest import MANIFEST_FILE, Manifest, ShardEntry, read_manifest
from shards.models import model_shape, read_model
from shards.shard_file import ShardData, decode_shard
from shards.store import CURRENT_FILE, INDEXES_DIR, MODELS_DIR, IndexRoot, Store, read_current

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


def read_part(loc: Location, entry: ShardEntry) -> ShardData:
    """A shard of the version folder loc, verified against its manifest entry."""
    blob = loc.read_bytes(entry.path)
    where = f"{loc.uri}/{entry.path}"
    if len(blob) != entry.bytes:
        raise ValueError(f"{where}: {len(blob)} bytes, manifest says {entry.bytes} "
                         f"(truncated or replaced)")
    if hashlib.sha256(blob).hexdigest() != entry.sha256:
        raise ValueError(f"{where}: sha256 checksum mismatch (file corrupted or replaced)")
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


def load_arrays(where: Loadable, shards: Sequence[int] | None = None,
                storage_options: dict | None = None, *,
                version: str | None = None) -> tuple[Manifest, IndexArrays]:
    """Read and verify a whole index, or the listed shard numbers of it."""
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
    parts = [read_part(loc, manifest.shards[i]) for i in picked]
    for p in parts:
        if (p.meta.model_version, p.meta.shape) != (manifest.model_version, manifest.shape):
            raise ValueError(f"{loc.uri}: a shard was encoded with model {p.meta.model_version} "
                             f"{p.meta.shape}, the manifest says {manifest.model_version} "
                             f"{manifest.shape}")

    def cat(field: str, dtype, shape):
        if not parts:
            return np.empty(shape, dtype)
        return np.concatenate([getattr(p, field) for p in parts])

    data = IndexArrays(model_meta=model_meta, model_arrays=model_arrays,
                       ids=cat("ids", np.int64, (0,)), list_ids=cat("list_ids", np.int64, (0,)),
                       lambda_idx=cat("lambda_idx", np.uint8, (0,)),
                       codes=cat("codes", np.uint8, (0, manifest.shape.code_bytes)),
                       next_id=manifest.next_id)
    return manifest, data

"""Tombstone sets: the ids a version deletes (SPEC 7).

    <version folder>/tombstones/<sha16>.u64    sorted unique uint64 ids, raw little-endian

The manifest lists it as `TombstoneEntry(path, count, sha256, version)`; a delete writes
the whole set of its version (the earlier set plus the new ids), an append or a
compaction that does not change it references the earlier file. Readers check size,
checksum and order before trusting a byte of it.
"""
from __future__ import annotations

import hashlib

import numpy as np

from shards.fsio import Location
from shards.manifest import TombstoneEntry
from shards.references import holder_folder

TOMBSTONES_DIR = "tombstones"
_LE_U64 = np.dtype("<u8")


def as_id_set(ids, what: str = "ids") -> np.ndarray:
    """Sorted unique uint64 ids from any integer array-like (negative ids refused)."""
    arr = np.asarray(ids)
    if arr.size == 0:
        return np.empty(0, np.uint64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must be a 1-d integer array, got shape {arr.shape} "
                         f"dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.signedinteger) and (arr < 0).any():
        raise ValueError(f"{what} must be non-negative, got {int(arr.min())}")
    return np.unique(arr.astype(np.uint64))


def encode_tombstones(ids: np.ndarray) -> tuple[TombstoneEntry | None, bytes]:
    """(manifest entry, file bytes) of a tombstone set; (None, b"") when it is empty."""
    ids = as_id_set(ids, "tombstones")
    if ids.size == 0:
        return None, b""
    blob = ids.astype(_LE_U64).tobytes()
    digest = hashlib.sha256(blob).hexdigest()
    return TombstoneEntry(path=f"{TOMBSTONES_DIR}/{digest[:16]}.u64", count=int(ids.size),
                          sha256=digest), blob


def write_tombstones(vloc: Location, ids: np.ndarray) -> TombstoneEntry | None:
    """Write a tombstone set into the version folder vloc (atomically; skipped when the
    file is already there with the right checksum); None when the set is empty."""
    entry, blob = encode_tombstones(ids)
    if entry is None:
        return None
    if not (vloc.exists(entry.path) and
            hashlib.sha256(vloc.read_bytes(entry.path)).hexdigest() == entry.sha256):
        vloc.write_bytes(entry.path, blob)
    return entry


def read_tombstones(vloc: Location, entry: TombstoneEntry | None) -> np.ndarray:
    """The tombstone set a manifest of the version folder vloc lists (empty for None),
    verified: size, sha256, strictly increasing."""
    if entry is None:
        return np.empty(0, np.uint64)
    folder = holder_folder(vloc, entry.version)
    blob = folder.read_bytes(entry.path)
    where = f"{folder.uri}/{entry.path}"
    if len(blob) != 8 * entry.count:
        raise ValueError(f"{where}: {len(blob)} bytes, the manifest says {entry.count} ids "
                         f"({8 * entry.count} bytes): truncated or replaced")
    if hashlib.sha256(blob).hexdigest() != entry.sha256:
        raise ValueError(f"{where}: sha256 checksum mismatch (tombstone file corrupted or "
                         f"replaced)")
    ids = np.frombuffer(blob, dtype=_LE_U64).astype(np.uint64)
    if ids.size > 1 and not (ids[1:] > ids[:-1]).all():
        raise ValueError(f"{where}: tombstone ids are not sorted and unique")
    return ids

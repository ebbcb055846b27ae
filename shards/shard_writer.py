"""The one shard writer: encode a part's rows to Parquet, name it after its content,
write it atomically, find it again on a rerun (SPEC 4).

    <version folder>/shards/part-NNNNN-<sha16>.parquet

`publish` (one process), `save_copy` and the distributed build's encode workers all
write shards through `encode_part` + `save_part`; the same rows and metadata always
give the same file name, so a rerun skips what is already there and two writers never
overwrite each other's files.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shards.fsio import Location
from shards.index_arrays import IndexArrays
from shards.manifest import ShardEntry
from shards.shard_file import ShardMeta, encode_shard
from shards.store import IndexRoot, as_root

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"


@dataclass(frozen=True)
class EncodedPart:
    """A shard's Parquet bytes and its manifest entry (path named after the content)."""

    entry: ShardEntry
    blob: bytes


def part_path(number: int, digest: str) -> str:
    """`shards/part-NNNNN-<first 16 hex digits of the sha256>.parquet`."""
    return f"{_part_prefix(number)}{digest[:16]}.parquet"


def _part_prefix(number: int) -> str:
    return f"{SHARDS_DIR}/part-{number:05d}-"


def encode_part(number: int, ids: np.ndarray, list_ids: np.ndarray, lambda_idx: np.ndarray,
                codes: np.ndarray, meta: ShardMeta, vectors: np.ndarray | None = None,
                attributes: pa.Table | None = None) -> EncodedPart:
    """Part `number` as Parquet bytes (rows sorted by list id) with its entry."""
    blob = encode_shard(ids, list_ids, lambda_idx, codes, meta, vectors, attributes=attributes)
    digest = hashlib.sha256(blob).hexdigest()
    return EncodedPart(ShardEntry(path=part_path(number, digest), rows=int(ids.shape[0]),
                                  bytes=len(blob), sha256=digest), blob)


def save_part(loc: Location, part: EncodedPart) -> bool:
    """Write a part into the folder loc atomically; False (and nothing written) when the
    file is already there with the right size and checksum."""
    entry = part.entry
    full = loc.join(entry.path)
    if loc.fs.exists(full) and loc.fs.size(full) == entry.bytes and \
            hashlib.sha256(loc.read_bytes(entry.path)).hexdigest() == entry.sha256:
        log.info("%s/%s exists with the right checksum; skipped", loc.uri, entry.path)
        return False
    loc.write_bytes(entry.path, part.blob)
    return True


def write_part(root: IndexRoot, version: str, number: int, ids: np.ndarray,
               list_ids: np.ndarray, lambda_idx: np.ndarray, codes: np.ndarray,
               meta: ShardMeta) -> ShardEntry:
    """Encode and write part `number` of a version folder; returns its entry."""
    part = encode_part(number, ids, list_ids, lambda_idx, codes, meta)
    save_part(as_root(root).version_location(version), part)
    return part.entry


def find_part(root: IndexRoot, version: str, number: int, meta: ShardMeta) -> ShardEntry | None:
    """A finished part `number` of a version folder (right checksum, same metadata: model,
    shape, row range), or None. A part file that fails the checks is removed so that it
    is written again."""
    vloc = as_root(root).version_location(version)
    for file in vloc.listdir(SHARDS_DIR):
        path = f"{SHARDS_DIR}/{file}"
        if not (path.startswith(_part_prefix(number)) and file.endswith(".parquet")):
            continue
        blob = vloc.read_bytes(path)
        digest = hashlib.sha256(blob).hexdigest()
        try:
            found = ShardMeta.from_kv(pq.read_schema(pa.BufferReader(blob)).metadata, path)
            rows = pq.read_metadata(pa.BufferReader(blob)).num_rows
        except (ValueError, pa.ArrowInvalid, OSError):
            found, rows = None, -1
        if path == part_path(number, digest) and found == meta:
            return ShardEntry(path=path, rows=rows, bytes=len(blob), sha256=digest)
        log.warning("%s/%s is not a valid part %d of this build; removing it", vloc.uri, path,
                    number)
        vloc.remove(path)
    return None


def remove_unlisted(loc: Location, entries: Sequence[ShardEntry]) -> None:
    """Remove shard files of the folder loc that `entries` do not list (an older copy's,
    an abandoned attempt's)."""
    listed = {e.path for e in entries if e.version is None}
    for file in loc.listdir(SHARDS_DIR):
        if f"{SHARDS_DIR}/{file}" not in listed:
            log.info("removing %s/%s/%s, not listed", loc.uri, SHARDS_DIR, file)
            loc.remove(f"{SHARDS_DIR}/{file}")


def encode_parts(data: IndexArrays, rows_per_shard: int, source_uri: str = "",
                 first_number: int = 0) -> list[EncodedPart]:
    """Every shard of an index's rows (sorted by list id, `rows_per_shard` a shard, their
    vectors and attribute rows with them), numbered from first_number."""
    meta = ShardMeta(data.model_version, data.shape, source_uri)
    return [encode_part(first_number + number, data.ids[rows], data.list_ids[rows],
                        data.lambda_idx[rows], data.codes[rows], meta,
                        None if data.vectors is None else data.vectors[rows],
                        None if data.attributes is None else data.attributes.take(pa.array(rows)))
            for number, rows in enumerate(data.part_rows(rows_per_shard))]

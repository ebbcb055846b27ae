"""Index versions written part by part by many workers (the distributed build, SPEC 5).

    <store>/indexes/<name>/<version>/build.json        the claim: what this build makes
    <store>/indexes/<name>/<version>/shards/part-NNNNN-<sha16>.parquet
    <store>/indexes/<name>/<version>/manifest.json     written last (publish_parts)

A build claims a fresh version folder by creating build.json exclusively. Each source
partition becomes shard number N; a worker first looks for a finished part N (checksum
in its name and the same model and row range in its metadata) and skips the work if it
is there, so a rerun of an interrupted build resumes the same version folder and writes
only what is missing. Nothing is visible to readers until the manifest and CURRENT are
written, exactly as for `publish`.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shards.index_store import (
    BUILD_FILE,
    _published_versions,
    _version_number,
    commit_manifest,
    current_version,
    index_root,
    load_model,
    utc_now,
)
from shards.manifest import Manifest, ShardEntry, check_name
from shards.shard_file import ShardMeta, encode_shard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildClaim:
    version: str
    record: dict          # the build.json content (fingerprint, model_version once known)
    resumed: bool


def claim_build(store_uri: str, name: str, fingerprint: dict,
                storage_options: dict | None = None) -> BuildClaim:
    """The version folder a build writes: the newest unfinished build with the same
    fingerprint when it is newer than every published version (a rerun resumes it),
    else a new version claimed exclusively (two builds never share a folder)."""
    root = index_root(store_uri, name, storage_options)
    published = _published_versions(root)
    newest_published = max([_version_number(v) for v in published]
                           + [_version_number(current_version(store_uri, name, storage_options)
                                              or "")])
    numbered = sorted((v for v in root.listdir() if _version_number(v) >= 0), key=_version_number)
    for version in reversed(numbered):
        if _version_number(version) <= newest_published:
            break
        if version in published or not root.exists(f"{version}/{BUILD_FILE}"):
            continue
        record = json.loads(root.child(version).read_bytes(BUILD_FILE))
        if record.get("fingerprint") == fingerprint:
            log.info("resuming the unfinished build %s/%s", root.uri, version)
            return BuildClaim(version, record, resumed=True)
        break  # a newer unfinished build of something else: leave it, claim past it
    number = max([_version_number(v) for v in numbered] + [newest_published, 0]) + 1
    while True:
        version = f"v{number:06d}"
        record = {"fingerprint": fingerprint, "model_version": None}
        if root.child(version).create_exclusive(BUILD_FILE, json.dumps(record, indent=1).encode()):
            return BuildClaim(version, record, resumed=False)
        number += 1   # another build claimed it a moment ago


def record_build(store_uri: str, name: str, claim: BuildClaim, storage_options: dict | None = None,
                 **fields) -> BuildClaim:
    """Add fields (e.g. the trained model_version) to a claim's build.json."""
    record = {**claim.record, **fields}
    index_root(store_uri, name, storage_options).child(claim.version).write_bytes(
        BUILD_FILE, json.dumps(record, indent=1).encode())
    return BuildClaim(claim.version, record, claim.resumed)


def _part_prefix(number: int) -> str:
    return f"part-{number:05d}-"


def find_part(store_uri: str, name: str, version: str, number: int, meta: ShardMeta,
              storage_options: dict | None = None) -> ShardEntry | None:
    """A finished part `number` of this build (right checksum, model and row range), or
    None. A part file that fails the checks is removed so that it is written again."""
    vloc = index_root(store_uri, name, storage_options).child(check_name(version, "version"))
    for file in vloc.listdir("shards"):
        if not (file.startswith(_part_prefix(number)) and file.endswith(".parquet")):
            continue
        path = f"shards/{file}"
        blob = vloc.read_bytes(path)
        digest = hashlib.sha256(blob).hexdigest()
        try:
            found = ShardMeta.from_kv(pq.read_schema(pa.BufferReader(blob)).metadata, path)
            rows = pq.read_metadata(pa.BufferReader(blob)).num_rows
        except (ValueError, pa.ArrowInvalid, OSError):
            found, rows = None, -1
        if file == f"{_part_prefix(number)}{digest[:16]}.parquet" and found == meta:
            return ShardEntry(path=path, rows=rows, bytes=len(blob), sha256=digest)
        log.warning("%s/%s is not a valid part %d of this build; removing it", vloc.uri, path,
                    number)
        vloc.remove(path)
    return None


def write_part(store_uri: str, name: str, version: str, number: int, ids: np.ndarray,
               list_ids: np.ndarray, lambda_idx: np.ndarray, codes: np.ndarray,
               meta: ShardMeta, storage_options: dict | None = None) -> ShardEntry:
    """Write part `number` (rows sorted by list id) atomically; returns its entry."""
    blob = encode_shard(ids, list_ids, lambda_idx, codes, meta)
    digest = hashlib.sha256(blob).hexdigest()
    path = f"shards/{_part_prefix(number)}{digest[:16]}.parquet"
    vloc = index_root(store_uri, name, storage_options).child(check_name(version, "version"))
    vloc.write_bytes(path, blob)
    return ShardEntry(path=path, rows=int(ids.shape[0]), bytes=len(blob), sha256=digest)


def publish_parts(store_uri: str, name: str, version: str, model_version: str,
                  entries: list[ShardEntry], source: dict,
                  storage_options: dict | None = None) -> Manifest:
    """Publish a claimed version from its parts (listed in part order): the manifest,
    created exclusively, then CURRENT. Part files not listed are removed first."""
    vloc = index_root(store_uri, name, storage_options).child(check_name(version, "version"))
    meta, _ = load_model(store_uri, model_version, storage_options)
    listed = {e.path for e in entries}
    for file in vloc.listdir("shards"):
        if f"shards/{file}" not in listed:
            log.info("removing %s/shards/%s, not part of the published build", vloc.uri, file)
            vloc.remove(f"shards/{file}")
    ntotal = sum(e.rows for e in entries)
    next_id = int(source.get("rows", ntotal))
    manifest = Manifest(version=version, model_version=model_version, dim=meta["dim"],
                        nlist=meta["nlist"], nedge=meta["nedge"], code_bytes=meta["code_bytes"],
                        nlambda=meta["nlambda"], ntotal=ntotal, next_id=next_id,
                        shards=tuple(entries), name=name, source=dict(source),
                        created=utc_now())
    return commit_manifest(store_uri, name, vloc, manifest, storage_options)


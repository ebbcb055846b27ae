"""Build claims: a distributed build's hold on the version folder it writes (SPEC 5).

    <store>/indexes/<name>/<version>/build.json        the claim: what this build makes
    <store>/indexes/<name>/<version>/shards/part-NNNNN-<sha16>.parquet
    <store>/indexes/<name>/<version>/manifest.json     written last (commit.publish_parts)

A build claims a fresh version folder by creating build.json exclusively. Each source
partition becomes shard number N; a worker first looks for a finished part N
(`shard_writer.find_part`) and skips the work if it is there, so a rerun of an
interrupted build resumes the same version folder and writes only what is missing.
Nothing is visible to readers until the manifest and CURRENT are written.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from shards.store import BUILD_FILE, IndexRoot, as_root, version_number

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildClaim:
    version: str
    record: dict          # the build.json content (fingerprint, model_version once known)
    resumed: bool


def claim_build(root: IndexRoot, fingerprint: dict) -> BuildClaim:
    """The version folder a build writes: the newest unfinished build with the same
    fingerprint when it is newer than every published version (a rerun resumes it),
    else a new version claimed exclusively (two builds never share a folder)."""
    root = as_root(root)
    published = root.versions()
    newest_published = max([version_number(v) for v in published]
                           + [version_number(root.current_version())])
    folders = root.folders()
    for version in reversed(folders):
        if version_number(version) <= newest_published:
            break
        if version in published or not root.claimed(version):
            continue
        record = json.loads(root.version_location(version).read_bytes(BUILD_FILE))
        if record.get("fingerprint") == fingerprint:
            log.info("resuming the unfinished build %s/%s", root.uri, version)
            return BuildClaim(version, record, resumed=True)
        break  # a newer unfinished build of something else: leave it, claim past it
    number = max([version_number(v) for v in folders] + [newest_published, 0]) + 1
    while True:
        version = f"v{number:06d}"
        record = {"fingerprint": fingerprint, "model_version": None}
        if root.version_location(version).create_exclusive(
                BUILD_FILE, json.dumps(record, indent=1).encode()):
            return BuildClaim(version, record, resumed=False)
        number += 1   # another build claimed it a moment ago


def record_build(root: IndexRoot, claim: BuildClaim, **fields) -> BuildClaim:
    """Add fields (e.g. the trained model_version) to a claim's build.json."""
    record = {**claim.record, **fields}
    as_root(root).version_location(claim.version).write_bytes(
        BUILD_FILE, json.dumps(record, indent=1).encode())
    return BuildClaim(claim.version, record, claim.resumed)

"""Making an index version visible: the one commit that `publish` (one process) and a
distributed build (`publish_parts`) share (SPEC 4).

    <store>/indexes/<name>/<version>/shards/*.parquet    written first (shard_writer)
    <store>/indexes/<name>/<version>/manifest.json       created exclusively
    <store>/indexes/<name>/CURRENT                       compare-and-swap, forward only

Of two writers racing for one version with different content exactly one creates the
manifest; the other removes its own shards and gets PublishConflict. CURRENT moves by
compare-and-swap (`Location.read_tagged` / `replace_if`: If-Match on S3, a flock
locally): a writer whose version is older than the CURRENT it finds gets
PublishConflict naming both, so CURRENT never moves back. A rerun of an interrupted
publish finds its own manifest (same content) or chooses the same version again and
completes it; publishing what CURRENT already holds makes no new version.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Callable, Sequence

import numpy as np

from shards.index_arrays import DEFAULT_ROWS_PER_SHARD, IndexArrays
from shards.manifest import (
    MANIFEST_FILE,
    Manifest,
    ShardEntry,
    TombstoneEntry,
    content_id_of,
    read_manifest,
)
from shards.models import write_model
from shards.shape import IndexShape
from shards.shard_file import attribute_types
from shards.shard_writer import encode_parts, remove_unlisted, save_part
from shards.store import CURRENT_FILE, IndexRoot, as_root, read_current, version_number
from shards.tombstones import encode_tombstones, write_tombstones

log = logging.getLogger(__name__)


class PublishConflict(RuntimeError):
    """Another writer published this index version first; nothing of ours was published."""


def utc_now() -> str:
    """A manifest's creation time."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def no_step(*_args) -> None:
    """The default `on_step` of a publish or a save: no progress hook."""
    return None


def make_manifest(version: str, model_version: str, shape: IndexShape,
                  entries: Sequence[ShardEntry], next_id: int, *, name: str | None = None,
                  model_path: str | None = None, source: dict | None = None,
                  tombstones: TombstoneEntry | None = None,
                  attributes: dict[str, str] | None = None,
                  vectors: str | None = None) -> Manifest:
    """The manifest of a version made of `entries` (in shard order), stamped now."""
    return Manifest(version=version, model_version=model_version, shape=shape,
                    ntotal=sum(e.rows for e in entries), next_id=int(next_id),
                    shards=tuple(entries), name=name, model_path=model_path,
                    source=dict(source or {}), created=utc_now(), tombstones=tombstones,
                    attributes=attributes, vectors=vectors)


def columns_of(data: IndexArrays) -> dict:
    """The manifest fields that describe an IndexArrays' optional columns."""
    return {"attributes": attribute_types(data.attributes),
            "vectors": data.store}


def choose_version(root: IndexRoot, model_version: str, entries: Sequence[ShardEntry],
                   next_id: int | None = None,
                   tombstones: TombstoneEntry | None = None) -> str:
    """The version a publish writes: CURRENT's when it holds the same content (nothing new
    to publish), an unfinished publish of the same content (manifest written, CURRENT not
    yet) is completed; otherwise one past every published, current or build-claimed
    version."""
    versions, current = root.versions(), root.current_version()
    content_id = content_id_of(model_version, entries, tombstones)
    for candidate in {current, versions[-1] if versions else None} - {None}:
        if version_number(candidate) < version_number(current) or candidate not in versions:
            continue
        existing = read_manifest(root.version_location(candidate))
        if existing.content_id == content_id and next_id in (None, existing.next_id):
            return candidate
    claimed = [v for v in root.folders() if root.claimed(v)]
    numbers = [version_number(v) for v in versions + claimed] + [version_number(current), 0]
    return f"v{max(numbers) + 1:06d}"


def check_new_version(root: IndexRoot, version: str) -> str:
    """A version a caller asks to publish: a vNNNNNN name (ValueError otherwise) above
    CURRENT's (PublishConflict otherwise: another writer may have just taken it)."""
    if version_number(version) < 0:
        raise ValueError(f"version {version!r} is not a version name like v000001")
    current = root.current_version()
    if version_number(version) <= version_number(current):
        raise PublishConflict(f"index {root.name!r}: version {version} is not above CURRENT "
                              f"{current}; CURRENT never moves back")
    return version


def advance_current(root: IndexRoot, version: str,
                    on_step: Callable[..., None] = no_step, *,
                    expect_current: str | None = None) -> None:
    """Move CURRENT to `version` by compare-and-swap; PublishConflict if a newer version
    became CURRENT first (ours stays an older, published version), or, with
    `expect_current` (a version made from another: an append, a delete, a compaction),
    if CURRENT no longer names the version ours was made from."""
    loc = root.location
    while True:
        current, tag = read_current(loc)
        if current == version:
            return
        if version_number(current) > version_number(version):
            raise PublishConflict(f"index {root.name!r}: {version} was not made CURRENT: "
                                  f"another writer published {current} first (CURRENT never "
                                  f"moves back)")
        if expect_current is not None and current != expect_current:
            raise PublishConflict(f"index {root.name!r}: {version} was made from "
                                  f"{expect_current}, but CURRENT is now {current}; nothing "
                                  f"was published, run it again on {current}")
        on_step("swap", current)
        if loc.replace_if(CURRENT_FILE, (version + "\n").encode(), tag):
            return
        log.info("CURRENT of %s changed while publishing %s; looking again", root.uri, version)


def commit(root: IndexRoot, version: str, model_version: str, shape: IndexShape,
           entries: Sequence[ShardEntry], *, next_id: int, source: dict | None = None,
           on_step: Callable[..., None] = no_step, expect_current: str | None = None,
           **content) -> Manifest:
    """`commit_manifest` of the manifest of `entries` (content: tombstones, attributes,
    vectors, as `make_manifest` takes them; `expect_current` as commit_manifest takes it)."""
    root = as_root(root)
    manifest = make_manifest(version, model_version, shape, entries, next_id,
                             name=root.name, source=source, **content)
    return commit_manifest(root, manifest, expect_current=expect_current, on_step=on_step)


def commit_manifest(root: IndexRoot, manifest: Manifest, *, expect_current: str | None = None,
                    on_step: Callable[..., None] = no_step) -> Manifest:
    """Make a version whose files are all written visible: create its manifest
    exclusively (an identical one from an earlier run is kept; a different one means
    another writer won: our own files are removed and PublishConflict raised), then move
    CURRENT forward to it (from `expect_current` only, when given)."""
    root = as_root(root)
    version = manifest.version
    vloc = root.version_location(version)
    if not vloc.create_exclusive(MANIFEST_FILE, manifest.to_json()):
        existing = read_manifest(vloc)
        if existing.content_id != manifest.content_id:
            for path in _own_files(manifest) - _own_files(existing):
                vloc.remove(path)
            raise PublishConflict(f"index {root.name!r} version {version} was published by "
                                  f"another writer first; this writer's shards were not published")
        manifest = existing    # a rerun of the same publish
    on_step("current")
    advance_current(root, version, on_step, expect_current=expect_current)
    log.info("published %s/%s (model %s, %d shards, %d vectors, %d deleted)", root.uri,
             version, manifest.model_version, len(manifest.shards), manifest.ntotal,
             manifest.deleted)
    return manifest


def _own_files(manifest: Manifest) -> set[str]:
    """The files a manifest lists in its own version folder."""
    entries = [*manifest.shards, *([manifest.tombstones] if manifest.tombstones else [])]
    return {e.path for e in entries if e.version is None}


def publish(root: IndexRoot, data: IndexArrays, *, version: str | None = None,
            rows_per_shard: int = DEFAULT_ROWS_PER_SHARD, source: dict | None = None,
            on_step: Callable[..., None] = no_step) -> Manifest:
    """Publish `data` as a new version of the index `root`: model, shards (with its
    attributes and vectors), its tombstone set (as given: rows of tombstoned ids are
    written and hidden on load), manifest, CURRENT. A rerun after an interruption
    completes the same version: shards already written with the right checksum are
    skipped, an identical manifest is kept."""
    root = as_root(root)
    source = dict(source or {})
    on_step("model")
    write_model(root.store.model_location(data.model_version), data.model_meta,
                data.model_arrays)
    parts = encode_parts(data, rows_per_shard, source.get("uri", ""))
    entries = [p.entry for p in parts]
    tombstones = encode_tombstones(data.tombstones)[0]
    version = (check_new_version(root, version) if version is not None
               else choose_version(root, data.model_version, entries, data.next_id, tombstones))
    vloc = root.version_location(version)
    for number, part in enumerate(parts):
        on_step("shard", number)
        save_part(vloc, part)
    on_step("tombstones")
    write_tombstones(vloc, data.tombstones)
    on_step("manifest")
    return commit(root, version, data.model_version, data.shape, entries,
                  next_id=data.next_id, source=source, on_step=on_step,
                  tombstones=tombstones, **columns_of(data))


def publish_parts(root: IndexRoot, version: str, model_version: str, shape: IndexShape,
                  entries: Sequence[ShardEntry], source: dict, *,
                  tombstones: np.ndarray | None = None,
                  attributes: dict[str, str] | None = None,
                  vectors: str | None = None, next_id: int | None = None,
                  expect_current: str | None = None) -> Manifest:
    """Publish a build's claimed version from its parts (listed in part order, written by
    `shard_writer.write_part`): part files not listed are removed, then the commit.
    Ids are source rows, so the next id is the source's row count unless `next_id` is
    given. A re-encode passes the tombstone set it keeps (written into the version
    folder), the attribute types / vector dtype its parts carry (as the manifest records
    them), the next id of the version it re-encodes and that version as
    `expect_current` (PublishConflict if CURRENT moved away from it meanwhile)."""
    root = as_root(root)
    vloc = root.version_location(version)
    remove_unlisted(vloc, entries)
    ntotal = sum(e.rows for e in entries)
    tomb_entry = None if tombstones is None else write_tombstones(vloc, tombstones)
    next_id = int(source.get("rows", ntotal)) if next_id is None else int(next_id)
    return commit(root, version, model_version, shape, entries, next_id=next_id,
                  source=source, expect_current=expect_current, tombstones=tomb_entry,
                  attributes=attributes, vectors=vectors)

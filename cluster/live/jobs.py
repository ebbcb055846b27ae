"""The delete and compact jobs (SPEC 7): one new version each, published from CURRENT's
by the storage layer; no Ray (the job's driver does the work: a delete writes one
tombstone file, a compaction rewrites the shards it picks).

    snapline delete  --store S --name N --ids URI
    snapline compact --store S --name N [--min-deleted 0.2] [--max-shards K]

- delete: ids from a file (cluster.live.inputs: .npy or Parquet `id`); a version listing
  CURRENT's shards unchanged with the tombstone set grown by the given ids that are live;
  unknown and already deleted ids are ignored (counted in the summary). Nothing to delete:
  no new version.
- compact: `shards.publish_compaction` (its rule: shards with at least `min_deleted` of
  their rows deleted are rewritten without them, consecutive small shards merged, at most
  `max_shards` shards); nothing to do: no new version.
Both refuse an unknown store or index (exit 2) before anything is written.
"""
from __future__ import annotations

import dataclasses
import time

from cluster.live.inputs import read_ids
from cluster.store_check import checked_store
from shards import IndexRoot, publish_compaction, publish_delete, resolve
from shards.manifest import check_name
from shards.tombstones import as_id_set


def published_root(store: str, name: str) -> IndexRoot:
    """The handle of a published index (an unknown store or index: bad input)."""
    check_name(name, "--name")
    root = checked_store(store, "--store", must_exist=True).index(name)
    if root.current_version() is None:
        raise FileNotFoundError(f"--name {name}: no published index named {name!r} in {store}")
    return root


def delete(store: str, name: str, ids: str) -> dict:
    """Delete the ids of file `ids` from index `name`; returns the summary."""
    t0 = time.perf_counter()
    root = published_root(store, name)
    wanted = as_id_set(read_ids(ids, root.store.storage_options), f"--ids {ids}")
    previous = root.current_version()
    version, removed = publish_delete(root, wanted)
    manifest, _, _ = resolve(root, version=version)
    return {"name": name, "store": store, "version": version, "previous_version": previous,
            "changed": version != previous, "ids_given": int(wanted.size), "removed": removed,
            "ignored": int(wanted.size) - removed, "deleted_in_index": manifest.deleted,
            "live_rows": manifest.ntotal - manifest.deleted, "shards": len(manifest.shards),
            "total_s": time.perf_counter() - t0}


def delete_line(s: dict) -> str:
    return (f"snapline delete: {s['name']}/{s['version']} "
            f"({'new' if s['changed'] else 'unchanged'}, from {s['previous_version']}): "
            f"{s['removed']} of {s['ids_given']} ids removed, {s['ignored']} unknown or "
            f"already deleted ignored; {s['deleted_in_index']} ids tombstoned in all, "
            f"in {s['total_s']:.1f} s")


def compact(store: str, name: str, min_deleted: float = 0.2, max_shards: int | None = None,
            rows_per_shard: int | None = None) -> dict:
    """Compact index `name`; returns the CompactionReport as a dict plus the seconds."""
    t0 = time.perf_counter()
    root = published_root(store, name)
    report = publish_compaction(root, min_deleted, max_shards, rows_per_shard=rows_per_shard)
    return {"name": name, "store": store, **dataclasses.asdict(report),
            "total_s": time.perf_counter() - t0}


def compact_line(s: dict) -> str:
    if not s["changed"]:
        return (f"snapline compact: {s['name']}/{s['version']} unchanged: nothing to compact "
                f"({s['shards_before']} shards, {s['tombstones_before']} tombstones)")
    return (f"snapline compact: published {s['name']}/{s['version']} (from "
            f"{s['previous_version']}): {s['shards_before']} shards -> {s['shards_after']}, "
            f"{len(s['rewritten'])} rewritten into {len(s['groups'])}, {s['rows_removed']} "
            f"deleted rows dropped, tombstones {s['tombstones_before']} -> "
            f"{s['tombstones_after']}, in {s['total_s']:.1f} s")

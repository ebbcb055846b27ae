"""Compaction of a live index (SPEC 7): rewrite shards heavy with deleted rows, merge
small ones, so that the number of shards a query touches stays bounded however many
appends and deletes there were.

The rule (`plan_compaction`, a pure function of each shard's live rows):
  1. A shard is *rewritten* (without its deleted rows) when its deleted fraction is at
     least `min_deleted` (and it has a deleted row).
  2. A shard is *small* when its live rows are below half the target (`rows_per_shard`,
     else the index's: `live_versions.Base.target_rows`). Consecutive small shards are merged in order,
     a group closing when the next one would take it past the target. So every group of
     small shards but the last of a run holds more than half the target: with L live
     rows there are at most 2·L/target + (big shards + 1) shards.
  3. With `max_shards`, the two adjacent groups with the fewest live rows together are
     merged until there are at most `max_shards` (groups may then exceed the target).
A group of one shard that is neither rewritten nor merged stays referenced as it is; a
group left with no live row disappears (one empty shard is kept for an empty index).
Tombstones whose rows are gone (or that match no stored row) leave the set.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from shards.commit import no_step
from shards.live_versions import Base, EncodedRows, encode_rows, read_base, write_live
from shards.loading import check_columns, read_part
from shards.shard_file import ShardMeta
from shards.store import IndexRoot, as_root

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompactionReport:
    """What a compaction did. `version` is CURRENT after it (the previous version when
    there was nothing to do: `changed` False); `rewritten` the previous version's shard
    numbers that were rewritten or merged, `groups` which of them went into each new
    shard."""

    version: str
    previous_version: str
    changed: bool
    shards_before: int
    shards_after: int
    rewritten: tuple[int, ...]
    groups: tuple[tuple[int, ...], ...]
    rows_removed: int
    tombstones_before: int
    tombstones_after: int


def plan_compaction(live: list[int], target: int, max_shards: int | None) -> list[list[int]]:
    """Groups of consecutive shard numbers (steps 2 and 3 of this module's rule) from
    each shard's live rows; each group of more than one shard becomes one new shard."""
    groups: list[list[int]] = []
    sizes: list[int] = []
    small_run = False
    for i, rows in enumerate(live):
        small = rows < target / 2
        if small and small_run and sizes[-1] + rows <= target:
            groups[-1].append(i)
            sizes[-1] += rows
        else:
            groups.append([i])
            sizes.append(rows)
        small_run = small
    while max_shards is not None and len(groups) > max_shards:
        pair = min(range(len(groups) - 1), key=lambda j: sizes[j] + sizes[j + 1])
        groups[pair:pair + 2] = [groups[pair] + groups[pair + 1]]
        sizes[pair:pair + 2] = [sizes[pair] + sizes[pair + 1]]
    return groups


def _touched(group: list[int], deleted: list[int], stored: list[int],
             min_deleted: float) -> bool:
    """Whether a group becomes a new shard (merged, or a shard heavy with deleted rows)."""
    if len(group) > 1:
        return True
    i = group[0]
    return deleted[i] > 0 and deleted[i] / max(stored[i], 1) >= min_deleted


def _check_args(min_deleted: float, max_shards: int | None, rows_per_shard: int | None) -> None:
    if not 0.0 <= min_deleted <= 1.0:
        raise ValueError(f"min_deleted must be a fraction in [0, 1], got {min_deleted!r}")
    if max_shards is not None and (isinstance(max_shards, bool) or max_shards < 1):
        raise ValueError(f"max_shards must be >= 1 or None, got {max_shards!r}")
    if rows_per_shard is not None and rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be >= 1 or None, got {rows_per_shard!r}")


def _live_rows(base: Base, group: list[int]) -> EncodedRows:
    """The live rows of a group of the base's shards (read and verified), in order."""
    m, parts, keep = base.manifest, [], []
    for i in group:
        part = read_part(base.loc, m.shards[i])
        check_columns(m, base.loc, part, i)
        parts.append(part)
        keep.append(~np.isin(part.ids.astype(np.uint64), base.tombstones))

    def cat(name):
        return np.concatenate([getattr(p, name)[k] for p, k in zip(parts, keep)])

    attributes = None if m.attributes is None else pa.concat_tables(
        [p.attributes.take(pa.array(np.flatnonzero(k))) for p, k in zip(parts, keep)])
    return EncodedRows(ids=cat("ids"), list_ids=cat("list_ids"), lambda_idx=cat("lambda_idx"),
                       codes=cat("codes"), attributes=attributes,
                       vectors=None if m.vectors is None else cat("vectors"))


def publish_compaction(root: IndexRoot, min_deleted: float = 0.2, max_shards: int | None = None,
                       *, rows_per_shard: int | None = None,
                       on_step: Callable[..., None] = no_step) -> CompactionReport:
    """Compact index `root` (the rule of this module's docstring) into a new version:
    touched shards rewritten without their deleted rows (merged ones into one file),
    the others listed unchanged, tombstones that match no stored row dropped. Returns a
    CompactionReport; with nothing to do, no version is published."""
    _check_args(min_deleted, max_shards, rows_per_shard)
    root = as_root(root)
    base = read_base(root)
    m = base.manifest
    stored = [int(ids.shape[0]) for ids in base.stored]
    deleted = [int(np.isin(ids, base.tombstones).sum()) for ids in base.stored]
    live = [s - d for s, d in zip(stored, deleted)]
    target = base.target_rows(rows_per_shard)
    groups = plan_compaction(live, target, max_shards)
    flags = [_touched(g, deleted, stored, min_deleted) for g in groups]
    touched = [g for g, t in zip(groups, flags) if t]
    kept_ids = [base.stored[g[0]] for g, t in zip(groups, flags) if not t]
    all_kept = np.concatenate(kept_ids) if kept_ids else np.empty(0, np.uint64)
    tombstones = np.intersect1d(base.tombstones, all_kept)
    report = dict(previous_version=base.version, shards_before=len(m.shards),
                  rewritten=tuple(i for g in touched for i in g),
                  groups=tuple(tuple(g) for g in touched),
                  rows_removed=sum(deleted[i] for g in touched for i in g),
                  tombstones_before=base.tombstones.size, tombstones_after=tombstones.size)
    if not touched and tombstones.size == base.tombstones.size:
        return CompactionReport(version=base.version, changed=False,
                                shards_after=len(m.shards), **report)
    entries, parts = _new_shards(base, groups, flags, live)
    manifest = write_live(root, base, entries, parts, tombstones, next_id=m.next_id,
                          on_step=on_step)
    log.info("compacted %s %s -> %s: %d shards -> %d, %d deleted rows removed", root.uri,
             base.version, manifest.version, len(m.shards), len(entries),
             report["rows_removed"])
    return CompactionReport(version=manifest.version, changed=True, shards_after=len(entries),
                            **report)


def _new_shards(base: Base, groups: list[list[int]], flags: list[bool], live: list[int]):
    """(entries in shard order, new parts): kept shards referenced, each touched group
    (flags) encoded as one new shard; a group without live rows vanishes (one empty
    shard stays when every shard would)."""
    m = base.manifest
    meta = ShardMeta(m.model_version, m.shape)
    kept = base.kept_entries()
    entries, parts = [], []
    for group, touched in zip(groups, flags):
        if not touched:
            entries.append(kept[group[0]])
        elif sum(live[i] for i in group) > 0:
            parts.append(encode_rows(len(entries), _live_rows(base, group), None, meta))
            entries.append(parts[-1].entry)
    if not entries:
        empty = _live_rows(base, groups[0])
        parts.append(encode_rows(0, empty, None, meta))
        entries.append(parts[-1].entry)
    return entries, parts

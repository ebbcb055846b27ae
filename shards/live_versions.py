"""Live versions of an index: append rows, delete ids (SPEC 7). Compaction is in
`shards.compaction`.

Each call makes one new version from the version CURRENT names (its *base*) and ends in
the one commit of `shards.commit` (manifest created exclusively, then CURRENT by
compare-and-swap from the base): nothing is visible before CURRENT moves, and if CURRENT
moved away from the base meanwhile, PublishConflict says so and nothing is published.

    publish_append(root, rows)     base's shards listed unchanged (no copy, no rewrite:
                                   `ShardEntry.version` names the folder holding each)
                                   + new shards of `rows`, next_id past the new ids
    publish_delete(root, ids)      base's shards listed unchanged + a tombstone set
                                   (the base's set and the given ids that are live)

A crash at any step leaves CURRENT on the base; running the same call again completes the
same version (files are named by their content; an identical manifest is kept).

Ids are unique across an index: an appended id may not be a live id of the base, nor
appear twice among the new rows (ValueError naming it). Re-inserting a deleted id is
allowed once its old row is no longer stored (after `publish_compaction` dropped it); the
id then leaves the tombstone set. While the old row is still stored the append is
refused (an id-based tombstone would hide both rows).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pyarrow as pa

from shards.commit import choose_version, commit_manifest, make_manifest, no_step
from shards.fsio import Location
from shards.index_arrays import DEFAULT_ROWS_PER_SHARD
from shards.loading import read_part_ids, resolve
from shards.manifest import Manifest, ShardEntry, TombstoneEntry
from shards.shard_file import ShardMeta, attribute_types, check_attributes, check_vectors
from shards.shard_writer import EncodedPart, encode_part, save_part
from shards.store import IndexRoot, as_root
from shards.tombstones import as_id_set, encode_tombstones, read_tombstones, write_tombstones

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class EncodedRows:
    """Rows encoded with an index's current model, to append: ids (unique, >= 0),
    list_ids, lambda_idx, codes (n, code_bytes) uint8, optional attributes (a pyarrow
    Table, one row per row, the index's columns and types) and vectors ((n, dim), the
    index's stored dtype). `model_version`, when known, must be the index's model."""

    ids: np.ndarray
    list_ids: np.ndarray
    lambda_idx: np.ndarray
    codes: np.ndarray
    attributes: pa.Table | None = None
    vectors: np.ndarray | None = None
    model_version: str | None = None

    @classmethod
    def of(cls, rows) -> "EncodedRows":
        """EncodedRows from itself or anything with those fields (an IndexArrays: its
        model version is checked too)."""
        if isinstance(rows, cls):
            return rows
        try:
            return cls(ids=rows.ids, list_ids=rows.list_ids, lambda_idx=rows.lambda_idx,
                       codes=rows.codes, attributes=getattr(rows, "attributes", None),
                       vectors=getattr(rows, "vectors", None),
                       model_version=getattr(rows, "model_version", None))
        except AttributeError as exc:
            raise TypeError(f"rows must be EncodedRows or IndexArrays-like ({exc})") from None

    @property
    def n(self) -> int:
        return int(np.shape(self.ids)[0])


@dataclass(frozen=True)
class Base:
    """The version a live publish starts from: its manifest, folder and stored ids."""

    manifest: Manifest
    loc: Location
    stored: list[np.ndarray]       # uint64 ids of each shard, tombstoned rows included
    tombstones: np.ndarray         # sorted unique uint64

    @property
    def version(self) -> str:
        return self.manifest.version

    def all_stored(self) -> np.ndarray:
        return np.concatenate(self.stored) if self.stored else np.empty(0, np.uint64)

    def target_rows(self, rows_per_shard: int | None = None) -> int:
        """Rows a new shard aims at: `rows_per_shard` if given, else the index's (its
        build's `source.rows_per_shard`), else its largest shard's, else the default."""
        target = (rows_per_shard or self.manifest.source.get("rows_per_shard")
                  or max((e.rows for e in self.manifest.shards), default=0)
                  or DEFAULT_ROWS_PER_SHARD)
        if isinstance(target, bool) or not isinstance(target, int) or target <= 0:
            raise ValueError(f"rows_per_shard must be a positive integer, got {target!r}")
        return target

    def kept_entries(self) -> list[ShardEntry]:
        """The base's shards as a later version lists them (folder named)."""
        return [referenced(e, self.version) for e in self.manifest.shards]

    def kept_tombstones(self, ids: np.ndarray) -> TombstoneEntry | None:
        """The entry of tombstone set `ids` in a later version: the base's own entry
        (referenced) when unchanged, else a new file's (written by `write_live`)."""
        if self.manifest.tombstones is not None and np.array_equal(ids, self.tombstones):
            return referenced(self.manifest.tombstones, self.version)
        return encode_tombstones(ids)[0]


def referenced(entry, version: str):
    """A shard or tombstone entry of `version` as a later version lists it."""
    return entry if entry.version is not None else replace(entry, version=version)


def read_base(root: IndexRoot) -> Base:
    """The version CURRENT names with every shard's stored ids (each shard verified)."""
    root = as_root(root)
    if root.current_version() is None:
        raise FileNotFoundError(f"index {root.name!r} at {root.uri} has no published "
                                f"version; publish one first")
    manifest, loc, _ = resolve(root)
    stored = [read_part_ids(loc, e) for e in manifest.shards]
    return Base(manifest, loc, stored, read_tombstones(loc, manifest.tombstones))


def write_live(root: IndexRoot, base: Base, entries: list[ShardEntry], parts: list[EncodedPart],
               tombstones: np.ndarray, *, next_id: int,
               on_step: Callable[..., None] = no_step) -> Manifest:
    """Write the new files of a version made from `base` (its own shards `parts`, its
    tombstone set when new) and commit it from the base."""
    m = base.manifest
    tomb_entry = base.kept_tombstones(tombstones)
    version = choose_version(root, m.model_version, entries, next_id, tomb_entry)
    vloc = root.version_location(version)
    for number, part in enumerate(parts):
        on_step("shard", number)
        save_part(vloc, part)
    if tomb_entry is not None and tomb_entry.version is None:
        on_step("tombstones")
        write_tombstones(vloc, tombstones)
    on_step("manifest")
    manifest = make_manifest(version, m.model_version, m.shape, entries, next_id,
                             name=root.name, source=m.source, tombstones=tomb_entry,
                             attributes=m.attributes, vectors=m.vectors)
    return commit_manifest(root, manifest, expect_current=base.version, on_step=on_step)


def _check_rows(rows: EncodedRows, m: Manifest) -> None:
    """Shapes, dtypes, ranges, model and columns of rows to append to an index at m."""
    n, shape = rows.n, m.shape
    codes = np.asarray(rows.codes)
    if codes.shape != (n, shape.code_bytes) or codes.dtype != np.uint8:
        raise ValueError(f"codes must be ({n}, {shape.code_bytes}) uint8 (one per id), got "
                         f"{codes.shape} {codes.dtype}")
    for name in ("ids", "list_ids", "lambda_idx"):
        arr = np.asarray(getattr(rows, name))
        if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must be ({n},) integers, got {arr.shape} {arr.dtype}")
    nlists = shape.nlist * shape.nedge
    if n and not (0 <= np.min(rows.list_ids) and np.max(rows.list_ids) < nlists):
        raise ValueError(f"list_ids must be in [0, {nlists}), got [{np.min(rows.list_ids)}, "
                         f"{np.max(rows.list_ids)}]")
    if n and not (0 <= np.min(rows.lambda_idx) and np.max(rows.lambda_idx) < shape.nlambda):
        raise ValueError(f"lambda_idx must be in [0, {shape.nlambda})")
    if rows.model_version is not None and rows.model_version != m.model_version:
        raise ValueError(f"rows were encoded with model {rows.model_version}, index "
                         f"{m.name!r} {m.version} is encoded with {m.model_version}")
    check_columns_match(rows.attributes, rows.vectors, n, m)


def check_columns_match(attributes: pa.Table | None, vectors: np.ndarray | None, n: int,
                        m: Manifest) -> None:
    """New rows carry exactly the index's attribute columns (names, types) and stored
    vectors (dtype): a missing or extra one is an error naming it."""
    check_attributes(attributes, n)
    store = check_vectors(vectors, n, m.shape.dim)
    got, want = attribute_types(attributes) or {}, m.attributes or {}
    for name in sorted(set(want) | set(got)):
        if name not in got:
            raise ValueError(f"attribute column {name!r} ({want[name]}) of index {m.name!r} "
                             f"is missing from the new rows")
        if name not in want:
            raise ValueError(f"attribute column {name!r} is not a column of index {m.name!r} "
                             f"(its columns: {sorted(want)})")
        if got[name] != want[name]:
            raise ValueError(f"attribute column {name!r} is {got[name]}, index {m.name!r} "
                             f"stores {want[name]}")
    if store != m.vectors:
        raise ValueError(f"index {m.name!r} stores vectors as {m.vectors}, the new rows "
                         f"bring {store}")


def _new_tombstones(ids: np.ndarray, base: Base) -> np.ndarray:
    """The tombstone set after appending `ids` (uint64, unique): a live id or one whose
    deleted row is still stored is refused, naming it; a deleted id whose row is gone is
    re-inserted (leaves the set)."""
    stored = base.all_stored()
    clash = np.intersect1d(ids, stored)
    if clash.size:
        live = np.setdiff1d(clash, base.tombstones)
        if live.size:
            raise ValueError(f"id {int(live[0])} is already in index {base.manifest.name!r} "
                             f"{base.version} ({live.size} of the new ids are); ids are "
                             f"unique across an index")
        raise ValueError(f"id {int(clash[0])} was deleted but its row is still stored in "
                         f"{base.version} ({clash.size} such ids); run publish_compaction "
                         f"before re-inserting it")
    return np.setdiff1d(base.tombstones, ids)


def publish_append(root: IndexRoot, rows, *, rows_per_shard: int | None = None,
                   source_uri: str = "", on_step: Callable[..., None] = no_step) -> Manifest:
    """Publish a version of index `root` = CURRENT's shards (listed unchanged) + new
    shards of `rows` (EncodedRows or an IndexArrays of the same model; sorted by list id,
    cut every `rows_per_shard` rows, default `Base.target_rows`). Reads every stored id
    of CURRENT (each shard verified) to check uniqueness. Ids must be new to the index
    (ValueError naming a duplicate). Returns the new manifest (CURRENT's, unchanged,
    for zero rows)."""
    root = as_root(root)
    rows = EncodedRows.of(rows)
    base = read_base(root)
    m = base.manifest
    _check_rows(rows, m)
    if rows.n == 0:
        return m
    ids = np.asarray(rows.ids)
    if not 0 <= int(ids.min()) <= int(ids.max()) < 2**63:
        raise ValueError(f"ids must be in [0, 2**63), got [{int(ids.min())}, {int(ids.max())}]")
    unique, counts = np.unique(ids.astype(np.uint64), return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"id {int(unique[counts > 1][0])} appears "
                         f"{int(counts[counts > 1][0])} times among the new rows")
    tombstones = _new_tombstones(unique, base)
    per_shard = base.target_rows(rows_per_shard)
    meta = ShardMeta(m.model_version, m.shape, source_uri)
    order = np.argsort(rows.list_ids, kind="stable")
    first = len(m.shards)
    parts = [encode_rows(first + i, rows, order[start:start + per_shard], meta)
             for i, start in enumerate(range(0, rows.n, per_shard))]
    next_id = max(m.next_id, int(unique[-1]) + 1)
    return write_live(root, base, base.kept_entries() + [p.entry for p in parts], parts,
                      tombstones, next_id=next_id, on_step=on_step)


def encode_rows(number: int, rows: EncodedRows, picked: np.ndarray | None,
                meta: ShardMeta) -> EncodedPart:
    """Part `number` of the rows `picked` of `rows` (None: all)."""
    if picked is None:
        picked = np.arange(rows.n)
    return encode_part(number, np.asarray(rows.ids)[picked], np.asarray(rows.list_ids)[picked],
                       np.asarray(rows.lambda_idx)[picked], np.asarray(rows.codes)[picked], meta,
                       None if rows.vectors is None else rows.vectors[picked],
                       None if rows.attributes is None else rows.attributes.take(pa.array(picked)))


def publish_delete(root: IndexRoot, ids, *,
                   on_step: Callable[..., None] = no_step) -> tuple[str, int]:
    """Delete `ids` from index `root`: a version listing CURRENT's shards unchanged with
    tombstone set = CURRENT's + the given ids that are live. Unknown or already deleted
    ids are ignored (not counted). Returns (the version now CURRENT, number removed);
    nothing removed: no new version (CURRENT's, 0)."""
    root = as_root(root)
    wanted = as_id_set(ids, "ids to delete")
    base = read_base(root)
    live = np.setdiff1d(np.intersect1d(wanted, base.all_stored()), base.tombstones)
    if live.size == 0:
        return base.version, 0
    tombstones = np.union1d(base.tombstones, live)
    manifest = write_live(root, base, base.kept_entries(), [], tombstones,
                          next_id=base.manifest.next_id, on_step=on_step)
    log.info("deleted %d ids of %s in %s", live.size, root.uri, manifest.version)
    return manifest.version, int(live.size)

"""What a re-encode reads, decided before any work (issue 15 point 6, SPEC 7).

A re-encode works shard by shard on the version CURRENT names (its *base*): shard i of
the base becomes part i of the new version, with the same ids, attribute rows and stored
vectors, and new list ids, lambdas and codes from the new model. Where shard i's vectors
come from (`plan_reencode`, from each shard's Parquet footer, `ShardMeta`):

  1. the index stores vectors (`Manifest.vectors`): the shard's own `vector` column; no
     source is needed (re-encoding without the source, SPEC 7);
  2. else its source: a build's shard holds rows [row_start, row_stop) of `source_uri`,
     id == source row (as the build writes them); a shard without a row range whose
     `source_uri` is the index's own source (a single-process `publish(source=...)`)
     holds rows of it by the same rule;
  3. else (an appended shard without a row range of the index's source, a compacted
     shard: neither records where its rows came from) its vectors cannot be recovered:
     StaleCheckError naming the shard.

Rows whose id is in the base's tombstone set are dropped, not re-encoded (no reader
would ever see them); a shard left with no live row is not listed in the new version.
So every deleted id the base still stored is gone from the new version, which has no
tombstone set (as after a compaction: a deleted id may then be appended again).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from cluster.build.encode_workers import READ_CHUNK_ROWS
from cluster.estimate import (CHUNK_FORMS, FLOAT_BYTES, PROCESS_BYTES, MemoryNeed, model_bytes,
                              stored_row_bytes)
from shards import IndexRoot, open_vectors
from shards.loading import read_part_meta
from shards.manifest import Manifest, ShardEntry
from shards.shape import IndexShape
from shards.shard_file import ShardMeta
from shards.vector_store import store_nbytes


class StaleCheckError(ValueError):
    """The index and the requested model or source cannot be re-encoded together."""


@dataclass(frozen=True)
class ShardInput:
    """Where shard `shard` of the base is read from: its entry, its footer metadata
    (source URI and row range, kept in the new part), and for vectors read from a
    source, that source ({"uri", "format", "column"}) and the rows [row_start,
    row_stop) its ids lie in (id == source row)."""

    shard: int
    entry: ShardEntry
    meta: ShardMeta
    source: dict | None = None
    row_start: int = 0
    row_stop: int = 0


@dataclass(frozen=True)
class ReencodePlan:
    """A re-encode of version `base` with model `model_version` (of shape `shape`): one
    input per shard of the base, in shard order."""

    base: Manifest
    model_version: str
    shape: IndexShape
    inputs: tuple[ShardInput, ...]

    @property
    def vectors_from(self) -> Literal["stored", "source"]:
        return "stored" if self.base.vectors is not None else "source"

    def fingerprint(self) -> dict:
        """What makes two runs the same re-encode (a rerun resumes it): the base's
        content and the model."""
        return {"reencode": {"base": self.base.version, "content_id": self.base.content_id,
                             "model": self.model_version}}


def plan_reencode(root: IndexRoot, base: Manifest, model_version: str,
                  shape: IndexShape) -> ReencodePlan:
    """The inputs of every shard of `base` (rule of this module's docstring): refuses,
    naming the shard, when one has neither stored vectors nor a source to read them
    from; opens each source once and checks it still holds the rows the shards need."""
    loc = root.version_location(base.version)
    metas = [read_part_meta(loc, entry) for entry in base.shards]
    if base.vectors is not None:
        return ReencodePlan(base, model_version, shape, tuple(
            ShardInput(i, e, meta) for i, (e, meta) in enumerate(zip(base.shards, metas))))
    lost = [i for i, meta in enumerate(metas) if _source_spec(base, meta) is None]
    if lost:
        i = lost[0]
        origin = (f"written from {metas[i].source_uri!r} without a source row range"
                  if metas[i].source_uri else "no source recorded")
        raise StaleCheckError(
            f"index {base.name!r} {base.version}: shard {i} ({_file(base, base.shards[i])}) "
            f"cannot be re-encoded: the index stores no vectors and the shard has no recoverable "
            f"source ({origin}; an appended or compacted shard){_more(lost)}. Re-encoding "
            f"such shards needs an index with stored vectors")
    readers = {}
    inputs = []
    for i, (entry, meta) in enumerate(zip(base.shards, metas)):
        spec = _source_spec(base, meta)
        if spec["uri"] not in readers:
            readers[spec["uri"]] = _open_source(base, spec, i)
        n = readers[spec["uri"]].n
        start, stop = (0, n) if meta.row_start is None else (meta.row_start, meta.row_stop)
        if not 0 <= start <= stop <= n:
            raise StaleCheckError(f"index {base.name!r} {base.version}: shard {i} "
                                  f"({_file(base, entry)}) holds rows [{start}, {stop}) of "
                                  f"{spec['uri']}, which now has {n} rows: refusing to "
                                  f"re-encode")
        inputs.append(ShardInput(i, entry, meta, spec, start, stop))
    return ReencodePlan(base, model_version, shape, tuple(inputs))


def _file(base: Manifest, entry: ShardEntry) -> str:
    """A shard's file, named by the version folder that holds it."""
    return f"{entry.version or base.version}/{entry.path}"


def _more(lost: list[int]) -> str:
    return f" ({len(lost) - 1} more such shards: {lost[1:6]}...)" if len(lost) > 1 else ""


def _source_spec(base: Manifest, meta: ShardMeta) -> dict | None:
    """The source a shard's vectors are read from (rule 2), or None."""
    own = base.source.get("uri")
    if meta.source_uri and meta.source_uri == own:
        return {"uri": own, "format": base.source.get("format"),
                "column": base.source.get("column")}
    if meta.source_uri and meta.row_start is not None and meta.row_stop is not None:
        return {"uri": meta.source_uri, "format": None, "column": None}
    return None


def _open_source(base: Manifest, spec: dict, shard: int):
    """A reader of a source (opened once per re-encode) that still matches the index."""
    try:
        reader = open_vectors(spec["uri"], spec["format"], column=spec["column"])
    except (FileNotFoundError, ValueError, PermissionError) as exc:
        raise StaleCheckError(f"index {base.name!r} source (of shard {shard}): {exc}") from None
    dim = base.shape.dim
    rows = base.source.get("rows") if spec["uri"] == base.source.get("uri") else None
    if reader.d != dim or rows not in (None, reader.n):
        raise StaleCheckError(f"source {spec['uri']} now has {reader.n} rows of d={reader.d}; "
                              f"index {base.name!r} {base.version} was built from "
                              f"{rows if rows is not None else 'its'} rows of d={dim}: "
                              f"refusing to re-encode")
    return reader


def reencode_memory(plan: ReencodePlan, workers: int) -> list[MemoryNeed]:
    """The encode workers' peak: each holds the new model and one shard at a time, the
    largest: its file, its decoded rows (old codes, stored vectors), the new rows
    (twice: as encoded and sorted, with their vectors), the new file, and a chunk of
    source rows in its three forms. Attribute columns count at their stored size."""
    if not plan.inputs:
        return []
    old, new = plan.base.shape, plan.shape
    vector = store_nbytes(plan.base.vectors, old.dim)
    biggest = max(plan.inputs, key=lambda s: (s.entry.rows, s.entry.bytes)).entry
    rows = biggest.rows
    shard = (2 * biggest.bytes + rows * (stored_row_bytes(old) + vector)
             + rows * (2 * stored_row_bytes(new) + vector))
    chunk = CHUNK_FORMS * min(READ_CHUNK_ROWS, rows) * old.dim * FLOAT_BYTES
    one = PROCESS_BYTES + model_bytes(new) + shard + chunk
    return [MemoryNeed("encode workers", workers * one,
                       f"{workers} workers x {one / 1e9:.2f} GB (model, the largest shard: "
                       f"{rows} rows, {biggest.bytes} stored bytes, read and re-encoded)")]

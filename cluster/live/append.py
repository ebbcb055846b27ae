"""The append job (SPEC 7): new rows encoded with the index's current model on Ray,
published as one new version that lists the old shards unchanged plus new ones.

    snapline append --store S --name N --source URI [--ids URI] [--attributes URI] [--workers W]
    ray job submit --working-dir . -- python -m cluster.live append --store S --name N --source URI

1. check (before Ray, once): the store, the index (CURRENT's manifest), its model (every
   checksum; the model's shape, metric included, must be the index's), the source
   (the build's readers and formats: .fbin/.u8bin/.i8bin/..., Parquet with a vector
   column; its dimension), the ids (`--ids`, else next_id, next_id+1, ... of the current
   version; their count, duplicates, and ids already stored), the attributes
   (cluster.live.inputs), and the memory of the driver and the encode workers;
2. encode: one Ray Data actor pool over row-range partitions of the source
   (cluster.live.encode), each actor loading the model once; stored vectors are kept
   when the index has a vector store (its manifest's dtype);
3. publish: one `shards.publish_append` (refuses a duplicate id, naming it), CURRENT last.

Memory bound: the driver gathers every appended row encoded before the one publish:
about 3 x rows x (code_bytes + 13 + stored vector bytes) bytes plus twice the attribute
table (`cluster.estimate.append_memory`; refused before launch when the machine reports
less available). Append files larger than that in several runs.

A run stopped anywhere before CURRENT moves (killed driver, a failed publish) leaves CURRENT
on the old version; running the same append again encodes again and completes the same
version (shards are named by their content; an identical manifest is kept).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import ray

from cluster.estimate import (append_memory, encode_memory, local_available_memory,
                              refuse_unless_fits)
from cluster.live.encode import READ_CHUNK_ROWS, encode_on_ray, part_rows
from cluster.live.inputs import (first_duplicate, match_attributes, read_ids, read_table,
                                 source_attributes)
from cluster.live.jobs import published_root
from cluster.ray_session import available_memory, connect
from shards import (EncodedRows, IndexRoot, Store, VectorReader, load_model, open_vectors,
                    publish_append, resolve)
from shards.commit import no_step
from shards.live_versions import read_base
from shards.manifest import Manifest, check_name
from shards.models import model_shape
from shards.vector_store import store_nbytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppendRequest:
    """What `snapline append` asks for (flags named as on the command line)."""

    store: str
    name: str
    source: str
    format: str | None = None        # the source's format (default: from its extension)
    column: str | None = None        # the vector column of a Parquet source
    ids: str | None = None
    attributes: str | None = None
    workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def __post_init__(self):
        check_name(self.name, "--name")
        if not isinstance(self.source, str) or not self.source:
            raise ValueError("--source: a vector file URI is required")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) \
                or self.workers < 1:
            raise ValueError(f"--workers must be an integer >= 1, got {self.workers!r}")
        if not (math.isfinite(self.cpus_per_worker) and self.cpus_per_worker > 0):
            raise ValueError(f"--cpus-per-worker must be a finite number > 0, got "
                             f"{self.cpus_per_worker!r}")
        if not (math.isfinite(self.gpus_per_worker) and self.gpus_per_worker >= 0):
            raise ValueError(f"--gpus-per-worker must be a finite number >= 0, got "
                             f"{self.gpus_per_worker!r}")


@dataclass(frozen=True, eq=False)
class CheckedAppend:
    """What check_append established; run_append takes it."""

    request: AppendRequest
    root: IndexRoot
    manifest: Manifest           # CURRENT's when checked (publish_append re-reads CURRENT)
    reader: VectorReader
    ids: np.ndarray              # int64, one per source row
    attributes: pa.Table | None


def _check_model(store: Store, m: Manifest) -> None:
    """The index's model loads (every checksum) and has the index's shape and metric."""
    meta, _ = load_model(store, m.model_version)
    shape = model_shape(meta, f"model {m.model_version}")
    if shape.metric != m.shape.metric:
        raise ValueError(f"index {m.name!r} {m.version} ranks by metric {m.shape.metric!r} but "
                         f"its model {m.model_version} was trained for {shape.metric!r}: "
                         f"refusing to append (metric mismatch)")
    if shape != m.shape:
        diff = [f"{k} {v} vs {getattr(m.shape, k)}" for k, v in vars(shape).items()
                if getattr(m.shape, k) != v]
        raise ValueError(f"model {m.model_version} does not match index {m.name!r} "
                         f"{m.version}: {', '.join(diff)} (model vs index)")


def _open_source(req: AppendRequest, store: Store, m: Manifest) -> VectorReader:
    try:
        reader = open_vectors(req.source, req.format, store.storage_options, column=req.column)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"--source: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"--source: {exc}") from None
    if reader.d != m.shape.dim:
        raise ValueError(f"--source {req.source}: {reader.d}-d vectors, index {m.name!r} "
                         f"holds {m.shape.dim}-d ones (dimension mismatch)")
    return reader


def _ids(req: AppendRequest, store: Store, root: IndexRoot, m: Manifest, n: int) -> np.ndarray:
    """The appended ids: --ids (checked: one per source row, unique, none already stored),
    else next_id, next_id+1, ..."""
    if req.ids is None:
        return np.arange(m.next_id, m.next_id + n, dtype=np.int64)
    ids = read_ids(req.ids, store.storage_options)
    if ids.size != n:
        raise ValueError(f"--ids {req.ids}: {ids.size} ids for the {n} rows of --source "
                         f"{req.source} (one id per source row, in its order)")
    dup = first_duplicate(ids)
    if dup is not None:
        raise ValueError(f"--ids {req.ids}: id {dup} appears more than once")
    if n and int(ids.min()) < m.next_id:     # every stored id is below next_id
        base = read_base(root)
        clash = np.intersect1d(ids.astype(np.uint64), base.all_stored())
        if clash.size:
            live = np.setdiff1d(clash, base.tombstones)
            what = ("is already in" if live.size else
                    "was deleted but its row is still stored (run `snapline compact` first) in")
            raise ValueError(f"--ids {req.ids}: id {int((live if live.size else clash)[0])} "
                             f"{what} index {m.name!r} {base.version} ({clash.size} of the ids "
                             f"are stored); ids are unique across an index")
    return ids


def _attributes(req: AppendRequest, store: Store, m: Manifest, reader: VectorReader,
                ids: np.ndarray) -> pa.Table | None:
    if reader.n == 0:                # an empty source appends nothing, attributes or not
        return None
    if req.attributes is not None:
        table = read_table(req.attributes, store.storage_options)
        return match_attributes(table, ids, m, f"--attributes {req.attributes}")
    if not m.attributes:
        return None
    if reader.format != "parquet":
        raise ValueError(f"index {m.name!r} has attribute columns {sorted(m.attributes)}: give "
                         f"--attributes (or a Parquet source holding those columns)")
    table = source_attributes(req.source, sorted(m.attributes), store.storage_options)
    return match_attributes(table, ids, m, f"--source {req.source}")


def _absolute(uri: str) -> str:
    """A local path made absolute on the driver, so that actors read the same file."""
    return uri if "://" in uri else os.path.abspath(uri)


def check_append(req: AppendRequest) -> CheckedAppend:
    """Everything that must hold before an append starts (no Ray); raises naming the
    problem (ValueError / FileNotFoundError: bad input)."""
    req = dataclasses.replace(req, store=_absolute(req.store), source=_absolute(req.source))
    root = published_root(req.store, req.name)
    store, m = root.store, resolve(root)[0]
    _check_model(store, m)
    reader = _open_source(req, store, m)
    ids = _ids(req, store, root, m, reader.n)
    attributes = _attributes(req, store, m, reader, ids)
    vector_bytes = store_nbytes(m.vectors, m.shape.dim)
    refuse_unless_fits([append_memory(m.shape, reader.n, vector_bytes,
                                      0 if attributes is None else attributes.nbytes)],
                       local_available_memory(), f"append to {req.name}")
    return CheckedAppend(req, root, m, reader, ids, attributes)


def run_append(checked: CheckedAppend, on_step: Callable[..., None] = no_step) -> dict:
    """Encode on the connected Ray, then publish; returns the summary. `on_step(name,
    ...)` is called with "encoded" between the two, then with publish_append's steps
    ("shard", number; "manifest"; ...): a test's way to stop the job there."""
    t0 = time.perf_counter()
    req, m, n = checked.request, checked.manifest, checked.reader.n
    summary = {"name": req.name, "store": req.store, "source": req.source,
               "previous_version": m.version, "model_version": m.model_version,
               "rows_appended": n, "workers": req.workers}
    if n == 0:
        log.info("append: %s holds no rows; nothing to publish", req.source)
        return {**summary, "version": m.version, "shards": len(m.shards), "new_shards": 0,
                "ntotal": m.ntotal, "deleted": m.deleted, "encode_s": 0.0, "publish_s": 0.0,
                "vectors_per_s": 0.0, "total_s": time.perf_counter() - t0}
    rows = min(n, part_rows(n, req.workers))
    refuse_unless_fits([encode_memory(m.shape, rows, min(req.workers, math.ceil(n / rows)),
                                      READ_CHUNK_ROWS)], available_memory(),
                       f"append to {req.name}")
    source = {"uri": checked.reader.uri, "format": checked.reader.format, "column": req.column}
    encoded = encode_on_ray(store=checked.root.store, model_version=m.model_version,
                            source=source, n_rows=n, dim=m.shape.dim, stored=m.vectors,
                            workers=req.workers, cpus_per_worker=req.cpus_per_worker,
                            gpus_per_worker=req.gpus_per_worker)
    t1 = time.perf_counter()
    on_step("encoded")
    manifest = publish_append(checked.root, EncodedRows(
        ids=checked.ids, attributes=checked.attributes, model_version=m.model_version,
        **encoded), source_uri=req.source, on_step=on_step)
    t2 = time.perf_counter()
    return {**summary, "version": manifest.version, "shards": len(manifest.shards),
            "new_shards": sum(e.version is None for e in manifest.shards),
            "ntotal": manifest.ntotal, "deleted": manifest.deleted,
            "first_id": int(checked.ids.min()), "last_id": int(checked.ids.max()),
            "encode_s": t1 - t0, "publish_s": t2 - t1, "vectors_per_s": n / max(t2 - t0, 1e-9),
            "total_s": time.perf_counter() - t0}


def append(req: AppendRequest, address: str | None = None,
           on_step: Callable[..., None] = no_step) -> dict:
    """The append job: check, join Ray at `address` (unless this process has: the
    job's cluster under `ray job submit`, RAY_ADDRESS, else a new local Ray, left
    again at the end), run. Returns the summary."""
    checked = check_append(req)      # before Ray starts
    if checked.reader.n == 0:        # nothing to encode: no Ray
        return run_append(checked, on_step)
    started = not ray.is_initialized()
    connect(address)
    try:
        return run_append(checked, on_step)
    finally:
        if started:
            ray.shutdown()


def summary_line(s: dict) -> str:
    if s["rows_appended"] == 0:
        return (f"snapline append: {s['source']} holds no rows; {s['name']}/{s['version']} "
                f"unchanged")
    return (f"snapline append: published {s['name']}/{s['version']} (from "
            f"{s['previous_version']}, model {s['model_version']}): {s['rows_appended']} rows "
            f"in {s['new_shards']} new shards, {s['shards']} shards in all, by {s['workers']} "
            f"workers in {s['total_s']:.1f} s = {s['vectors_per_s']:.0f} vectors/s")

"""Self-contained copies of an index (`VLQIndex.save(uri)`): one folder with the model,
the shards and the manifest, no store around it.

    <uri>/model/ or <uri>/model-<model_version>/   the model bundle
    <uri>/shards/part-NNNNN-<sha16>.parquet
    <uri>/manifest.json     written last; version "copy", model_path the model folder

Saving over an existing copy is atomic from a reader's view: the new model goes into a
folder the old manifest does not reference, shards are named by their content, the
manifest is switched last (one atomic write), and only then are the old model and the
unlisted shards removed. An interruption at any step leaves the old copy loadable.
"""
from __future__ import annotations

from typing import Callable

from shards.commit import columns_of, make_manifest, no_step
from shards.fsio import Location
from shards.index_arrays import DEFAULT_ROWS_PER_SHARD, IndexArrays
from shards.manifest import MANIFEST_FILE, Manifest, read_manifest
from shards.models import write_model
from shards.shard_writer import encode_parts, remove_unlisted, save_part
from shards.store import Store
from shards.tombstones import TOMBSTONES_DIR, write_tombstones

COPY_VERSION = "copy"
COPY_MODEL_DIR = "model"


def _model_dir(loc: Location, model_version: str) -> str:
    """A model folder the copy's current manifest (if any) does not reference, or the one
    it references when that already holds this model."""
    try:
        old = read_manifest(loc) if loc.exists(MANIFEST_FILE) else None
    except (ValueError, FileNotFoundError):
        old = None
    if old is None or old.model_path is None:
        return COPY_MODEL_DIR
    if old.model_version == model_version:
        return old.model_path
    return COPY_MODEL_DIR if old.model_path != COPY_MODEL_DIR else \
        f"{COPY_MODEL_DIR}-{model_version}"


def save_copy(where: Store | str, data: IndexArrays,
              rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
              on_step: Callable[..., None] = no_step) -> Manifest:
    """Write model, shards and manifest (last, atomically) into a folder; the model and
    shards of an older copy in the same folder are removed after the switch."""
    loc = Store.of(where).location
    model_dir = _model_dir(loc, data.model_version)
    on_step("model")
    write_model(loc.child(model_dir), data.model_meta, data.model_arrays)
    parts = encode_parts(data, rows_per_shard)
    for number, part in enumerate(parts):
        on_step("shard", number)
        save_part(loc, part)
    entries = [p.entry for p in parts]
    on_step("tombstones")
    tombstones = write_tombstones(loc, data.tombstones)
    manifest = make_manifest(COPY_VERSION, data.model_version, data.shape, entries, data.next_id,
                             model_path=model_dir, tombstones=tombstones, **columns_of(data))
    on_step("manifest")
    loc.write_bytes(MANIFEST_FILE, manifest.to_json())
    on_step("cleanup")
    remove_unlisted(loc, entries)
    for file in loc.listdir(TOMBSTONES_DIR):
        if tombstones is None or f"{TOMBSTONES_DIR}/{file}" != tombstones.path:
            loc.remove(f"{TOMBSTONES_DIR}/{file}")
    for entry in loc.listdir():
        if entry != model_dir and (entry == COPY_MODEL_DIR
                                   or entry.startswith(f"{COPY_MODEL_DIR}-m-")):
            loc.remove(entry, recursive=True)
    return manifest

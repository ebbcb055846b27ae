"""Self-contained copies of an index (`VLQIndex.save(uri)`): one folder with the model,
the shards and the manifest, no store around it.

    <uri>/model/            the model bundle
    <uri>/shards/part-NNNNN-<sha16>.parquet
    <uri>/manifest.json     written last; version "copy", model_path "model"
"""
from __future__ import annotations

from shards.commit import make_manifest
from shards.index_arrays import DEFAULT_ROWS_PER_SHARD, IndexArrays
from shards.manifest import MANIFEST_FILE, Manifest
from shards.models import write_model
from shards.shard_writer import encode_parts, remove_unlisted, save_part
from shards.store import Store

COPY_VERSION = "copy"
COPY_MODEL_DIR = "model"


def save_copy(where: Store | str, data: IndexArrays,
              rows_per_shard: int = DEFAULT_ROWS_PER_SHARD) -> Manifest:
    """Write model, shards and manifest (last, atomically) into a folder; shards of an
    older copy in the same folder are removed."""
    loc = Store.of(where).location
    write_model(loc.child(COPY_MODEL_DIR), data.model_meta, data.model_arrays)
    parts = encode_parts(data, rows_per_shard)
    for part in parts:
        save_part(loc, part)
    entries = [p.entry for p in parts]
    manifest = make_manifest(COPY_VERSION, data.model_version, data.shape, entries, data.next_id,
                             model_path=COPY_MODEL_DIR)
    loc.write_bytes(MANIFEST_FILE, manifest.to_json())
    remove_unlisted(loc, entries)
    return manifest

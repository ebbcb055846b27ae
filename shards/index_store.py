"""Index persistence: self-contained copies and the versioned store (SPEC 4).

    <store>/models/<model_version>/               model bundle (array files + meta.json)
    <store>/indexes/<name>/<version>/shards/*.parquet
    <store>/indexes/<name>/<version>/manifest.json
    <store>/indexes/<name>/CURRENT                the published version

Publishing writes every shard, then the manifest (created exclusively: of two writers
racing for one version exactly one wins, the other gets PublishConflict), then CURRENT.
A self-contained copy (`VLQIndex.save(uri)`) is the same minus CURRENT, with the model
in `<uri>/model/`. Shard files are named after their content hash, so a rerun skips
shards already written and writers never overwrite each other's files.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Sequence

import numpy as np

from shards.artifacts import read_array_bundle_at, write_array_bundle_at
from shards.fsio import Location
from shards.manifest import MANIFEST_FILE, Manifest, ShardEntry, check_name
from shards.shard_file import ShardMeta, decode_shard, encode_shard

log = logging.getLogger(__name__)

MODELS_DIR = "models"
INDEXES_DIR = "indexes"
CURRENT_FILE = "CURRENT"
BUILD_FILE = "build.json"     # a distributed build's claim on a version folder
MODEL_KIND = "snapline-vlq-model"
DEFAULT_ROWS_PER_SHARD = 1_000_000
_VERSION = re.compile(r"^v(\d{6,})$")


class PublishConflict(RuntimeError):
    """Another writer published this index version first; nothing of ours was published."""


@dataclass(frozen=True, eq=False)
class IndexArrays:
    """Everything an index persists: model arrays and the encoded rows (any order)."""

    model_meta: dict
    model_arrays: dict[str, np.ndarray]
    ids: np.ndarray
    list_ids: np.ndarray
    lambda_idx: np.ndarray
    codes: np.ndarray
    next_id: int

    @property
    def model_version(self) -> str:
        return model_version_of(self.model_arrays)


def model_version_of(arrays: dict[str, np.ndarray]) -> str:
    """Content-addressed model version: the same trained model always has one name."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return "m-" + h.hexdigest()[:16]


# -- models ----------------------------------------------------------------
def write_model(loc: Location, meta: dict, arrays: dict[str, np.ndarray]) -> str:
    """Write a model bundle at loc unless an identical one is there; returns its version."""
    version = model_version_of(arrays)
    if loc.exists("meta.json"):
        existing, _ = read_array_bundle_at(loc)
        if existing.get("model_version") == version:
            return version
    write_array_bundle_at(loc, {**meta, "kind": MODEL_KIND, "model_version": version}, arrays)
    return version


def read_model(loc: Location, expected_version: str) -> tuple[dict, dict[str, np.ndarray]]:
    meta, arrays = read_array_bundle_at(loc)
    if meta.get("kind") != MODEL_KIND:
        raise ValueError(f"{loc.uri}: not a snapline model (kind {meta.get('kind')!r})")
    if meta.get("model_version") != expected_version:
        raise ValueError(f"{loc.uri}: holds model version {meta.get('model_version')!r}, "
                         f"the index manifest needs {expected_version!r}")
    if model_version_of(arrays) != expected_version:
        raise ValueError(f"{loc.uri}: model arrays do not hash to their version {expected_version!r}")
    return meta, arrays


def save_model(store_uri: str, meta: dict, arrays: dict[str, np.ndarray],
               storage_options: dict | None = None) -> str:
    """Write a model version into `<store>/models/<version>/`; returns the version."""
    store = Location.of(store_uri, storage_options)
    version = model_version_of(arrays)
    return write_model(store.child(MODELS_DIR, version), meta, arrays)


def load_model(store_uri: str, version: str,
               storage_options: dict | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify `<store>/models/<version>/`."""
    store = Location.of(store_uri, storage_options)
    return read_model(store.child(MODELS_DIR, check_name(version, "model version")), version)


# -- shards ----------------------------------------------------------------
@dataclass(frozen=True)
class _EncodedShard:
    entry: ShardEntry
    blob: bytes


def _encode_shards(data: IndexArrays, rows_per_shard: int, source: dict) -> list[_EncodedShard]:
    """Parquet bytes of every shard, named after their content hash."""
    if rows_per_shard <= 0:
        raise ValueError(f"rows_per_shard must be > 0, got {rows_per_shard}")
    meta = data.model_meta
    order = np.argsort(data.list_ids, kind="stable")
    shard_meta = ShardMeta(model_version=data.model_version, code_bytes=meta["code_bytes"],
                           nlist=meta["nlist"], nedge=meta["nedge"],
                           source_uri=source.get("uri", ""))
    out = []
    for number, start in enumerate(range(0, max(data.ids.shape[0], 1), rows_per_shard)):
        rows = order[start:start + rows_per_shard]
        blob = encode_shard(data.ids[rows], data.list_ids[rows], data.lambda_idx[rows],
                            data.codes[rows], shard_meta)
        digest = hashlib.sha256(blob).hexdigest()
        entry = ShardEntry(path=f"shards/part-{number:05d}-{digest[:16]}.parquet",
                           rows=int(rows.shape[0]), bytes=len(blob), sha256=digest)
        out.append(_EncodedShard(entry, blob))
    return out


def _write_shards(loc: Location, shards: list[_EncodedShard],
                  on_step: Callable[..., None]) -> None:
    """Write shard files; ones already there with the right checksum are skipped."""
    for number, shard in enumerate(shards):
        on_step("shard", number)
        if _has_file(loc, shard.entry.path, shard.entry.sha256, shard.entry.bytes):
            log.info("%s/%s exists with the right checksum; skipped", loc.uri, shard.entry.path)
        else:
            loc.write_bytes(shard.entry.path, shard.blob)


def _has_file(loc: Location, path: str, digest: str, size: int) -> bool:
    full = loc.join(path)
    if not loc.fs.exists(full) or loc.fs.size(full) != size:
        return False
    return hashlib.sha256(loc.read_bytes(path)).hexdigest() == digest


def _read_shard(loc: Location, entry: ShardEntry):
    blob = loc.read_bytes(entry.path)
    where = f"{loc.uri}/{entry.path}"
    if len(blob) != entry.bytes:
        raise ValueError(f"{where}: {len(blob)} bytes, manifest says {entry.bytes} "
                         f"(truncated or replaced)")
    if hashlib.sha256(blob).hexdigest() != entry.sha256:
        raise ValueError(f"{where}: sha256 checksum mismatch (file corrupted or replaced)")
    shard = decode_shard(blob, where)
    if shard.ids.shape[0] != entry.rows:
        raise ValueError(f"{where}: {shard.ids.shape[0]} rows, manifest says {entry.rows}")
    return shard


def _manifest_for(data: IndexArrays, version: str, entries, name, model_path, source):
    meta = data.model_meta
    return Manifest(version=version, model_version=data.model_version, dim=meta["dim"],
                    nlist=meta["nlist"], nedge=meta["nedge"], code_bytes=meta["code_bytes"],
                    nlambda=meta["nlambda"], ntotal=int(data.ids.shape[0]),
                    next_id=int(data.next_id), shards=tuple(entries), name=name,
                    model_path=model_path, source=dict(source), created=utc_now())


def utc_now() -> str:
    """A manifest's creation time."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _no_step(*_args) -> None:
    return None


# -- self-contained copies -----------------------------------------------------
def save_copy(uri: str, data: IndexArrays, rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
              storage_options: dict | None = None) -> Manifest:
    """Write model, shards and manifest (last, atomically) under uri."""
    loc = Location.of(uri, storage_options)
    model_version = write_model(loc.child("model"), data.model_meta, data.model_arrays)
    shards = _encode_shards(data, rows_per_shard, {})
    _write_shards(loc, shards, _no_step)
    entries = [s.entry for s in shards]
    manifest = _manifest_for(data, "copy", entries, None, "model", {})
    assert manifest.model_version == model_version
    loc.write_bytes(MANIFEST_FILE, manifest.to_json())
    listed = {e.path.split("/", 1)[1] for e in entries}
    for stale in set(loc.listdir("shards")) - listed:   # an older copy's shards
        loc.remove(f"shards/{stale}")
    return manifest


# -- the versioned store -------------------------------------------------------
def index_root(store_uri: str, name: str, storage_options: dict | None = None) -> Location:
    """The folder `<store>/indexes/<name>` (name checked)."""
    return Location.of(store_uri, storage_options).child(INDEXES_DIR, check_name(name, "index name"))


def current_version(store_uri: str, name: str, storage_options: dict | None = None) -> str | None:
    root = index_root(store_uri, name, storage_options)
    if not root.exists(CURRENT_FILE):
        return None
    return check_name(root.read_bytes(CURRENT_FILE).decode().strip(), f"{root.uri}/CURRENT")


def _published_versions(root: Location) -> list[str]:
    """Version folders that hold a manifest, oldest first."""
    found = [e for e in root.listdir() if _VERSION.match(e) and root.exists(f"{e}/{MANIFEST_FILE}")]
    return sorted(found, key=_version_number)


def _choose_version(root: Location, current: str | None, manifest: Manifest) -> str:
    """The version this publish writes: an unfinished publish of the same content
    (manifest written, CURRENT not yet) is completed; otherwise one past the newest."""
    versions = _published_versions(root)
    newest = versions[-1] if versions else None
    if newest is not None and _version_number(newest) > _version_number(current or ""):
        existing = Manifest.from_json(root.child(newest).read_bytes(MANIFEST_FILE),
                                      f"{root.uri}/{newest}/{MANIFEST_FILE}")
        if existing.content_id == manifest.content_id:
            return newest
    claimed = [v for v in root.listdir() if _VERSION.match(v) and root.exists(f"{v}/{BUILD_FILE}")]
    numbers = [_version_number(v) for v in versions + claimed] + [_version_number(current or ""), 0]
    return f"v{max(numbers) + 1:06d}"


def publish(store_uri: str, name: str, data: IndexArrays, *, version: str | None = None,
            rows_per_shard: int = DEFAULT_ROWS_PER_SHARD, source: dict | None = None,
            storage_options: dict | None = None,
            on_step: Callable[..., None] = _no_step) -> Manifest:
    """Publish `data` as a new version of index `name`: shards, manifest, CURRENT.

    A rerun after an interruption completes the same version: existing shards with the
    right checksum are skipped, an identical manifest is kept, CURRENT is written.
    """
    store = Location.of(store_uri, storage_options)
    root = index_root(store_uri, name, storage_options)
    source = source or {}
    on_step("model")
    write_model(store.child(MODELS_DIR, data.model_version), data.model_meta, data.model_arrays)
    shards = _encode_shards(data, rows_per_shard, source)
    entries = [s.entry for s in shards]
    current = current_version(store_uri, name, storage_options)
    draft = _manifest_for(data, "v000000", entries, name, None, source)
    version = check_name(version, "version") if version else _choose_version(root, current, draft)
    manifest = _manifest_for(data, version, entries, name, None, source)
    vloc = root.child(version)
    _write_shards(vloc, shards, on_step)
    on_step("manifest")
    return commit_manifest(store_uri, name, vloc, manifest, storage_options, on_step)


def commit_manifest(store_uri: str, name: str, vloc: Location, manifest: Manifest,
                    storage_options: dict | None = None,
                    on_step: Callable[..., None] = _no_step) -> Manifest:
    """Make a version whose shards are all written visible: create its manifest
    exclusively (an identical one from an earlier run is kept; a different one means
    another writer won: our shards are removed and PublishConflict raised), then move
    CURRENT forward to it."""
    version = manifest.version
    if not vloc.create_exclusive(MANIFEST_FILE, manifest.to_json()):
        existing = Manifest.from_json(vloc.read_bytes(MANIFEST_FILE), f"{vloc.uri}/{MANIFEST_FILE}")
        if existing.content_id != manifest.content_id:
            for path in {e.path for e in manifest.shards} - {e.path for e in existing.shards}:
                vloc.remove(path)
            raise PublishConflict(f"index {name!r} version {version} was published by another "
                                  f"writer first; this writer's shards were not published")
        manifest = existing    # a rerun of the same publish
    on_step("current")
    root = index_root(store_uri, name, storage_options)
    current = current_version(store_uri, name, storage_options)
    if current is None or _version_number(current) < _version_number(version):
        root.write_bytes(CURRENT_FILE, (version + "\n").encode())
    log.info("published %s/%s (model %s, %d shards, %d vectors)", root.uri, version,
             manifest.model_version, len(manifest.shards), manifest.ntotal)
    return manifest


def _version_number(version: str) -> int:
    match = _VERSION.match(version)
    return int(match.group(1)) if match else -1


# -- loading -----------------------------------------------------------------
def resolve(uri: str, storage_options: dict | None = None) -> tuple[Manifest, Location, Location]:
    """(manifest, folder of the version, folder of its model) for a copy, an index
    version folder, or an index root `<store>/indexes/<name>` (the version CURRENT names)."""
    loc = Location.of(uri, storage_options)
    if not loc.exists(MANIFEST_FILE):
        if not loc.exists(CURRENT_FILE):
            raise FileNotFoundError(f"{uri}: neither {MANIFEST_FILE} nor {CURRENT_FILE}; "
                                    f"not a snapline index")
        version = check_name(loc.read_bytes(CURRENT_FILE).decode().strip(), f"{uri}/CURRENT")
        loc = loc.child(version)
    where = f"{loc.uri}/{MANIFEST_FILE}"
    manifest = Manifest.from_json(loc.read_bytes(MANIFEST_FILE), where)
    if manifest.model_path is not None:
        model_loc = loc.child(manifest.model_path)
    else:  # <store>/indexes/<name>/<version> -> <store>/models/<model_version>
        parts = loc.path.rstrip("/").split("/")
        if len(parts) < 4 or parts[-3] != INDEXES_DIR:
            raise ValueError(f"{where}: a store manifest must live at "
                             f"<store>/{INDEXES_DIR}/<name>/<version>/")
        store_path = "/".join(parts[:-3])
        store_uri = loc.uri.rsplit("/", 3)[0]
        model_loc = Location(loc.fs, store_path, store_uri, loc.storage_options).child(
            MODELS_DIR, manifest.model_version)
    return manifest, loc, model_loc


def load_arrays(uri: str, shards: Sequence[int] | None = None,
                storage_options: dict | None = None) -> tuple[Manifest, IndexArrays]:
    """Read and verify a whole index, or the listed shard numbers of it."""
    manifest, loc, model_loc = resolve(uri, storage_options)
    model_meta, model_arrays = read_model(model_loc, manifest.model_version)
    picked = range(len(manifest.shards)) if shards is None else list(shards)
    for i in picked:
        if not 0 <= i < len(manifest.shards):
            raise ValueError(f"{loc.uri}: shard {i} out of range [0, {len(manifest.shards)})")
    parts = [_read_shard(loc, manifest.shards[i]) for i in picked]
    for p in parts:
        if p.meta.model_version != manifest.model_version:
            raise ValueError(f"{loc.uri}: a shard was encoded with model {p.meta.model_version}, "
                             f"the manifest says {manifest.model_version}")
    cat = (lambda f, dt, shape: np.concatenate([getattr(p, f) for p in parts])
           if parts else np.empty(shape, dt))
    data = IndexArrays(model_meta=model_meta, model_arrays=model_arrays,
                       ids=cat("ids", np.int64, (0,)), list_ids=cat("list_ids", np.int64, (0,)),
                       lambda_idx=cat("lambda_idx", np.uint8, (0,)),
                       codes=cat("codes", np.uint8, (0, manifest.code_bytes)),
                       next_id=manifest.next_id)
    return manifest, data


def index_version_uri(store_uri: str, name: str, version: str,
                      storage_options: dict | None = None) -> str:
    """URI of the folder `<store>/indexes/<name>/<version>`."""
    return index_root(store_uri, name, storage_options).child(check_name(version, "version")).uri

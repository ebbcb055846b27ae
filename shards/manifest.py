"""Index manifests: the list of an index version's shards with their checksums.

A manifest is the commit record of an index version: readers trust nothing that it
does not list. Every path in it is checked to stay inside a version folder of its index:
its own (`version` None) or, for a shard or tombstone set kept from an earlier version
(an append, a delete), that earlier version's folder (`version` names it). A
self-contained copy (no index around it) only ever lists its own files.

Format 3 (this snapline) adds `ShardEntry.version`, `tombstones`, `attributes` and
`vectors`; format 2 files are still read (none of those: own shards only).
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import asdict, dataclass, field

from shards.shape import IndexShape
from shards.vector_store import STORES

MANIFEST_FORMAT = "snapline-index-manifest"
MANIFEST_FORMAT_VERSION = 3     # 3: shards/tombstones of earlier versions, columns
READABLE_FORMAT_VERSIONS = (2, 3)  # 2: the index shape as one "shape" object
MANIFEST_FILE = "manifest.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_VERSION = re.compile(r"^v(\d{6,})$")


def version_number(version: str | None) -> int:
    """v000042 -> 42; anything that is not a version name -> -1."""
    match = _VERSION.match(version or "") if isinstance(version, str) else None
    return int(match.group(1)) if match else -1


def check_name(value: str, what: str) -> str:
    """Index names and versions are single path components of safe characters."""
    if not isinstance(value, str) or not _NAME.match(value) or value in (".", ".."):
        raise ValueError(f"{what} {value!r} must be 1-128 characters of letters, digits, "
                         f"'.', '_' or '-', starting with a letter or digit")
    return value


def check_relative_path(path: str, where: str, prefix: str) -> str:
    """A manifest path must stay inside its folder: relative, normalized, under prefix."""
    if (not isinstance(path, str) or not path or "://" in path or path.startswith(("/", "\\"))
            or "\\" in path or posixpath.normpath(path) != path
            or any(part in ("..", ".", "") for part in path.split("/"))
            or not path.startswith(prefix)):
        raise ValueError(f"{where}: path {path!r} leaves the index folder or is not "
                         f"under {prefix!r}; refusing it")
    return path


@dataclass(frozen=True)
class ShardEntry:
    path: str       # relative to the version folder that holds it, under shards/
    rows: int       # stored rows (tombstoned ones included)
    bytes: int
    sha256: str
    version: str | None = None   # the version folder holding the file; None: this one

    @property
    def key(self) -> str:
        """Where the file is, relative to the index folder's version of the manifest."""
        return self.path if self.version is None else f"{self.version}/{self.path}"


@dataclass(frozen=True)
class TombstoneEntry:
    """A version's tombstone set: sorted unique uint64 ids, raw little-endian, in
    `tombstones/<sha16>.u64` of the version folder `version` (None: this one)."""

    path: str
    count: int
    sha256: str
    version: str | None = None

    @property
    def key(self) -> str:
        return self.path if self.version is None else f"{self.version}/{self.path}"


def content_id_of(model_version: str, shards, tombstones: TombstoneEntry | None = None) -> str:
    """Identity of what is published (model + shard and tombstone checksums), not of when
    (the same as format 2 for a version of its own shards and no tombstones)."""
    h = hashlib.sha256(model_version.encode())
    for s in shards:
        h.update(f"{s.key}:{s.sha256}".encode())
    if tombstones is not None:
        h.update(f"tombstones {tombstones.key}:{tombstones.sha256}".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Manifest:
    version: str
    model_version: str
    shape: IndexShape
    ntotal: int
    next_id: int
    shards: tuple[ShardEntry, ...]
    name: str | None = None
    model_path: str | None = None   # "model" for a self-contained copy, None: store model
    source: dict = field(default_factory=dict)
    created: str = ""
    tombstones: TombstoneEntry | None = None     # None: no row is deleted
    attributes: dict[str, str] | None = None     # attribute column -> arrow type name
    vectors: str | None = None                   # stored vector format (shards.vector_store), None: not stored

    @property
    def content_id(self) -> str:
        return content_id_of(self.model_version, self.shards, self.tombstones)

    @property
    def deleted(self) -> int:
        """Ids in the tombstone set (rows hidden from readers, at most)."""
        return 0 if self.tombstones is None else self.tombstones.count

    def referenced_versions(self) -> set[str]:
        """Earlier version folders holding a shard or the tombstone set of this version."""
        entries = [*self.shards, *([self.tombstones] if self.tombstones else [])]
        return {e.version for e in entries if e.version is not None}

    def to_json(self) -> bytes:
        doc = {"format": MANIFEST_FORMAT, "format_version": MANIFEST_FORMAT_VERSION,
               **asdict(self), "content_id": self.content_id}
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def from_json(cls, blob: bytes, where: str) -> "Manifest":
        try:
            doc = json.loads(blob)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{where}: manifest is not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"{where}: not a snapline index manifest")
        if doc.get("format_version") not in READABLE_FORMAT_VERSIONS:
            raise ValueError(f"{where}: unknown manifest format version "
                             f"{doc.get('format_version')!r}; this snapline reads versions "
                             f"{', '.join(map(str, READABLE_FORMAT_VERSIONS))}")
        version = doc.pop("format_version")
        doc.pop("format")
        content_id = doc.pop("content_id", None)
        if version < 3 and {"tombstones", "attributes", "vectors"} & set(doc):
            raise ValueError(f"{where}: a format {version} manifest with format 3 fields")
        try:
            shards = tuple(ShardEntry(**s) for s in doc.pop("shards"))
            if version < 3 and any(s.version is not None for s in shards):
                raise TypeError("a format 2 shard names a version")
            tomb = doc.pop("tombstones", None)
            tombstones = None if tomb is None else TombstoneEntry(**tomb)
            shape = IndexShape.from_dict(doc.pop("shape"), where)
            manifest = cls(shards=shards, shape=shape, tombstones=tombstones, **doc)
        except (TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"{where}: malformed manifest ({exc})") from None
        _check_fields(manifest, where)
        _check_paths(manifest, where)
        if sum(s.rows for s in manifest.shards) != manifest.ntotal:
            raise ValueError(f"{where}: shard rows add up to "
                             f"{sum(s.rows for s in manifest.shards)}, ntotal says {manifest.ntotal}")
        if content_id is not None and content_id != manifest.content_id:
            raise ValueError(f"{where}: content_id does not match the listed shards")
        return manifest


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _check_fields(manifest: Manifest, where: str) -> None:
    """Counts are non-negative integers (not bools, strings or floats), checksums are
    sha256 hex digests, names are strings, source is a mapping."""
    def count(value, key: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{where}: {key} must be a non-negative integer, got {value!r}")

    count(manifest.ntotal, "ntotal")
    count(manifest.next_id, "next_id")
    for i, s in enumerate(manifest.shards):
        count(s.rows, f"shards[{i}].rows")
        count(s.bytes, f"shards[{i}].bytes")
        if not isinstance(s.sha256, str) or not _SHA256.match(s.sha256):
            raise ValueError(f"{where}: shards[{i}].sha256 is not a sha256 hex digest")
    if not isinstance(manifest.source, dict):
        raise ValueError(f"{where}: source must be a mapping, got {type(manifest.source).__name__}")
    if manifest.tombstones is not None:
        count(manifest.tombstones.count, "tombstones.count")
        if manifest.tombstones.count == 0:
            raise ValueError(f"{where}: an empty tombstone set is written as null")
        if not isinstance(manifest.tombstones.sha256, str) or \
                not _SHA256.match(manifest.tombstones.sha256):
            raise ValueError(f"{where}: tombstones.sha256 is not a sha256 hex digest")
    if manifest.attributes is not None and (
            not isinstance(manifest.attributes, dict)
            or not all(isinstance(k, str) and isinstance(v, str)
                       for k, v in manifest.attributes.items())):
        raise ValueError(f"{where}: attributes must map column names to type names")
    for key in ("name", "model_path", "created", "vectors"):
        value = getattr(manifest, key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{where}: {key} must be a string, got {value!r}")
    if manifest.vectors is not None and manifest.vectors not in STORES:
        raise ValueError(f"{where}: vectors {manifest.vectors!r} is not a stored vector format "
                         f"({', '.join(STORES)})")


def _check_paths(manifest: Manifest, where: str) -> None:
    """Names are safe, every path stays in its folder, a referenced folder is an earlier
    version of the same index (never in a copy), nothing is listed twice."""
    check_name(manifest.version, f"{where}: version")
    check_name(manifest.model_version, f"{where}: model_version")
    if manifest.model_path is not None:
        check_relative_path(manifest.model_path, where, "model")
    entries = [(s, "shards/", ".parquet") for s in manifest.shards]
    if manifest.tombstones is not None:
        entries.append((manifest.tombstones, "tombstones/", ".u64"))
    for entry, prefix, suffix in entries:
        check_relative_path(entry.path, where, prefix)
        if not entry.path.endswith(suffix):
            raise ValueError(f"{where}: path {entry.path!r} is not a {suffix} file")
        if entry.version is None:
            continue
        check_name(entry.version, f"{where}: version of {entry.path}")
        if manifest.model_path is not None:
            raise ValueError(f"{where}: {entry.path} names version {entry.version!r}; a "
                             f"self-contained copy may only list its own files")
        if not 0 <= version_number(entry.version) < version_number(manifest.version):
            raise ValueError(f"{where}: {entry.path} names version {entry.version!r}, which "
                             f"is not an earlier version than {manifest.version}")
    if len({s.key for s in manifest.shards}) != len(manifest.shards):
        raise ValueError(f"{where}: a shard is listed twice")


def read_manifest(loc) -> Manifest:
    """The manifest of a folder (a `shards.fsio.Location`), every check applied."""
    return Manifest.from_json(loc.read_bytes(MANIFEST_FILE), f"{loc.uri}/{MANIFEST_FILE}")

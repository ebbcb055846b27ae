"""Index manifests: the list of an index version's shards with their checksums.

A manifest is the commit record of an index version: readers trust nothing that it
does not list. Every path in it is checked to stay inside the index version folder.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import asdict, dataclass, field

from shards.shape import IndexShape

MANIFEST_FORMAT = "snapline-index-manifest"
MANIFEST_FORMAT_VERSION = 2     # 2: the index shape as one "shape" object
MANIFEST_FILE = "manifest.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


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
    path: str       # relative to the index version folder, under shards/
    rows: int
    bytes: int
    sha256: str


def content_id_of(model_version: str, shards) -> str:
    """Identity of what is published (model + shard checksums), not of when."""
    h = hashlib.sha256(model_version.encode())
    for s in shards:
        h.update(f"{s.path}:{s.sha256}".encode())
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

    @property
    def content_id(self) -> str:
        return content_id_of(self.model_version, self.shards)

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
        if doc.get("format_version") != MANIFEST_FORMAT_VERSION:
            raise ValueError(f"{where}: unknown manifest format version "
                             f"{doc.get('format_version')!r}; this snapline reads version "
                             f"{MANIFEST_FORMAT_VERSION}")
        doc.pop("format")
        doc.pop("format_version")
        content_id = doc.pop("content_id", None)
        try:
            shards = tuple(ShardEntry(**s) for s in doc.pop("shards"))
            shape = IndexShape.from_dict(doc.pop("shape"), where)
            manifest = cls(shards=shards, shape=shape, **doc)
        except (TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"{where}: malformed manifest ({exc})") from None
        _check_fields(manifest, where)
        check_name(manifest.version, f"{where}: version")
        check_name(manifest.model_version, f"{where}: model_version")
        if manifest.model_path is not None:
            check_relative_path(manifest.model_path, where, "model")
        for s in manifest.shards:
            check_relative_path(s.path, where, "shards/")
            if not s.path.endswith(".parquet"):
                raise ValueError(f"{where}: shard path {s.path!r} is not a .parquet file")
        if len({s.path for s in manifest.shards}) != len(manifest.shards):
            raise ValueError(f"{where}: a shard is listed twice")
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
    for key in ("name", "model_path", "created"):
        value = getattr(manifest, key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{where}: {key} must be a string, got {value!r}")


def read_manifest(loc) -> Manifest:
    """The manifest of a folder (a `shards.fsio.Location`), every check applied."""
    return Manifest.from_json(loc.read_bytes(MANIFEST_FILE), f"{loc.uri}/{MANIFEST_FILE}")

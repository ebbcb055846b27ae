"""Store handles: one object for a store location, one for an index inside it.

    store = Store("s3://bucket/prefix", storage_options={"endpoint_url": ...})
    root = store.index("sift")            # <store>/indexes/sift
    root.current_version(); root.versions(); root.version_location("v000002")

A handle replaces the loose triple (store_uri, name, storage_options) in every
signature; it is a small frozen dataclass, so it pickles into Ray actors and tasks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from shards.fsio import Location, check_protocol
from shards.manifest import MANIFEST_FILE, check_name, version_number

MODELS_DIR = "models"
INDEXES_DIR = "indexes"
CURRENT_FILE = "CURRENT"
BUILD_FILE = "build.json"     # a distributed build's claim on a version folder


def parse_current(data: bytes, where: str) -> str:
    """The version a CURRENT file names; its content is never echoed in an error (it may
    be another file's, through a link)."""
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(f"{where}: not UTF-8 text ({len(data)} bytes); CURRENT must hold "
                         f"one version name like v000001") from None
    if version_number(text) < 0:
        raise ValueError(f"{where}: does not hold a version name like v000001 "
                         f"({len(data)} bytes)")
    return text


def read_current(loc: Location) -> tuple[str | None, object]:
    """(version CURRENT names or None, tag for `Location.replace_if`) of an index folder."""
    data, tag = loc.read_tagged(CURRENT_FILE)
    if data is None:
        return None, None
    return parse_current(data, f"{loc.uri}/{CURRENT_FILE}"), tag


@dataclass(frozen=True)
class Store:
    """A store: a local folder or `s3://bucket/prefix`, with fsspec storage options."""

    uri: str
    storage_options: dict | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        check_protocol(self.uri)     # foo://... is refused here, before any work

    @classmethod
    def of(cls, store: "Store | str | os.PathLike",
           storage_options: dict | None = None) -> "Store":
        """A handle from a handle or a URI (the CLI and user entry points take strings);
        `storage_options` apply to a URI, a handle keeps its own."""
        if isinstance(store, Store):
            return store
        if isinstance(store, os.PathLike):
            store = os.fspath(store)
        if not isinstance(store, str) or not store:
            raise ValueError(f"store must be a non-empty URI or a Store, got {store!r}")
        return cls(store, storage_options)

    @property
    def location(self) -> Location:
        return Location.of(self.uri, self.storage_options)

    def models(self) -> Location:
        """The folder `<store>/models`."""
        return self.location.child(MODELS_DIR)

    def model_location(self, version: str) -> Location:
        return self.models().child(check_name(version, "model version"))

    def index(self, name: str) -> "IndexRoot":
        return IndexRoot(self, check_name(name, "index name"))


@dataclass(frozen=True)
class IndexRoot:
    """The folder `<store>/indexes/<name>`: versions, CURRENT, leases, serving records."""

    store: Store
    name: str

    def __post_init__(self):
        if not isinstance(self.store, Store):
            raise TypeError(f"IndexRoot needs a Store, got {self.store!r}")
        check_name(self.name, "index name")

    @property
    def location(self) -> Location:
        return self.store.location.child(INDEXES_DIR, self.name)

    @property
    def uri(self) -> str:
        return self.location.uri

    def version_location(self, version: str) -> Location:
        return self.location.child(check_name(version, "version"))

    def version_uri(self, version: str) -> str:
        return self.version_location(version).uri

    def current_version(self) -> str | None:
        """The version CURRENT names, or None before the first publish."""
        return read_current(self.location)[0]

    def versions(self) -> list[str]:
        """Published versions (folders that hold a manifest), oldest first."""
        loc = self.location
        return [v for v in self.folders() if loc.exists(f"{v}/{MANIFEST_FILE}")]

    def folders(self) -> list[str]:
        """Every version folder, published, claimed by a build or half-written; oldest first."""
        return sorted((e for e in self.location.listdir() if version_number(e) >= 0),
                      key=version_number)

    def claimed(self, version: str) -> bool:
        """Whether a build claimed this version folder (its build.json exists)."""
        return self.version_location(version).exists(BUILD_FILE)


def as_root(root) -> IndexRoot:
    """Check that a caller passed an index handle (`Store(uri).index(name)`)."""
    if not isinstance(root, IndexRoot):
        raise TypeError(f"expected an IndexRoot (Store(uri).index(name)), got {root!r}")
    return root

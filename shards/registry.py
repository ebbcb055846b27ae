"""Model registry, re-encode lease and version retention in a store (SPEC 4, 5).

    <store>/models/<model_version>/meta.json      config, training sample, metrics, created
    <store>/indexes/<name>/leases/lease-NNNNNN    who re-encodes index <name>, until when

A lease is taken by creating the next numbered lease file exclusively (os.link locally, a
conditional PUT on S3), so of two machines racing for it exactly one wins; it expires
unless its holder renews it, and is released by rewriting it as expired.
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass

from shards.artifacts import read_bundle_meta
from shards.manifest import MANIFEST_FILE, check_name
from shards.models import MODEL_KIND, model_shape
from shards.references import referenced_versions
from shards.store import IndexRoot, Store, as_root, version_number

log = logging.getLogger(__name__)

LEASES_DIR = "leases"
SERVING_DIR = "serving"          # <holder>.json: {"version", "at"} heartbeats of servers
SERVING_FRESH_S = 300.0          # a serving record older than this is a dead server's
_LEASE_FILE = re.compile(r"^lease-(\d{6,})$")    # not the temp files of a write in flight


def list_models(store: Store | str) -> list[dict]:
    """Every model version of the store with what its meta.json says, oldest first."""
    models = Store.of(store).models()
    out = []
    for version in models.listdir():
        if not models.exists(f"{version}/meta.json"):
            continue
        meta = read_bundle_meta(models.child(version))
        if meta.get("kind") != MODEL_KIND:
            continue
        shape = model_shape(meta, f"{models.uri}/{version}/meta.json")
        training = _mapping(meta.get("training"))
        out.append({
            "model_version": version, "created": meta.get("created", ""),
            "index": _mapping(meta.get("build")).get("name"),
            "dim": shape.dim, "nlist": shape.nlist, "nedge": shape.nedge,
            "code_bytes": shape.code_bytes, "nlambda": shape.nlambda, "encoder": shape.encoder,
            "sample": training.get("sample"), "train_s": training.get("train_s"),
            "validation": training.get("validation") or None,
        })
    return sorted(out, key=lambda m: (m["created"], m["model_version"]))


def _mapping(value) -> dict:
    """A meta section, or {} when an older or damaged model lacks it (listed as '-')."""
    return value if isinstance(value, dict) else {}


def latest_model(root: IndexRoot) -> str | None:
    """The newest model version trained for the index `root` (None if there is none)."""
    root = as_root(root)
    mine = [m for m in list_models(root.store) if m["index"] == root.name]
    return mine[-1]["model_version"] if mine else None


# -- lease -------------------------------------------------------------------------
@dataclass
class Lease:
    """One holder at a time for a named job on an index, across machines."""

    root: IndexRoot
    ttl_s: float = 600.0
    owner: str = ""
    number: int = -1

    def __post_init__(self):
        if not 0 < self.ttl_s < float("inf"):     # nan fails too: two holders at once
            raise ValueError(f"lease ttl_s must be finite seconds > 0, got {self.ttl_s!r}")
        self.owner = self.owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._dir = as_root(self.root).location.child(LEASES_DIR)

    def _newest(self) -> tuple[int, dict | None]:
        numbers = [int(m.group(1)) for m in map(_LEASE_FILE.match, self._dir.listdir()) if m]
        if not numbers:
            return 0, None
        n = max(numbers)
        return n, json.loads(self._dir.read_bytes(f"lease-{n:06d}"))

    def holder(self) -> dict | None:
        """The live lease record, or None when the lease is free."""
        _, record = self._newest()
        return record if record and record["expires"] > time.time() else None

    def acquire(self) -> bool:
        n, record = self._newest()
        if record is not None and record["expires"] > time.time():
            return record["owner"] == self.owner
        mine = {"owner": self.owner, "expires": time.time() + self.ttl_s}
        if self._dir.create_exclusive(f"lease-{n + 1:06d}", json.dumps(mine).encode()):
            self.number = n + 1
            return True
        return False     # another machine took lease n + 1 first

    def renew(self) -> None:
        if self.number < 0:
            raise RuntimeError("renew: this lease is not held")
        self._write(time.time() + self.ttl_s)

    def release(self) -> None:
        if self.number >= 0:
            self._write(0.0)
            self.number = -1

    def _write(self, expires: float) -> None:
        self._dir.write_bytes(f"lease-{self.number:06d}",
                              json.dumps({"owner": self.owner, "expires": expires}).encode())


# -- what is served -------------------------------------------------------------------
def mark_serving(root: IndexRoot, holder: str, version: str | None) -> None:
    """Record (a heartbeat) that `holder`, e.g. a query coordinator, serves `version` of
    the index `root`; version None removes the record."""
    loc = as_root(root).location.child(SERVING_DIR)
    file = f"{check_name(holder, 'holder')}.json"
    if version is None:
        loc.remove(file)
    else:
        loc.write_bytes(file, json.dumps({"version": version, "at": time.time()}).encode())


def served_versions(root: IndexRoot, max_age_s: float = SERVING_FRESH_S) -> set[str]:
    """Versions of the index `root` whose serving record was renewed in the last max_age_s."""
    loc = as_root(root).location.child(SERVING_DIR)
    out = set()
    for file in loc.listdir():
        if file.endswith(".json"):
            try:
                record = json.loads(loc.read_bytes(file))
            except (FileNotFoundError, ValueError):
                continue           # removed or being replaced as we read
            if time.time() - record.get("at", 0) <= max_age_s:
                out.add(record["version"])
    return out


# -- retention -------------------------------------------------------------------------
def retain_versions(root: IndexRoot, keep: int, protect: tuple[str, ...] = ()) -> list[str]:
    """Delete published versions older than the `keep` newest; never CURRENT, never one in
    `protect` (e.g. the version being replaced), never one a coordinator reports serving
    (`mark_serving` within SERVING_FRESH_S), never one whose folder holds a shard or
    tombstone set that a version kept lists (`references.referenced_versions`; an
    unreadable manifest among those kept: nothing is deleted). Returns the deleted ones."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    root = as_root(root)
    current = root.current_version()
    served = served_versions(root)
    versions = root.versions()
    doomed = [v for v in versions[:-keep] if v != current and v not in protect
              and v not in served and version_number(v) < version_number(current)]
    try:
        needed = referenced_versions(root, [v for v in versions if v not in doomed])
    except ValueError as exc:
        log.warning("retention of %s deletes nothing: %s", root.uri, exc)
        return []
    doomed = [v for v in doomed if v not in needed]
    loc = root.location
    for version in doomed:
        loc.remove(f"{version}/{MANIFEST_FILE}")   # first: the version stops being loadable
        loc.remove(version, recursive=True)
        log.info("deleted %s/%s (retention: keep %d)", root.uri, version, keep)
    return doomed

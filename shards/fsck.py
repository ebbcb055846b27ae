"""Checking a store (`snapline fsck`): every version's manifest, model and shard checksums,
and what no manifest references (SPEC 4, 5).

    problems   a version, CURRENT, a model or a lease that does not read back: listed,
               never removed (a person decides)
    orphans    unlisted shards, files of a folder without a manifest (a killed publish),
               `.tmp-*` files of an interrupted write, superseded lease files, stale
               serving records, build claims unfinished for longer than a day

`fsck(store, repair=True)` removes orphans only, and of those only what is older than
`min_age_s` (a publish or build in flight is young): never a manifest, never CURRENT's
version folder, never the live (newest) lease.
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field

from shards.fsio import Location, OutsideStoreError
from shards.loading import load_arrays
from shards.manifest import MANIFEST_FILE, check_name, read_manifest
from shards.models import read_model
from shards.registry import LEASES_DIR, SERVING_DIR, SERVING_FRESH_S
from shards.store import (
    BUILD_FILE,
    CURRENT_FILE,
    INDEXES_DIR,
    IndexRoot,
    Store,
    read_current,
    version_number,
)

log = logging.getLogger(__name__)

CLAIM_STALE_S = 86400.0      # a build claim unfinished for a day is abandoned
MIN_AGE_S = 3600.0           # repair leaves younger orphans alone (work in flight)
_LEASE = re.compile(r"^lease-(\d{6,})$")
_INDEX_FILES = {CURRENT_FILE, f"{CURRENT_FILE}.lock"}
_CHECK_ERRORS = (ValueError, FileNotFoundError, OSError, KeyError, TypeError)


@dataclass(frozen=True)
class Finding:
    kind: str             # "problem" or "orphan"
    uri: str              # the file or folder
    detail: str
    path: str = ""        # an orphan: relative to `base`, for removal
    base: Location | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        return f"{self.kind}: {self.uri}: {self.detail}"


@dataclass
class FsckReport:
    findings: list[Finding] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)       # orphans too young to remove
    checked_versions: int = 0

    @property
    def clean(self) -> bool:
        return not self.findings

    def problem(self, uri: str, detail: str) -> None:
        self.findings.append(Finding("problem", uri, detail))

    def orphan(self, base: Location, path: str, detail: str) -> None:
        uri = f"{base.uri}/{path}" if path else base.uri
        self.findings.append(Finding("orphan", uri, detail, path, base))


def fsck(store: Store | str, name: str | None = None, *, repair: bool = False,
         min_age_s: float = MIN_AGE_S, now: float | None = None) -> FsckReport:
    """Check one index (`name`) or every index and model of a store; with repair,
    remove the orphans older than min_age_s."""
    store = Store.of(store)
    now = time.time() if now is None else now
    if not store.location.exists():
        raise FileNotFoundError(f"{store.uri}: no such store")
    report = FsckReport()
    names = [check_name(name, "index name")] if name is not None else \
        store.location.child(INDEXES_DIR).listdir()
    if name is not None and not store.index(name).location.exists():
        raise FileNotFoundError(f"{store.index(name).uri}: no such index")
    for index_name in names:
        try:
            root = store.index(index_name)
        except ValueError as exc:
            report.problem(f"{store.location.uri}/{INDEXES_DIR}/{index_name}", str(exc))
            continue
        _guarded(report, root.uri, _check_index, root, report, now)
    if name is None:
        _guarded(report, store.models().uri, _check_models, store, report)
    if repair:
        _repair(report, now, min_age_s)
    return report


def _guarded(report: FsckReport, uri: str, check, *args) -> None:
    try:
        check(*args)
    except OutsideStoreError as exc:
        report.problem(uri, str(exc))


def _check_index(root: IndexRoot, report: FsckReport, now: float) -> None:
    loc = root.location
    try:
        current = read_current(loc)[0]
    except _CHECK_ERRORS as exc:
        report.problem(f"{loc.uri}/{CURRENT_FILE}", str(exc))
        current = None
    for entry in loc.listdir():
        if version_number(entry) >= 0:
            _guarded(report, f"{loc.uri}/{entry}", _check_version, root, entry,
                     entry == current, report, now)
        elif entry == LEASES_DIR:
            _check_leases(loc.child(LEASES_DIR), report)
        elif entry == SERVING_DIR:
            _check_serving(loc.child(SERVING_DIR), report, now)
        elif ".tmp-" in entry:
            report.orphan(loc, entry, "temp file of an interrupted write")
        elif entry not in _INDEX_FILES:
            report.problem(f"{loc.uri}/{entry}", "unknown entry in an index folder")
    if current is not None and not loc.exists(f"{current}/{MANIFEST_FILE}"):
        report.problem(f"{loc.uri}/{CURRENT_FILE}", f"names {current}, which has no manifest")


def _check_version(root: IndexRoot, version: str, is_current: bool, report: FsckReport,
                   now: float) -> None:
    vloc = root.version_location(version)
    files = vloc.find()
    if MANIFEST_FILE not in files:
        _unpublished(vloc, files, is_current, report, now)
        return
    try:
        manifest = read_manifest(vloc)
        load_arrays(root, version=version)      # model, every shard's size/checksum/rows
        report.checked_versions += 1
    except _CHECK_ERRORS as exc:
        report.problem(f"{vloc.uri}", f"does not load: {exc}")
        return
    own = [*manifest.shards, *([manifest.tombstones] if manifest.tombstones else [])]
    listed = {e.path for e in own if e.version is None} | {MANIFEST_FILE, BUILD_FILE}
    for path in files:
        if path in listed:
            continue
        what = "temp file of an interrupted write" if ".tmp-" in path else \
            "not listed in the manifest"
        if is_current:
            report.problem(f"{vloc.uri}/{path}", f"{what} (in CURRENT's version: not removed)")
        else:
            report.orphan(vloc, path, what)


def _unpublished(vloc: Location, files: list[str], is_current: bool, report: FsckReport,
                 now: float) -> None:
    """A version folder without a manifest: a build's claim, or a killed publish."""
    if is_current:
        report.problem(vloc.uri, "CURRENT's version has no manifest")
        return
    if BUILD_FILE in files:
        age = now - vloc.modified(BUILD_FILE)
        if age < CLAIM_STALE_S:
            return                               # a build in progress (or resumable)
        try:
            record = json.loads(vloc.read_bytes(BUILD_FILE))
            what = f"build claim unfinished for {age / 3600:.0f} h (model " \
                   f"{record.get('model_version')})"
        except (ValueError, AttributeError):
            what = f"unreadable build claim, {age / 3600:.0f} h old"
        report.orphan(vloc, "", f"abandoned {what}")
        return
    report.orphan(vloc, "", f"no manifest ({len(files)} files): an interrupted publish")


def _check_leases(loc: Location, report: FsckReport) -> None:
    numbers = {}
    for entry in loc.listdir():
        match = _LEASE.match(entry)
        if match:
            numbers[int(match.group(1))] = entry
        elif ".tmp-" in entry:
            report.orphan(loc, entry, "temp file of an interrupted write")
        else:
            report.problem(f"{loc.uri}/{entry}", "not a lease file")
    for number, entry in sorted(numbers.items()):
        try:
            record = json.loads(loc.read_bytes(entry))
            float(record["expires"]), str(record["owner"])
        except _CHECK_ERRORS as exc:
            report.problem(f"{loc.uri}/{entry}", f"unreadable lease ({exc})")
            continue
        if number < max(numbers):
            report.orphan(loc, entry, f"superseded by lease-{max(numbers):06d}")


def _check_serving(loc: Location, report: FsckReport, now: float) -> None:
    for entry in loc.listdir():
        try:
            at = float(json.loads(loc.read_bytes(entry))["at"])
        except _CHECK_ERRORS:
            report.orphan(loc, entry, "unreadable serving record")
            continue
        if now - at > SERVING_FRESH_S:
            report.orphan(loc, entry, f"serving record not renewed for {now - at:.0f} s")


def _check_models(store: Store, report: FsckReport) -> None:
    models = store.models()
    for version in models.listdir():
        mloc = models.child(version)
        if ".tmp-" in version:
            report.orphan(models, version, "temp file of an interrupted write")
            continue
        for path in mloc.find():
            if ".tmp-" in path:
                report.orphan(mloc, path, "temp file of an interrupted write")
        try:
            read_model(mloc, version)
        except _CHECK_ERRORS as exc:
            report.problem(mloc.uri, f"model does not load: {exc}")


def _repair(report: FsckReport, now: float, min_age_s: float) -> None:
    for finding in report.findings:
        if finding.kind != "orphan" or finding.base is None:
            continue
        files = finding.base.find(finding.path) if finding.path == "" or \
            finding.base.isdir(finding.path) else [finding.path]
        newest = max((finding.base.modified(f) for f in files), default=0.0)
        if now - newest < min_age_s:
            report.kept.append(finding.uri)
            continue
        if MANIFEST_FILE in files:
            continue                             # never a manifest
        finding.base.remove(finding.path, recursive=True)
        report.removed.append(finding.uri)
        log.info("removed %s (%s)", finding.uri, finding.detail)

"""Files a manifest lists from earlier versions of its index (SPEC 7).

An append or a delete publishes a version whose manifest lists the shards (and the
tombstone set) of earlier versions unchanged: `ShardEntry.version` / `TombstoneEntry.version`
name the version folder of the same index that holds the file. `holder_folder` is the
one place that turns such an entry into a folder; `referenced_versions` is the one
answer to "which version folders must stay" for whatever deletes old versions.
"""
from __future__ import annotations

import posixpath
from typing import Iterable

from shards.fsio import Location
from shards.manifest import MANIFEST_FILE, check_name, read_manifest
from shards.store import IndexRoot, as_root


def holder_folder(vloc: Location, version: str | None) -> Location:
    """The folder holding a file that the manifest of the version folder `vloc` lists
    with `version` (None: vloc itself). The index folder becomes the root: a version
    folder that resolves outside it (a symlink) is refused on access."""
    if version is None:
        return vloc
    check_name(version, "referenced version")
    parent = posixpath.dirname(vloc.path.rstrip("/"))
    index = vloc.rooted_at(parent, vloc.uri.rstrip("/").rsplit("/", 1)[0])
    return index.child(version)


def referenced_versions(root: IndexRoot, versions: Iterable[str]) -> set[str]:
    """Every version folder that the manifests of `versions` need (a shard or the
    tombstone set they list lives there), followed transitively so that each version
    kept stays loadable. A version without a manifest references nothing; an unreadable
    manifest raises ValueError (the caller cannot know what it needs: delete nothing)."""
    root = as_root(root)
    todo, seen, needed = list(versions), set(), set()
    while todo:
        version = todo.pop()
        if version in seen:
            continue
        seen.add(version)
        vloc = root.version_location(version)
        if not vloc.exists(MANIFEST_FILE):
            continue
        refs = read_manifest(vloc).referenced_versions()
        needed |= refs
        todo += sorted(refs)
    return needed

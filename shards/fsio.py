"""File-system primitives over fsspec: resolve a URI, atomic, exclusive and
compare-and-swap writes, and containment in the store.

Local paths get real atomicity from the OS (write a temp file, then os.replace or
os.link); on S3 a PUT is atomic per object and exclusive creation uses a conditional
PUT (If-None-Match: *), which s3fs exposes as pipe_file(mode="create"). A
compare-and-swap (`read_tagged` then `replace_if`) is a PUT with If-Match on the ETag
read on S3, and a read-compare-replace under an exclusive flock locally.
Every local path is checked to resolve (symlinks followed) inside the root the
Location was opened at: nothing is read, written, listed or removed outside it.
Credentials, region and endpoint come from the usual botocore sources (environment,
~/.aws, AWS_ENDPOINT_URL) or `storage_options`; nothing here logs them.
"""
from __future__ import annotations

import fcntl
import functools
import os
import posixpath
import uuid
from dataclasses import dataclass, field
from typing import Any

import fsspec
import fsspec.asyn
from fsspec.implementations.local import LocalFileSystem


class OutsideStoreError(ValueError):
    """A path resolves (through a symlink) outside the store it belongs to."""


try:      # botocore's connection and credential errors are no OSError: made one here
    from botocore.exceptions import BotoCoreError as _ClientSideError
except ImportError:        # no S3 support installed
    class _ClientSideError(Exception):
        pass


def _reachable(method):
    """An unreachable endpoint or missing credentials become a ConnectionError naming
    the store folder (the CLI's one-line exit 1), whatever the file system."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except _ClientSideError as exc:
            raise ConnectionError(f"{self.uri}: store unreachable ({type(exc).__name__}: "
                                  f"{exc})") from None
    return wrapper


def check_protocol(uri: str) -> str:
    """Refuse a URI whose protocol fsspec does not know (or cannot load) before any work."""
    protocol, _ = fsspec.core.split_protocol(str(uri))
    try:
        fsspec.get_filesystem_class(protocol or "file")
    except (ValueError, ImportError) as exc:
        raise ValueError(f"store {uri!r}: unknown or unavailable protocol "
                         f"{protocol!r} ({exc})") from None
    return str(uri)


@dataclass(frozen=True)
class Location:
    """A folder on some file system: `fs` plus the protocol-less `path`; `root` is the
    real path of the folder it was opened at, which no local access may leave."""

    fs: Any
    path: str
    uri: str
    storage_options: dict | None = field(default=None, repr=False, compare=False)
    root: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, uri: str, storage_options: dict | None = None) -> "Location":
        uri = check_protocol(uri)
        fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
        root = None
        if isinstance(fs, LocalFileSystem):
            path = os.path.abspath(path)
            root = os.path.realpath(path)
        return cls(fs, path.rstrip("/") or "/", uri.rstrip("/"), storage_options, root)

    def rooted_at(self, path: str, uri: str) -> "Location":
        """Another folder of the same file system, a new root (e.g. the store of a version
        folder that was opened by its own path)."""
        root = os.path.realpath(path) if self.is_local else None
        return Location(self.fs, path, uri, self.storage_options, root)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def child(self, *parts: str) -> "Location":
        return Location(self.fs, posixpath.join(self.path, *parts),
                        "/".join([self.uri, *parts]), self.storage_options, self.root)

    def join(self, *parts: str) -> str:
        return posixpath.join(self.path, *parts)

    def inside(self, name: str = "") -> str:
        """The path of `name` in this folder, refused if it resolves outside the root."""
        path = self.join(name) if name else self.path
        if self.is_local and self.root is not None:
            real = os.path.realpath(path)
            if real != self.root and not real.startswith(self.root.rstrip("/") + "/"):
                where = f"{self.uri}/{name}" if name else self.uri
                raise OutsideStoreError(f"{where}: resolves outside the store folder "
                                        f"{self.root} (a symlink?); refusing it")
        return path

    @_reachable
    def exists(self, name: str = "") -> bool:
        return self.fs.exists(self.inside(name))

    @_reachable
    def isdir(self, name: str = "") -> bool:
        return self.fs.isdir(self.inside(name))

    @_reachable
    def read_bytes(self, name: str) -> bytes:
        path = self.inside(name)
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.uri}/{name}: no such file") from None
        except IsADirectoryError:
            raise ValueError(f"{self.uri}/{name}: is a directory, expected a file") from None

    @_reachable
    def read_tagged(self, name: str) -> tuple[bytes | None, Any]:
        """(content or None if absent, tag) for a later `replace_if`: the ETag on S3 (read
        in the same request as the content), the content itself locally."""
        path = self.inside(name)
        if self.is_local:
            data = self.read_bytes(name) if os.path.lexists(path) else None
            return data, data
        if not _is_s3(self.fs):
            raise ValueError(f"{self.uri}: compare-and-swap needs a local or s3:// store")
        bucket, key, _ = self.fs.split_path(path)
        try:
            response = self.fs.call_s3("get_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None, None

        async def body():
            async with response["Body"] as stream:
                return await stream.read()

        return fsspec.asyn.sync(self.fs.loop, body), response["ETag"]

    @_reachable
    def replace_if(self, name: str, data: bytes, tag: Any) -> bool:
        """Write `name` only if it is unchanged since `read_tagged` returned `tag` (or still
        absent when tag is None); False when another writer changed it first."""
        path = self.inside(name)
        if self.is_local:
            with _locked(f"{path}.lock"):
                now = self.read_bytes(name) if os.path.lexists(path) else None
                if now != tag:
                    return False
                os.replace(_durable_temp_copy(path, data), path)
                return True
        if tag is None:
            return self.create_exclusive(name, data)
        try:
            self.fs.pipe_file(path, data, IfMatch=tag)
        except (FileNotFoundError, OSError) as exc:
            if _precondition_failed(exc):
                return False
            raise
        return True

    @_reachable
    def write_bytes(self, name: str, data: bytes) -> None:
        """Write a whole file so that readers see the old or the new content, never half."""
        path = self.inside(name)
        if self.is_local:
            os.replace(_durable_temp_copy(path, data), path)
        else:
            self.fs.pipe_file(path, data)

    @_reachable
    def create_exclusive(self, name: str, data: bytes) -> bool:
        """Create a file atomically unless it exists; False if it already existed."""
        path = self.inside(name)
        if self.is_local:
            tmp = _durable_temp_copy(path, data)
            try:
                os.link(tmp, path)  # atomic, fails if path exists
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            return True
        try:
            self.fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        except OSError as exc:  # some s3fs versions surface 412 as a plain OSError
            if _precondition_failed(exc):
                return False
            raise
        return True

    @_reachable
    def listdir(self, name: str = "") -> list[str]:
        path = self.inside(name)
        try:
            entries = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e.rstrip("/")) for e in entries)

    @_reachable
    def find(self, name: str = "") -> list[str]:
        """Every file under `name` (recursively), as paths relative to this folder; a
        link that leaves the root raises OutsideStoreError."""
        base = self.inside(name)
        try:
            found = self.fs.find(base, withdirs=False)
        except FileNotFoundError:
            return []
        out = []
        for path in found:
            rel = posixpath.relpath(path.rstrip("/"), self.path)
            self.inside(rel)
            out.append(rel)
        return sorted(out)

    @_reachable
    def modified(self, name: str) -> float:
        """When a file was last written (seconds since the epoch)."""
        path = self.inside(name)
        if self.is_local:
            return os.lstat(path).st_mtime
        info = self.fs.info(path)
        stamp = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
        return stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp or 0)

    def check_writable(self) -> None:
        """Write and remove a probe file; raise PermissionError naming the folder if the
        store cannot be written (missing bucket, read-only path, no credentials)."""
        probe = f".snapline-write-check-{uuid.uuid4().hex[:12]}"
        try:
            self.write_bytes(probe, b"")
            self.remove(probe)
        except ConnectionError:
            raise
        except (OSError, ValueError) as exc:  # PermissionError, FileNotFoundError, s3fs errors
            raise PermissionError(f"{self.uri}: store is not writable ({type(exc).__name__}: "
                                  f"{exc})") from None

    @_reachable
    def remove(self, name: str, recursive: bool = False) -> None:
        """Remove a file (or a folder with recursive=True); a symlink inside the root is
        removed itself, never what it points to."""
        path = self.join(name)
        if self.is_local and os.path.islink(path):
            self.inside(posixpath.dirname(name))
            os.unlink(path)
            return
        path = self.inside(name)     # rmtree unlinks symlinks inside, never follows them
        if self.fs.exists(path):
            self.fs.rm(path, recursive=recursive)


def _is_s3(fs) -> bool:
    return "s3" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def _precondition_failed(exc: BaseException) -> bool:
    """Whether an s3fs error is S3's 412 (a conditional PUT that did not hold)."""
    text = f"{exc} {exc.__cause__}"
    return isinstance(exc, FileExistsError) or any(
        s in text for s in ("PreconditionFailed", "412", "pre-conditions"))


class _locked:
    """An exclusive flock on a lock file (threads and processes; released on exit or
    when the holder dies)."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _durable_temp_copy(path: str, data: bytes) -> str:
    """Write data to a fresh temp file beside path, flushed to disk; returns its name."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp

"""File-system primitives over fsspec: resolve a URI, atomic and exclusive writes.

Local paths get real atomicity from the OS (write a temp file, then os.replace or
os.link); on S3 a PUT is atomic per object and exclusive creation uses a conditional
PUT (If-None-Match: *), which s3fs exposes as pipe_file(mode="create").
Credentials, region and endpoint come from the usual botocore sources (environment,
~/.aws, AWS_ENDPOINT_URL) or `storage_options`; nothing here logs them.
"""
from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass, field
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem


@dataclass(frozen=True)
class Location:
    """A folder on some file system: `fs` plus the protocol-less `path`."""

    fs: Any
    path: str
    uri: str
    storage_options: dict | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, uri: str, storage_options: dict | None = None) -> "Location":
        uri = str(uri)
        fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
        if isinstance(fs, LocalFileSystem):
            path = os.path.abspath(path)
        return cls(fs, path.rstrip("/") or "/", uri.rstrip("/"), storage_options)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def child(self, *parts: str) -> "Location":
        return Location(self.fs, posixpath.join(self.path, *parts),
                        "/".join([self.uri, *parts]), self.storage_options)

    def join(self, *parts: str) -> str:
        return posixpath.join(self.path, *parts)

    def exists(self, name: str = "") -> bool:
        return self.fs.exists(self.join(name) if name else self.path)

    def read_bytes(self, name: str) -> bytes:
        path = self.join(name)
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.uri}/{name}: no such file") from None

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write a whole file so that readers see the old or the new content, never half."""
        path = self.join(name)
        if self.is_local:
            os.replace(_durable_temp_copy(path, data), path)
        else:
            self.fs.pipe_file(path, data)

    def create_exclusive(self, name: str, data: bytes) -> bool:
        """Create a file atomically unless it exists; False if it already existed."""
        path = self.join(name)
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
            if "PreconditionFailed" in str(exc) or "412" in str(exc):
                return False
            raise
        return True

    def listdir(self, name: str = "") -> list[str]:
        path = self.join(name) if name else self.path
        try:
            entries = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e.rstrip("/")) for e in entries)

    def check_writable(self) -> None:
        """Write and remove a probe file; raise PermissionError naming the folder if the
        store cannot be written (missing bucket, read-only path, no credentials)."""
        probe = f".snapline-write-check-{uuid.uuid4().hex[:12]}"
        try:
            self.write_bytes(probe, b"")
            self.remove(probe)
        except (OSError, ValueError) as exc:  # PermissionError, FileNotFoundError, s3fs errors
            raise PermissionError(f"{self.uri}: store is not writable ({type(exc).__name__}: "
                                  f"{exc})") from None

    def remove(self, name: str, recursive: bool = False) -> None:
        path = self.join(name)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=recursive)


def _durable_temp_copy(path: str, data: bytes) -> str:
    """Write data to a fresh temp file beside path, flushed to disk; returns its name."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp

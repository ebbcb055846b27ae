"""A store URI checked where it enters (a CLI flag, a build.yaml key), before any work:
a known protocol, reachable, and present when the command reads from it.

    store = checked_store(args.store, "--store", must_exist=True)

An unknown protocol or a missing store is bad input (ValueError / FileNotFoundError
naming the key and the URI); a store that cannot be reached (no endpoint, no
credentials, a network error) is StoreUnavailableError, an environmental failure.
"""
from __future__ import annotations

import fsspec

from shards import Store

__all__ = ["StoreUnavailableError", "checked_store"]


class StoreUnavailableError(ConnectionError):
    """The store could not be reached (endpoint, network, credentials)."""


def checked_store(uri: str, key: str = "--store", *, must_exist: bool = False,
                  storage_options: dict | None = None) -> Store:
    """The handle of store `uri`, after checking its protocol and reaching it once."""
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(f"{key}: a store URI is required (a local path or s3://bucket/prefix)")
    protocol = uri.split("://", 1)[0] if "://" in uri else "file"
    try:
        fsspec.get_filesystem_class(protocol)
    except (ValueError, ImportError) as exc:
        raise ValueError(f"{key} {uri}: unsupported storage protocol {protocol!r} "
                         f"({' '.join(str(exc).split())})") from None
    store = Store.of(uri, storage_options)
    try:
        exists = store.location.exists()
    except (FileNotFoundError, PermissionError, ValueError):
        raise
    except Exception as exc:  # noqa: BLE001 - botocore/aiohttp errors have no common base
        raise StoreUnavailableError(f"{key} {uri}: store unreachable ({type(exc).__name__}: "
                                    f"{' '.join(str(exc).split())})") from None
    if must_exist and not exists:
        raise FileNotFoundError(f"{key} {uri}: no such store")
    return store

"""Joining a Ray cluster and asking what it has free: the lines every entry point shares."""
from __future__ import annotations

import logging

import ray

log = logging.getLogger(__name__)


def connect(address: str | None, namespace: str | None = None, **options) -> None:
    """Join the Ray cluster at `address` unless this process already has (a driver that
    called ray.init, or a Ray worker)."""
    if not ray.is_initialized():
        ray.init(address=address, namespace=namespace, **options)


def available_memory() -> float | None:
    """Bytes of memory Ray reports free on the connected cluster (None: not reported)."""
    free = ray.available_resources().get("memory")
    if free is None:
        log.warning("Ray reports no memory resource: the memory estimate is not checked")
    return free

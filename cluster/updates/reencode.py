"""Model updates (SPEC 5): train a new model for an index, re-encode the index with it,
on demand, when stale, or on a schedule; old versions retired after a retention count.

    snapline train    --store S --name N --sample-size 100000 --seed 1
    snapline models   --store S
    snapline reencode --store S --name N [--model VERSION|latest] [--if-stale]
    snapline schedule --store S --name N --every 1h        # cluster.updates.scheduler

A re-encode is the build pipeline (cluster.build.pipeline.run_build) with the model given and the
source, row ranges and shard size of the published version, so it resumes like a build
when it is interrupted. One re-encode of an index runs at a time: a lease in the store.
Each operation checks once: check_reencode verifies the model and opens the source, and
its CheckedReencode is what run_reencode (and the scheduler's first run) takes.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass

import ray

from cluster.build.pipeline import CheckedBuild, check_build, memory_needs, run_build, train_model
from cluster.estimate import refuse_unless_fits
from cluster.ray_session import available_memory, connect
from cluster.build.config import (
    BuildConfig,
    IndexConfig,
    SampleConfig,
    ShardsConfig,
    SourceConfig,
    WorkersConfig,
)
from shards import Store, load_model, open_vectors, resolve
from shards.manifest import Manifest, check_name
from shards.models import model_shape
from shards.registry import Lease, latest_model, retain_versions
from trainers.train_encoder import EncoderConfig

log = logging.getLogger(__name__)

DEFAULT_KEEP = 3


class StaleCheckError(ValueError):
    """The index and the requested model or source cannot be re-encoded together."""


def _published(store: str, name: str) -> Manifest:
    try:
        manifest, _, _ = resolve(Store(store).index(name))
    except FileNotFoundError:
        raise FileNotFoundError(f"{store}: no published index named {name!r}") from None
    return manifest


def _source_of(manifest: Manifest) -> SourceConfig:
    src = manifest.source
    if not src.get("uri"):
        raise StaleCheckError(f"index {manifest.name!r} {manifest.version}: its manifest names "
                              f"no source to re-encode from")
    return SourceConfig(uri=src["uri"], format=src.get("format"), column=src.get("column"))


def _encoder_config(meta: dict, seed: int) -> EncoderConfig:
    config = dict(((meta.get("training") or {}).get("config")) or {})
    config.setdefault("kind", (meta.get("encoder") or {}).get("kind", "none"))
    if config["kind"] not in ("none", "opq", "gsl"):
        config["kind"] = "none"
    return EncoderConfig(**{**config, "seed": seed})


def train_for_index(store: str, name: str, sample_size: int, seed: int,
                    workers: WorkersConfig = WorkersConfig(), address: str | None = None) -> dict:
    """A new model version for index `name`: a fresh sample of its source, the index
    shape and encoder settings of the model it is encoded with now. Checks before it
    joins Ray at `address` (unless this process has), refuses a sample that does not
    fit in the memory Ray reports free, and trains in a Ray task."""
    manifest = _published(store, name)
    current, _ = load_model(Store(store), manifest.model_version)
    shape = manifest.shape
    cfg = BuildConfig(
        name=name, store=store, source=_source_of(manifest),
        sample=SampleConfig(size=sample_size, seed=seed),
        index=IndexConfig(nlist=shape.nlist, nedge=shape.nedge,
                          code_bytes=shape.code_bytes, nlambda=shape.nlambda,
                          pq_bits=shape.pq_bits, metric=shape.metric),
        encoder=_encoder_config(current, seed), workers=workers)
    checked = check_build(cfg)
    connect(address)
    refuse_unless_fits([n for n in memory_needs(checked) if n.part == "trainer"],
                       available_memory(), f"training a model for {name}")
    trainer = ray.remote(num_cpus=workers.cpus_per_worker, num_gpus=workers.train_gpus)(train_model)
    return ray.get(trainer.remote(checked))


def is_stale(store: str, name: str) -> tuple[bool, str, str | None]:
    """(stale, the model the index is encoded with, the newest model for the index)."""
    manifest = _published(store, name)
    newest = latest_model(Store(store).index(name))
    return (newest is not None and newest != manifest.model_version,
            manifest.model_version, newest)


@dataclass(frozen=True)
class ReencodeRequest:
    store: str
    name: str
    model: str = "latest"
    if_stale: bool = False
    keep: int = DEFAULT_KEEP
    lease_ttl_s: float = 600.0
    workers: WorkersConfig = WorkersConfig()

    def __post_init__(self):
        if not isinstance(self.store, str) or not self.store:
            raise ValueError(f"--store: a store URI is required, got {self.store!r}")
        check_name(self.name, "--name")
        if self.model != "latest":
            check_name(self.model, "--model")
        if isinstance(self.keep, bool) or not isinstance(self.keep, int) or self.keep < 2:
            raise ValueError(f"--keep must be an integer >= 2 (the served version and the new "
                             f"one), got {self.keep!r}")
        ttl = self.lease_ttl_s
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) \
                or ttl <= 0:
            raise ValueError(f"--lease-ttl must be a finite number of seconds > 0, got {ttl!r}")


@dataclass(frozen=True)
class CheckedReencode:
    """What check_reencode established: the build to run and the version it replaces."""

    request: ReencodeRequest
    build: CheckedBuild
    manifest: Manifest


def check_reencode(req: ReencodeRequest) -> CheckedReencode:
    """Everything that must hold before a re-encode starts; raises naming the problem.
    The model is verified (every checksum) and the source opened once, here."""
    if req.keep < 2:
        raise ValueError(f"keep must be >= 2 (the served version and the new one), got {req.keep}")
    manifest = _published(req.store, req.name)
    root = Store(req.store).index(req.name)
    model = latest_model(root) if req.model == "latest" else req.model
    if model is None:
        raise StaleCheckError(f"{req.store}: no model version trained for index {req.name!r}")
    try:
        meta, _ = load_model(root.store, model)     # verifies every array's sha256
        dim = model_shape(meta).dim
    except (FileNotFoundError, ValueError) as exc:
        raise StaleCheckError(f"model {model}: {exc}") from None
    if dim != manifest.shape.dim:
        raise StaleCheckError(f"model {model} takes {dim}-d vectors, index "
                              f"{req.name!r} holds {manifest.shape.dim}-d ones")
    source = _source_of(manifest)
    try:
        reader = open_vectors(source.uri, source.format, column=source.column)
    except (FileNotFoundError, ValueError) as exc:
        raise StaleCheckError(f"index {req.name!r} source: {exc}") from None
    rows = manifest.source.get("rows", manifest.ntotal)
    if reader.n != rows or reader.d != manifest.shape.dim:
        raise StaleCheckError(f"source {source.uri} now has {reader.n} rows of d={reader.d}; "
                              f"index {req.name!r} {manifest.version} was built from {rows} "
                              f"rows of d={manifest.shape.dim}: refusing to re-encode")
    rows_per_shard = manifest.source.get("rows_per_shard") or max(s.rows for s in manifest.shards)
    cfg = BuildConfig(name=req.name, store=req.store, source=source, model=model,
                      shards=ShardsConfig(rows_per_shard=rows_per_shard), workers=req.workers)
    return CheckedReencode(req, check_build(cfg, source=reader, model_meta=meta), manifest)


def reencode(req: ReencodeRequest, address: str | None = None) -> dict:
    """Re-encode index `name` with a model into a new published version: check, join
    Ray at `address` (unless this process has), run. Returns a summary; {"skipped":
    reason} when up to date (if_stale) or leased."""
    checked = check_reencode(req)      # refuse before Ray starts
    connect(address)
    return run_reencode(checked)


def run_reencode(checked: CheckedReencode) -> dict:
    """The re-encode check_reencode cleared (needs a connected Ray): skip when up to
    date (if_stale), take the lease, build, retire old versions."""
    req, manifest, cfg = checked.request, checked.manifest, checked.build.config
    if req.if_stale and cfg.model == manifest.model_version:
        return {"skipped": f"index {req.name!r} {manifest.version} is encoded with the newest "
                           f"model {cfg.model}", "version": manifest.version}
    root = Store(req.store).index(req.name)
    lease = Lease(root, ttl_s=req.lease_ttl_s)
    if not lease.acquire():
        return {"skipped": f"another re-encode of {req.name!r} holds the lease: {lease.holder()}"}
    stop = threading.Event()
    renewer = threading.Thread(target=_renew_until, args=(lease, stop), daemon=True)
    renewer.start()
    try:
        summary = run_build(checked.build)
        summary["previous_version"] = manifest.version
        summary["deleted_versions"] = retain_versions(root, req.keep,
                                                      protect=(manifest.version,))
        return summary
    finally:
        stop.set()
        renewer.join()
        lease.release()


def _renew_until(lease: Lease, stop: threading.Event) -> None:
    while not stop.wait(lease.ttl_s / 3):
        lease.renew()


__all__ = ["CheckedReencode", "ReencodeRequest", "StaleCheckError", "check_reencode", "is_stale",
           "reencode", "run_reencode", "train_for_index"]

"""Model updates (SPEC 5): train a new model for an index, re-encode the index with it,
on demand, when stale, or on a schedule; old versions retired after a retention count.

    snapline train    --store S --name N --sample-size 100000 --seed 1
    snapline models   --store S
    snapline reencode --store S --name N [--model VERSION|latest] [--if-stale]
    snapline schedule --store S --name N --every 1h        # cluster.updates.scheduler

A re-encode works shard by shard on the version CURRENT names (SPEC 7: appended shards,
tombstones, attribute columns and stored vectors are kept): shard i becomes part i of a
new version with the same ids, attribute rows and stored vectors and the new model's
codes; its vectors come from the stored `vector` column, else from the source rows the
shard records (cluster.updates.reencode_plan; a shard with neither is refused before any
work); deleted rows are dropped. The parts are written by an actor pool of encode
workers (cluster.updates.reencode_workers) into a claimed version folder, named by their
content, so a killed re-encode resumes. The commit is made from the checked version: if
CURRENT moved meanwhile (an append or a delete landed), CurrentMovedError and nothing is
published; a rerun re-encodes the newer version. One re-encode of an index runs at a
time: a lease in the store. Each operation checks once: check_reencode verifies the
model and opens the sources, and its CheckedReencode is what run_reencode (and the
scheduler's first run) takes.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

import ray

from cluster.build.config import (
    BuildConfig,
    IndexConfig,
    SampleConfig,
    SourceConfig,
    WorkersConfig,
)
from cluster.build.pipeline import check_build, memory_needs, train_model
from cluster.estimate import refuse_unless_fits
from cluster.ray_session import available_memory, connect
from cluster.updates.reencode_plan import ReencodePlan, StaleCheckError, plan_reencode, \
    reencode_memory
from cluster.updates.reencode_workers import reencode_shards
from shards import IndexRoot, PublishConflict, Store, load_model, publish_parts, resolve
from shards.claims import claim_build
from shards.commit import no_step
from shards.manifest import MANIFEST_FILE, Manifest, ShardEntry, check_name
from shards.models import model_shape
from shards.registry import Lease, latest_model, retain_versions
from trainers.train_encoder import EncoderConfig

log = logging.getLogger(__name__)

DEFAULT_KEEP = 3


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
                              f"no source to sample a training set from")
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
    """What check_reencode established: the version re-encoded, the model, where each
    shard's vectors come from."""

    request: ReencodeRequest
    plan: ReencodePlan

    @property
    def manifest(self) -> Manifest:
        """The version re-encoded (CURRENT when checked)."""
        return self.plan.base


class CurrentMovedError(PublishConflict):
    """CURRENT moved past the version a re-encode started from (an append, a delete or
    a compaction was published meanwhile): nothing was published."""


def check_reencode(req: ReencodeRequest) -> CheckedReencode:
    """Everything that must hold before a re-encode starts; raises naming the problem.
    The model is verified (every checksum) and each source opened once, here; every
    shard of CURRENT has its vectors' origin (reencode_plan), or none is re-encoded."""
    if req.keep < 2:
        raise ValueError(f"keep must be >= 2 (the served version and the new one), got {req.keep}")
    manifest = _published(req.store, req.name)
    root = Store(req.store).index(req.name)
    model = latest_model(root) if req.model == "latest" else req.model
    if model is None:
        raise StaleCheckError(f"{req.store}: no model version trained for index {req.name!r}")
    try:
        meta, _ = load_model(root.store, model)     # verifies every array's sha256
        shape = model_shape(meta)
    except (FileNotFoundError, ValueError) as exc:
        raise StaleCheckError(f"model {model}: {exc}") from None
    if shape.dim != manifest.shape.dim:
        raise StaleCheckError(f"model {model} takes {shape.dim}-d vectors, index "
                              f"{req.name!r} holds {manifest.shape.dim}-d ones")
    if shape.metric != manifest.shape.metric:
        raise StaleCheckError(f"model {model} was trained for metric {shape.metric!r}, index "
                              f"{req.name!r} ranks by {manifest.shape.metric!r}")
    plan = plan_reencode(root, manifest, model, shape)
    root.location.check_writable()      # PermissionError naming the store, before Ray
    return CheckedReencode(req, plan)


def reencode(req: ReencodeRequest, address: str | None = None) -> dict:
    """Re-encode index `name` with a model into a new published version: check, join
    Ray at `address` (unless this process has), run. Returns a summary; {"skipped":
    reason} when up to date (if_stale) or leased."""
    checked = check_reencode(req)      # refuse before Ray starts
    connect(address)
    return run_reencode(checked)


def run_reencode(checked: CheckedReencode, *,
                 on_step: Callable[..., None] = no_step) -> dict:
    """The re-encode check_reencode cleared (needs a connected Ray): skip when up to
    date (if_stale), take the lease, re-encode every shard, publish from the checked
    version, retire old versions. CurrentMovedError when CURRENT moved past the checked
    version (before the work or before the commit): CURRENT stays on the newer version,
    a rerun re-encodes that one. `on_step("commit")` runs between the encode stage and
    the commit (a test hook, as in shards' publishes)."""
    req, manifest, plan = checked.request, checked.manifest, checked.plan
    if req.if_stale and plan.model_version == manifest.model_version:
        return {"skipped": f"index {req.name!r} {manifest.version} is encoded with the newest "
                           f"model {plan.model_version}", "version": manifest.version}
    root = Store(req.store).index(req.name)
    lease = Lease(root, ttl_s=req.lease_ttl_s)
    if not lease.acquire():
        return {"skipped": f"another re-encode of {req.name!r} holds the lease: {lease.holder()}"}
    stop = threading.Event()
    renewer = threading.Thread(target=_renew_until, args=(lease, stop), daemon=True)
    renewer.start()
    try:
        summary = _reencode_shards(root, checked, on_step)
        summary["deleted_versions"] = retain_versions(root, req.keep,
                                                      protect=(manifest.version,))
        return summary
    finally:
        stop.set()
        renewer.join()
        lease.release()


def _reencode_shards(root: IndexRoot, checked: CheckedReencode,
                     on_step: Callable[..., None]) -> dict:
    """Memory check, claim (or resume), encode stage, commit from the base; the summary."""
    t0 = time.perf_counter()
    req, base, plan = checked.request, checked.manifest, checked.plan
    workers = req.workers
    refuse_unless_fits(reencode_memory(plan, workers.encode), available_memory(),
                       f"re-encode of {req.name}")
    _refuse_if_moved(root, base)
    claim = claim_build(root, plan.fingerprint())
    log.info("%s re-encode of %s %s into %s with model %s: %d shards, vectors from %s",
             "resuming" if claim.resumed else "starting", req.name, base.version,
             claim.version, plan.model_version, len(plan.inputs), plan.vectors_from)
    t1 = time.perf_counter()
    rows = reencode_shards(root=root, version=claim.version, plan=plan, workers=workers.encode,
                           cpus_per_worker=workers.cpus_per_worker,
                           gpus_per_worker=workers.gpus_per_worker)
    t2 = time.perf_counter()
    on_step("commit")
    listed = [r for r in rows if int(r["rows"]) > 0] or rows[:1]   # one empty part stays
    entries = [ShardEntry(path=str(r["path"]), rows=int(r["rows"]), bytes=int(r["bytes"]),
                          sha256=str(r["sha256"])) for r in listed]
    manifest = _commit(root, claim.version, plan, entries)
    written = [r for r in rows if not r["skipped"]]
    return {
        "name": req.name, "version": manifest.version, "model_version": plan.model_version,
        "previous_version": base.version, "store": req.store, "ntotal": manifest.ntotal,
        "shards": len(entries), "shards_written": len(written),
        "shards_skipped": len(rows) - len(written), "shards_dropped": len(rows) - len(listed),
        "rows_dropped": sum(int(r["dropped"]) for r in rows),
        "tombstones_before": base.deleted, "vectors_from": plan.vectors_from,
        "resumed": claim.resumed, "workers": workers.encode, "nlist": plan.shape.nlist,
        "train_s": None, "encode_s": t2 - t1,
        "encode_vectors_per_s": sum(int(r["rows"]) for r in written) / max(t2 - t1, 1e-9),
        "encode_worker_s": sum(float(r["seconds"]) for r in written),
        "peak_worker_rss_mb": max(float(r["peak_rss_mb"]) for r in rows),
        "encode_actors": len({str(r["worker"]) for r in rows}),
        "total_s": time.perf_counter() - t0,
    }


def _refuse_if_moved(root: IndexRoot, base: Manifest, claimed: str | None = None) -> None:
    """CurrentMovedError when CURRENT no longer names `base`; the folder of an unfinished
    re-encode (`claimed`, no manifest yet) is removed then: it can never be published."""
    current = root.current_version()
    if current == base.version:
        return
    if claimed is not None and not root.version_location(claimed).exists(MANIFEST_FILE):
        root.location.remove(claimed, recursive=True)
    raise CurrentMovedError(_moved_message(root.name, base.version, current))


def _moved_message(name: str, base: str, current: str | None) -> str:
    return (f"index {name!r}: CURRENT moved from {base} to {current} while re-encoding "
            f"{base} (an append, delete or compaction was published); nothing was published, "
            f"CURRENT stays {current}: run the re-encode again to re-encode {current}")


def _commit(root: IndexRoot, version: str, plan: ReencodePlan,
            entries: list[ShardEntry]) -> Manifest:
    """Publish the parts from the base: refused (CurrentMovedError) if CURRENT moved past
    it, before the manifest is written (checked) or by the compare-and-swap (a change
    that lands in between)."""
    base = plan.base
    _refuse_if_moved(root, base, claimed=version)
    try:
        return publish_parts(root, version, plan.model_version, plan.shape, entries,
                             base.source, tombstones=None, attributes=base.attributes,
                             vectors=base.vectors, next_id=base.next_id,
                             expect_current=base.version)
    except PublishConflict as exc:
        if root.current_version() == base.version:
            raise
        raise CurrentMovedError(_moved_message(root.name, base.version,
                                               root.current_version())) from exc


def _renew_until(lease: Lease, stop: threading.Event) -> None:
    while not stop.wait(lease.ttl_s / 3):
        lease.renew()


__all__ = ["CheckedReencode", "CurrentMovedError", "ReencodeRequest", "StaleCheckError",
           "check_reencode", "is_stale", "reencode", "run_reencode", "train_for_index"]

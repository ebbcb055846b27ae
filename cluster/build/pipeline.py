"""The distributed index build (SPEC 5): sample -> train -> encode -> publish.

    ray job submit --working-dir . -- python -m cluster.build --config build.yaml
    snapline build --config build.yaml          # the same entry, `build()`, on a local Ray

1. check: the config, the source and learn files, the model, the store: before any work
   (check_build, once; every later stage takes its CheckedBuild); then the memory the
   trainer and the encode workers need against what Ray reports free (cluster.estimate);
2. claim a version folder (or resume the unfinished build of the same config);
3. train in a Ray actor (GPU when `workers.train_gpus` > 0): sample the source by row
   ranges, train the encoder and VLQ codebooks, write a model version;
4. encode with a Ray Data actor pool, one source partition -> one shard;
5. publish: manifest, then CURRENT. A reader never sees a half-built version.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass

import ray

from cluster.build.args import add_build_arguments
from cluster.build.config import (DEFAULT_NEDGE, BuildConfig, BuildConfigError, SampleConfig,
                                  load_build_config)
from cluster.build.encode_workers import READ_CHUNK_ROWS, encode_partitions
from cluster.exit_status import OneLineArgumentParser, run_guarded
from cluster.estimate import MemoryNeed, build_memory, refuse_unless_fits
from cluster.ray_session import available_memory
from cluster.store_check import checked_store
from indexer.sizing import ivf_nlist_for, vlq_nlist_for
from shards import Store, open_vectors, publish_parts
from shards.claims import claim_build, record_build
from shards.manifest import ShardEntry
from shards.models import load_model, model_shape, read_model_meta
from shards.sampling import sample_vectors
from shards.shape import IndexShape
from trainers.encoder_config import check_config
from trainers.model_version import train_model_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckedBuild:
    """What validation established: sizes every later stage relies on."""

    config: BuildConfig
    n_rows: int
    dim: int
    nlist: int
    nedge: int
    n_train: int
    shape: IndexShape         # of the model the build trains or uses


def _absolute(uri: str) -> str:
    return uri if "://" in uri else os.path.abspath(uri)


def resolve_paths(cfg: BuildConfig) -> BuildConfig:
    """Local paths made absolute on the driver, so actors on this node read the same files."""
    source = dataclasses.replace(cfg.source, uri=_absolute(cfg.source.uri))
    learn = cfg.learn and dataclasses.replace(cfg.learn, uri=_absolute(cfg.learn.uri))
    return dataclasses.replace(cfg, store=_absolute(cfg.store), source=source, learn=learn)


def _open(spec, key: str):
    try:
        return open_vectors(spec.uri, spec.format, column=spec.column)
    except (FileNotFoundError, ValueError, PermissionError) as exc:
        raise BuildConfigError(f"{key}.uri: {exc}") from None


def check_build(cfg: BuildConfig, *, source=None, model_meta: dict | None = None) -> CheckedBuild:
    """Refuse a build that cannot work, naming the key, before any work starts. A caller
    that has already opened the source (`source`, its reader) or verified the model
    (`model_meta`, the meta of `cfg.model`) passes them on: nothing is opened twice."""
    cfg = resolve_paths(cfg)
    source = _open(cfg.source, "source") if source is None else source
    if source.n == 0:
        raise BuildConfigError(f"source.uri: {cfg.source.uri} holds no rows")
    if cfg.model is not None:
        return _check_with_model(cfg, source, model_meta)
    if cfg.learn is not None:
        learn = _open(cfg.learn, "learn")
        if learn.d != source.d:
            raise BuildConfigError(f"learn.uri: {learn.d}-d vectors, the source has d={source.d}")
        n_train = learn.n
    else:
        n_train = min((cfg.sample or SampleConfig()).size, source.n)
    nlist = cfg.index.nlist or vlq_nlist_for(ivf_nlist_for(source.n, n_train), n_train)
    if nlist > n_train:
        raise BuildConfigError(f"index.nlist: {nlist} lists need at least as many training "
                               f"vectors (ideally 39x), the sample has {n_train}")
    # given nlist and nedge: nedge < nlist (config check); else capped at nlist - 1 (documented)
    nedge = cfg.index.nedge if None not in (cfg.index.nlist, cfg.index.nedge) else \
        min(cfg.index.nedge or DEFAULT_NEDGE, nlist - 1)
    try:
        shape = check_config(cfg.encoder, IndexShape(
            source.d, nlist, nedge, cfg.index.code_bytes, cfg.index.nlambda,
            encoder=cfg.encoder.kind, code_dim=cfg.encoder.dim_out, pq_bits=cfg.index.pq_bits,
            metric=cfg.index.metric or "l2"))
    except ValueError as exc:
        raise BuildConfigError(f"encoder / index.code_bytes: {exc}") from None
    _check_store(cfg)
    return CheckedBuild(cfg, source.n, source.d, nlist, nedge, n_train, shape)


def _check_with_model(cfg: BuildConfig, source, meta: dict | None) -> CheckedBuild:
    try:
        if meta is None:
            meta, _ = load_model(Store(cfg.store), cfg.model)     # verifies every checksum
        shape = model_shape(meta, f"model {cfg.model}")
    except (FileNotFoundError, ValueError) as exc:
        raise BuildConfigError(f"model: {exc}") from None
    if shape.dim != source.d:
        raise BuildConfigError(f"model: {cfg.model} takes {shape.dim}-d vectors, the "
                               f"source has d={source.d}")
    if cfg.index.metric not in (None, shape.metric):
        raise BuildConfigError(f"index.metric: {cfg.index.metric!r}, but model {cfg.model} was "
                               f"trained for metric {shape.metric!r} (omit index.metric to "
                               f"use the model's)")
    return CheckedBuild(cfg, source.n, source.d, shape.nlist, shape.nedge, 0, shape)


def _check_store(cfg: BuildConfig) -> None:
    """A known protocol (else BuildConfigError naming `store`), reachable (else
    StoreUnavailableError naming it: an environmental failure), writable."""
    try:
        store = checked_store(cfg.store, "store")
    except ValueError as exc:                # names the key already
        raise BuildConfigError(str(exc)) from None
    try:
        store.location.check_writable()
    except PermissionError as exc:
        raise BuildConfigError(f"store: {exc}") from None


def fingerprint(checked: CheckedBuild) -> dict:
    """What makes two runs the same build (a rerun resumes it): not the worker counts."""
    cfg = checked.config
    doc = cfg.to_dict()
    return {"source": doc["source"], "n_rows": checked.n_rows,
            "rows_per_shard": cfg.shards.rows_per_shard,
            "model": cfg.model or {"sample": doc["sample"], "learn": doc["learn"],
                                   "index": {**doc["index"], "nlist": checked.nlist,
                                             "nedge": checked.nedge},
                                   "encoder": doc["encoder"]}}


# -- train -------------------------------------------------------------------------
def train_model(checked: CheckedBuild) -> dict:
    """Sample (or read the learn set), train encoder + codebooks, write the model version."""
    cfg = checked.config
    t0 = time.perf_counter()
    if cfg.learn is not None:
        x = _open(cfg.learn, "learn").read()
        sample = {"uri": cfg.learn.uri, "rows": int(x.shape[0])}
    else:
        spec = cfg.sample or SampleConfig()
        rows, x = sample_vectors(_open(cfg.source, "source"), spec.size, spec.seed)
        sample = {"uri": cfg.source.uri, "rows": int(rows.size), "seed": spec.seed,
                  "of_rows": checked.n_rows}
    read_s = time.perf_counter() - t0
    device = "cuda" if cfg.workers.train_gpus > 0 else cfg.encoder.device
    trained = train_model_version(
        x, checked.shape, dataclasses.replace(cfg.encoder, device=device), Store(cfg.store),
        sample, extra_meta={"build": {"name": cfg.name, "index": dataclasses.asdict(cfg.index)}})
    return {**trained, "sample_read_s": read_s}


@ray.remote(max_restarts=1, max_task_retries=1)
class ModelTrainer:
    def train(self, checked: CheckedBuild) -> dict:
        logging.basicConfig(level=logging.INFO)
        return train_model(checked)


# -- the pipeline ----------------------------------------------------------------------
def run_build(checked: CheckedBuild) -> dict:
    """Claim, train, encode, publish what check_build established; refuses first when
    the trainer or the encode workers do not fit in the memory Ray reports free. Needs
    a connected Ray (ray.init); `build()` is the whole job."""
    t0 = time.perf_counter()
    cfg = checked.config
    needs, free = memory_needs(checked), available_memory()
    log.info("memory estimate: %s; Ray reports %s free", ", ".join(
        f"{n.part} {n.bytes / 1e9:.1f} GB" for n in needs),
        "no memory" if free is None else f"{free / 1e9:.1f} GB")
    refuse_unless_fits(needs, free)
    root = Store(cfg.store).index(cfg.name)
    claim = claim_build(root, fingerprint(checked))
    log.info("%s build of %s/%s: %d rows, d=%d, nlist=%d, %s", "resuming" if claim.resumed
             else "starting", cfg.name, claim.version, checked.n_rows, checked.dim,
             checked.nlist, f"model {cfg.model}" if cfg.model else "training a model")
    trained = {}
    model_version = cfg.model or claim.record.get("model_version")
    if model_version is None:
        trainer = ModelTrainer.options(num_cpus=cfg.workers.cpus_per_worker,
                                       num_gpus=cfg.workers.train_gpus).remote()
        trained = ray.get(trainer.train.remote(checked))
        ray.kill(trainer)
        model_version = trained["model_version"]
        claim = record_build(root, claim, model_version=model_version)
    t1 = time.perf_counter()
    source = dataclasses.asdict(cfg.source)
    rows = encode_partitions(root=root, version=claim.version,
                             model_version=model_version, source=source, n_rows=checked.n_rows,
                             rows_per_shard=cfg.shards.rows_per_shard,
                             workers=cfg.workers.encode,
                             cpus_per_worker=cfg.workers.cpus_per_worker,
                             gpus_per_worker=cfg.workers.gpus_per_worker)
    t2 = time.perf_counter()
    entries = [ShardEntry(path=str(r["path"]), rows=int(r["rows"]), bytes=int(r["bytes"]),
                          sha256=str(r["sha256"])) for r in rows]
    shape = model_shape(read_model_meta(root.store, model_version))   # meta.json only
    manifest = publish_parts(root, claim.version, model_version, shape, entries,
                             {**source, "rows": checked.n_rows,
                              "rows_per_shard": cfg.shards.rows_per_shard})
    written = [r for r in rows if not r["skipped"]]
    summary = {
        "name": cfg.name, "version": manifest.version, "model_version": model_version,
        "store": cfg.store, "ntotal": manifest.ntotal, "shards": len(entries),
        "shards_written": len(written), "shards_skipped": len(rows) - len(written),
        "resumed": claim.resumed, "workers": cfg.workers.encode, "nlist": checked.nlist,
        "train_s": trained.get("train_s"), "encode_s": t2 - t1,
        "encode_vectors_per_s": sum(int(r["rows"]) for r in written) / max(t2 - t1, 1e-9),
        "encode_worker_s": sum(float(r["seconds"]) for r in written),
        "peak_worker_rss_mb": max(float(r["peak_rss_mb"]) for r in rows),
        "encode_actors": len({str(r["worker"]) for r in rows}),
        "total_s": time.perf_counter() - t0,
    }
    return summary


def memory_needs(checked: CheckedBuild) -> list[MemoryNeed]:
    """The estimated peak memory of the trainer (when the build trains) and the encoders."""
    return build_memory(checked.shape, train_rows=0 if checked.config.model else checked.n_train,
                        rows_per_shard=min(checked.config.shards.rows_per_shard, checked.n_rows),
                        workers=checked.config.workers.encode, read_chunk_rows=READ_CHUNK_ROWS)


def build(cfg: BuildConfig, address: str | None = None, **ray_options) -> dict:
    """The build job (`python -m cluster.build`, `snapline build`, the demo): check the
    config once, join Ray at `address` (default: the job's cluster under `ray job submit`,
    RAY_ADDRESS, else a new local Ray; `ray_options` go to ray.init), run, leave Ray.
    Returns the summary."""
    checked = check_build(cfg)  # fail fast, before Ray starts
    ray.init(address=address, ignore_reinit_error=True, **ray_options)
    try:
        return run_build(checked)
    finally:
        ray.shutdown()


def summary_line(s: dict) -> str:
    return (f"snapline build: published {s['name']}/{s['version']} (model {s['model_version']}): "
            f"{s['ntotal']} vectors in {s['shards']} shards ({s['shards_written']} written, "
            f"{s['shards_skipped']} already there) by {s['workers']} workers in "
            f"{s['encode_s']:.1f} s = {s['encode_vectors_per_s']:.0f} vectors/s; peak worker RSS "
            f"{s['peak_worker_rss_mb']:.0f} MB; total {s['total_s']:.1f} s")


def print_summary(summary: dict, summary_json: str | None = None,
                  line: str | None = None) -> None:
    """A job's output: the summary as JSON, its one-line form (default: the build's), and
    the JSON file."""
    print(json.dumps(summary, indent=1, default=str))
    print(summary_line(summary) if line is None else line)
    if summary_json:
        with open(summary_json, "w") as f:
            json.dump(summary, f, indent=1, default=str)


def main(argv: list[str] | None = None) -> int:
    """`python -m cluster.build --config F [--address A] [--summary-json F]`: the entry
    `ray job submit` runs; exit status and error line as `snapline build` (cluster.exit_status)."""
    try:
        args = add_build_arguments(OneLineArgumentParser(
            prog="python -m cluster.build", description="build and publish an index from a "
            "build.yaml")).parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def run() -> int:
        print_summary(build(load_build_config(args.config), args.address), args.summary_json)
        return 0

    return run_guarded("python -m cluster.build", run)

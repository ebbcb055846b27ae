"""The build config (build.yaml): typed sections, validated before any work starts.

    name: sift-demo
    store: /tmp/snapline-store            # or s3://bucket/prefix
    source: {uri: data/base.u8bin}        # format from the extension, or `format:`
    sample: {size: 100000, seed: 0}       # or learn: {uri: ...}; or model: m-... (reuse)
    index: {nlist: 1024, nedge: 32, code_bytes: 16, nlambda: 256, pq_bits: 8}  # nlist: auto
                                          # metric: l2 (default), ip or cosine
    encoder: {kind: none}                 # or opq / gsl with its training options
    shards: {rows_per_shard: 100000}
    workers: {encode: 2, gpus_per_worker: 0, train_gpus: 0}

Every error names the key (`shards.rows_per_shard: must be > 0, got 0`). Numbers must be
finite (`.nan`, `.inf` are refused). A given `index.nedge` must be below a given
`index.nlist`; an omitted nedge is 32 capped at nlist - 1, and with `nlist: auto` any nedge
is capped at nlist - 1, as nlist is only known once the source's size is
(cluster.build.pipeline.check_build).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from shards.manifest import check_name
from shards.shape import METRICS
from trainers.train_encoder import EncoderConfig


DEFAULT_NEDGE = 32


class BuildConfigError(ValueError):
    """A build config that cannot work; the message names the key."""


@dataclass(frozen=True)
class SourceConfig:
    uri: str
    format: str | None = None
    column: str | None = None


@dataclass(frozen=True)
class SampleConfig:
    size: int = 100_000
    seed: int = 0


@dataclass(frozen=True)
class IndexConfig:
    nlist: int | None = None       # None ("auto"): about 4 sqrt(n), >= 39 samples per list
    nedge: int | None = None       # None: DEFAULT_NEDGE, capped at nlist - 1
    code_bytes: int = 16
    nlambda: int = 256
    pq_bits: int = 8               # 8: scalar lookup scan; 4: SIMD fast scan + exact re-rank
    metric: str | None = None      # l2, ip or cosine; None: l2, or a reused model's metric


@dataclass(frozen=True)
class ShardsConfig:
    rows_per_shard: int = 1_000_000


@dataclass(frozen=True)
class WorkersConfig:
    encode: int = 2                # encoder actors (Ray Data actor pool size)
    gpus_per_worker: float = 0.0   # GPUs each encoder actor requests
    train_gpus: float = 0.0        # GPUs the trainer actor requests (then trains on cuda)
    cpus_per_worker: float = 1.0


@dataclass(frozen=True)
class BuildConfig:
    name: str
    store: str
    source: SourceConfig
    sample: SampleConfig | None = None
    learn: SourceConfig | None = None
    model: str | None = None       # an existing model version: no training
    index: IndexConfig = field(default_factory=IndexConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    shards: ShardsConfig = field(default_factory=ShardsConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)

    def __post_init__(self):
        _check_values(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {"source": SourceConfig, "learn": SourceConfig, "sample": SampleConfig,
             "index": IndexConfig, "shards": ShardsConfig, "workers": WorkersConfig,
             "encoder": EncoderConfig}


def load_build_config(path: str | Path) -> BuildConfig:
    """Read and validate a build.yaml."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise BuildConfigError(f"{path}: no such build config") from None
    except IsADirectoryError:
        raise BuildConfigError(f"{path}: is a folder, not a build config (a build.yaml)") from None
    except OSError as exc:     # unreadable: permissions, a device, ...
        raise BuildConfigError(f"{path}: cannot read the build config "
                               f"({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError as exc:
        raise BuildConfigError(f"{path}: not a text (UTF-8) build config ({exc.reason} at "
                               f"byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise BuildConfigError(f"{path}: not valid YAML ({exc})") from None
    return build_config_from_dict(doc, where=str(path))


def build_config_from_dict(doc: object, where: str = "build config") -> BuildConfig:
    if not isinstance(doc, dict):
        raise BuildConfigError(f"{where}: expected a mapping of sections, got {type(doc).__name__}")
    known = {f.name for f in dataclasses.fields(BuildConfig)}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise BuildConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    for key in ("name", "store", "source"):
        if doc.get(key) in (None, ""):
            raise BuildConfigError(f"{where}: {key}: required")
    for key in ("name", "store", "model"):
        if key in doc and doc[key] is not None and not isinstance(doc[key], str):
            raise BuildConfigError(f"{where}: {key}: expected a string, got {doc[key]!r}")
    try:
        check_name(doc["name"], "name")
        if doc.get("model"):
            check_name(doc["model"], "model")
    except ValueError as exc:
        raise BuildConfigError(f"{where}: {exc}") from None
    sections = {}
    for key, cls in _SECTIONS.items():
        if doc.get(key) is not None:
            value = doc[key]
            if key == "index" and isinstance(value, dict) and value.get("nlist") == "auto":
                value = {**value, "nlist": None}
            sections[key] = _section(cls, value, f"{where}: {key}")
    try:
        return BuildConfig(name=doc["name"], store=doc["store"], model=doc.get("model"),
                           **sections)
    except BuildConfigError as exc:
        raise BuildConfigError(f"{where}: {exc}") from None


def _section(cls, value: object, where: str):
    if isinstance(value, str) and cls is SourceConfig:
        value = {"uri": value}
    if not isinstance(value, dict):
        raise BuildConfigError(f"{where}: expected a mapping, got {value!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, item in value.items():
        if key not in fields:
            raise BuildConfigError(f"{where}.{key}: unknown key (known: {', '.join(fields)})")
        _check_type(item, fields[key], f"{where}.{key}")
    if cls is SourceConfig and not value.get("uri"):
        raise BuildConfigError(f"{where}.uri: required")
    try:
        return cls(**value)
    except (TypeError, ValueError) as exc:  # EncoderConfig validates its own values
        raise BuildConfigError(f"{where}: {exc}") from None


def _check_type(value: object, f: dataclasses.Field, where: str) -> None:
    annotation = str(f.type)
    if value is None:
        if "None" not in annotation:
            raise BuildConfigError(f"{where}: must not be empty")
        return
    if annotation.startswith("int") and (isinstance(value, bool) or not isinstance(value, int)):
        raise BuildConfigError(f"{where}: expected an integer, got {value!r}")
    if annotation.startswith("float") and (isinstance(value, bool)
                                           or not isinstance(value, (int, float))):
        raise BuildConfigError(f"{where}: expected a number, got {value!r}")
    if annotation.startswith("float") and not math.isfinite(value):
        raise BuildConfigError(f"{where}: must be a finite number, got {value!r}")
    if annotation.startswith("str") and not isinstance(value, str):
        raise BuildConfigError(f"{where}: expected a string, got {value!r}")


def _check_values(cfg: BuildConfig) -> None:
    """Values that cannot work, naming the key (BuildConfig.__post_init__ runs this)."""
    for section in ("source", "learn", "sample", "index", "encoder", "shards", "workers"):
        value = getattr(cfg, section)
        for f in dataclasses.fields(value) if dataclasses.is_dataclass(value) else ():
            item = getattr(value, f.name)
            if isinstance(item, float) and not math.isfinite(item):
                raise BuildConfigError(f"{section}.{f.name}: must be a finite number, "
                                       f"got {item!r}")
    def positive(value, key):
        if value is not None and value <= 0:
            raise BuildConfigError(f"{key}: must be > 0, got {value}")

    positive(cfg.shards.rows_per_shard, "shards.rows_per_shard")
    positive(cfg.workers.encode, "workers.encode")
    positive(cfg.workers.cpus_per_worker, "workers.cpus_per_worker")
    for key in ("gpus_per_worker", "train_gpus"):
        if getattr(cfg.workers, key) < 0:
            raise BuildConfigError(f"workers.{key}: must be >= 0, "
                                   f"got {getattr(cfg.workers, key)}")
    positive(cfg.index.nlist, "index.nlist")
    if cfg.index.nlist is not None and cfg.index.nlist < 2:
        raise BuildConfigError(f"index.nlist: must be >= 2, got {cfg.index.nlist}")
    positive(cfg.index.nedge, "index.nedge")
    if None not in (cfg.index.nlist, cfg.index.nedge) and cfg.index.nedge >= cfg.index.nlist:
        raise BuildConfigError(f"index.nedge: must be < index.nlist (edges go to other "
                               f"centroids), got nedge={cfg.index.nedge} with "
                               f"nlist={cfg.index.nlist}")
    positive(cfg.index.code_bytes, "index.code_bytes")
    if cfg.index.pq_bits not in (4, 8):
        raise BuildConfigError(f"index.pq_bits: must be 4 or 8, got {cfg.index.pq_bits!r}")
    if cfg.index.metric is not None and cfg.index.metric not in METRICS:
        raise BuildConfigError(f"index.metric: must be one of {', '.join(METRICS)}, got "
                               f"{cfg.index.metric!r}")
    if not 0 < cfg.index.nlambda <= 256:
        raise BuildConfigError(f"index.nlambda: must lie in [1, 256], got {cfg.index.nlambda}")
    if cfg.sample is not None:
        positive(cfg.sample.size, "sample.size")
    given = [key for key in ("sample", "learn", "model") if getattr(cfg, key) is not None]
    if len(given) > 1:
        raise BuildConfigError(f"give one of sample, learn or model, not "
                               f"{' and '.join(given)}")

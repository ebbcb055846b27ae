"""Model versions: a trained model's arrays and metadata as a bundle (SPEC 4).

    <store>/models/<model_version>/   one .npy.zst per array + meta.json

A model version is the hash of its arrays (`model_version_of`), so the same trained
model always has one name and a bundle is never overwritten with other content. The
metadata holds the index shape (`{"shape": IndexShape.to_dict(), ...}`), the encoder's
description and whatever the trainer adds (config, sample, metrics, creation time).
"""
from __future__ import annotations

import hashlib

import numpy as np

from shards.artifacts import read_array_bundle_at, read_bundle_meta, write_array_bundle_at
from shards.fsio import Location
from shards.shape import IndexShape
from shards.store import Store

MODEL_KIND = "snapline-vlq-model"
# the arrays a VLQ model holds (besides its encoder's, "encoder.*")
MODEL_ARRAYS = ("centroids", "edges", "edge_len2", "lambda_values", "pq_codebook")
_SHAPE_KEYS = ("dim", "nlist", "nedge", "code_bytes", "nlambda")


def model_version_of(arrays: dict[str, np.ndarray], metric: str = "l2") -> str:
    """Content-addressed model version: the same trained model always has one name. A
    metric other than l2 is hashed too: l2 and ip train the same arrays from the same
    sample, and must not share a version (l2 versions are as before the metric)."""
    h = hashlib.sha256(b"" if metric == "l2" else f"metric:{metric};".encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return "m-" + h.hexdigest()[:16]


def model_shape(meta: dict, where: str = "model metadata") -> IndexShape:
    """The index shape a model's metadata records; ValueError naming `where` and the key."""
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: model metadata must be a mapping, got {type(meta).__name__}")
    doc = meta.get("shape")
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: model metadata lacks its 'shape' mapping (got "
                         f"{type(doc).__name__})")
    missing = [key for key in _SHAPE_KEYS if key not in doc]
    if missing:
        raise ValueError(f"{where}: model metadata 'shape' lacks {missing}")
    return IndexShape.from_dict(doc, where)


def check_model(meta: dict, arrays: dict[str, np.ndarray], where: str,
                in_files: bool = False) -> IndexShape:
    """What a model must hold to be searched safely: its shape in the metadata, each VLQ
    array with the dtype and shape that shape needs, edge ids in [0, nlist), squared edge
    lengths >= 0, no NaN or inf in any float array and no centroid or codeword whose
    squared norm overflows float32. ValueError naming `where` and the
    array (its file `<where>/<name>.npy.zst` when `in_files`). Returns the shape."""
    shape = model_shape(meta, where)

    def at(name: str) -> str:
        return f"{where}/{name}.npy.zst" if in_files else f"{where}: array {name!r}"

    encoder = meta.get("encoder")
    if encoder is not None and not (isinstance(encoder, dict)
                                    and isinstance(encoder.get("kind"), str)):
        raise ValueError(f"{where}: model metadata 'encoder' must be a mapping with a 'kind', "
                         f"got {encoder!r}")
    missing = [name for name in MODEL_ARRAYS if name not in arrays]
    if missing:
        raise ValueError(f"{where}: the model lacks the arrays {missing}")
    dims = {"centroids": (shape.nlist, shape.code_dim), "edges": (shape.nlist, shape.nedge),
            "edge_len2": (shape.nlist, shape.nedge), "lambda_values": (shape.nlambda,),
            "pq_codebook": (shape.pq_m, 1 << shape.pq_bits, shape.code_dim // shape.pq_m)}
    for name, want in dims.items():
        a = arrays[name]
        kind = "integer" if name == "edges" else "float"
        if (not isinstance(a, np.ndarray) or a.shape != want
                or a.dtype.kind not in ("iu" if kind == "integer" else "f")):
            raise ValueError(f"{at(name)}: holds {getattr(a, 'dtype', type(a).__name__)} "
                             f"{getattr(a, 'shape', '')}; the model's shape ({shape}) needs "
                             f"{kind} {want}")
    for name, a in arrays.items():
        if isinstance(a, np.ndarray) and a.dtype.kind in "fc" and not np.isfinite(a).all():
            bad = int(np.count_nonzero(~np.isfinite(a)))
            raise ValueError(f"{at(name)}: holds NaN or inf ({bad} of {a.size} values); a "
                             f"model's arrays must be finite")
    for name in ("centroids", "pq_codebook"):   # vectors: their squared norms, as a query's
        rows = np.asarray(arrays[name], dtype=np.float32).reshape(-1, arrays[name].shape[-1])
        with np.errstate(over="ignore"):
            if not np.isfinite(np.einsum("nd,nd->n", rows, rows)).all():
                raise ValueError(f"{at(name)}: a vector's squared norm overflows float32 (values "
                                 f"up to {float(np.abs(rows).max()):.3g}); distances would be inf")
    edges = arrays["edges"]
    if edges.size and (edges.min() < 0 or edges.max() >= shape.nlist):
        raise ValueError(f"{at('edges')}: edge ids must lie in [0, {shape.nlist}), got "
                         f"[{edges.min()}, {edges.max()}]")
    if (arrays["edge_len2"] < 0).any():
        raise ValueError(f"{at('edge_len2')}: squared edge lengths must be >= 0")
    return shape


def write_model(loc: Location, meta: dict, arrays: dict[str, np.ndarray]) -> str:
    """Write a model bundle at loc unless an identical one is there; returns its version."""
    version = model_version_of(arrays, check_model(meta, arrays, f"{loc.uri}: model to write").metric)
    if loc.exists("meta.json"):
        existing, _ = read_array_bundle_at(loc)
        if existing.get("model_version") == version:
            return version
    write_array_bundle_at(loc, {**meta, "kind": MODEL_KIND, "model_version": version}, arrays)
    return version


def read_model(loc: Location, expected_version: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a model bundle: kind, version, every checksum, the array hash, and
    what `check_model` asks of its metadata and arrays."""
    meta, arrays = read_array_bundle_at(loc)
    _check_kind(meta, loc)
    if meta.get("model_version") != expected_version:
        raise ValueError(f"{loc.uri}: holds model version {meta.get('model_version')!r}, "
                         f"the index manifest needs {expected_version!r}")
    if model_version_of(arrays, model_shape(meta, loc.uri).metric) != expected_version:
        raise ValueError(f"{loc.uri}: model arrays do not hash to their version "
                         f"{expected_version!r}")
    check_model(meta, arrays, loc.uri, in_files=True)
    return meta, arrays


def save_model(store: Store | str, meta: dict, arrays: dict[str, np.ndarray]) -> str:
    """Write a model version into `<store>/models/<version>/`; returns the version."""
    version = model_version_of(arrays, model_shape(meta).metric)
    return write_model(Store.of(store).model_location(version), meta, arrays)


def load_model(store: Store | str, version: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify `<store>/models/<version>/`."""
    return read_model(Store.of(store).model_location(version), version)


def read_model_meta(store: Store | str, version: str) -> dict:
    """The metadata of a model version (kind checked) without reading its arrays: cheap,
    for listing models or learning a model's shape; `load_model` verifies the arrays."""
    loc = Store.of(store).model_location(version)
    meta = read_bundle_meta(loc)
    _check_kind(meta, loc)
    return meta


def _check_kind(meta: dict, loc: Location) -> None:
    if meta.get("kind") != MODEL_KIND:
        raise ValueError(f"{loc.uri}: not a snapline model (kind {meta.get('kind')!r})")

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


def model_version_of(arrays: dict[str, np.ndarray]) -> str:
    """Content-addressed model version: the same trained model always has one name."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return "m-" + h.hexdigest()[:16]


def model_shape(meta: dict, where: str = "model metadata") -> IndexShape:
    """The index shape a model's metadata records."""
    return IndexShape.from_dict(meta.get("shape"), where)


def write_model(loc: Location, meta: dict, arrays: dict[str, np.ndarray]) -> str:
    """Write a model bundle at loc unless an identical one is there; returns its version."""
    version = model_version_of(arrays)
    model_shape(meta, f"{loc.uri}: model to write")
    if loc.exists("meta.json"):
        existing, _ = read_array_bundle_at(loc)
        if existing.get("model_version") == version:
            return version
    write_array_bundle_at(loc, {**meta, "kind": MODEL_KIND, "model_version": version}, arrays)
    return version


def read_model(loc: Location, expected_version: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a model bundle: kind, version, every checksum, the array hash."""
    meta, arrays = read_array_bundle_at(loc)
    _check_kind(meta, loc)
    if meta.get("model_version") != expected_version:
        raise ValueError(f"{loc.uri}: holds model version {meta.get('model_version')!r}, "
                         f"the index manifest needs {expected_version!r}")
    if model_version_of(arrays) != expected_version:
        raise ValueError(f"{loc.uri}: model arrays do not hash to their version "
                         f"{expected_version!r}")
    return meta, arrays


def save_model(store: Store | str, meta: dict, arrays: dict[str, np.ndarray]) -> str:
    """Write a model version into `<store>/models/<version>/`; returns the version."""
    return write_model(Store.of(store).model_location(model_version_of(arrays)), meta, arrays)


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

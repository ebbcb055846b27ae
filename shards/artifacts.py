"""Array bundles: numpy arrays + JSON metadata on any fsspec URI, without pickle.

A bundle is a folder: one zstandard-compressed .npy file per array and `meta.json`
holding the caller's metadata, each array's dtype and shape and the sha256 of each
file. Reading verifies every checksum and refuses object (pickle-bearing) arrays.
"""
from __future__ import annotations

import hashlib
import io
import json
import posixpath
from typing import Any

import fsspec
import numpy as np
import zstandard

BUNDLE_FORMAT = "snapline-array-bundle"
BUNDLE_FORMAT_VERSION = 1
META_FILE = "meta.json"


def _fs(uri: str, storage_options: dict | None):
    fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    return fs, root.rstrip("/")


def write_array_bundle(uri: str, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                       storage_options: dict | None = None) -> None:
    """Write `arrays` and `meta` under `uri`; meta.json is written last."""
    fs, root = _fs(uri, storage_options)
    fs.makedirs(root, exist_ok=True)
    files = {}
    compressor = zstandard.ZstdCompressor(level=3)
    for name, arr in arrays.items():
        if arr.dtype.hasobject:
            raise ValueError(f"array {name!r} has an object dtype; bundles hold plain arrays only")
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
        blob = compressor.compress(buf.getvalue())
        fname = f"{name}.npy.zst"
        with fs.open(posixpath.join(root, fname), "wb") as f:
            f.write(blob)
        files[name] = {"file": fname, "sha256": hashlib.sha256(blob).hexdigest(),
                       "dtype": arr.dtype.str, "shape": list(arr.shape)}
    doc = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION,
           "meta": meta, "arrays": files}
    with fs.open(posixpath.join(root, META_FILE), "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)


def read_array_bundle(uri: str, storage_options: dict | None = None
                      ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a bundle written by write_array_bundle, verifying every checksum."""
    fs, root = _fs(uri, storage_options)
    meta_path = posixpath.join(root, META_FILE)
    if not fs.exists(meta_path):
        raise FileNotFoundError(f"{uri}: no {META_FILE}; not a snapline index or model folder")
    with fs.open(meta_path, "r") as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{meta_path}: not valid JSON ({exc})") from exc
    if doc.get("format") != BUNDLE_FORMAT or doc.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise ValueError(f"{meta_path}: unsupported format {doc.get('format')!r} version "
                         f"{doc.get('format_version')!r}; expected {BUNDLE_FORMAT!r} "
                         f"version {BUNDLE_FORMAT_VERSION}")
    arrays = {}
    decompressor = zstandard.ZstdDecompressor()
    for name, entry in doc["arrays"].items():
        fname = entry["file"]
        if posixpath.basename(fname) != fname or fname.startswith("."):
            raise ValueError(f"{meta_path}: array file name {fname!r} leaves the bundle folder")
        path = posixpath.join(root, fname)
        with fs.open(path, "rb") as f:
            blob = f.read()
        if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
            raise ValueError(f"{path}: sha256 checksum mismatch (file corrupted or replaced)")
        try:
            arr = np.load(io.BytesIO(decompressor.decompress(blob)), allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{path}: not a plain numpy array ({exc})") from exc
        if arr.dtype.str != entry["dtype"] or list(arr.shape) != entry["shape"]:
            raise ValueError(f"{path}: holds {arr.dtype.str}{list(arr.shape)}, manifest says "
                             f"{entry['dtype']}{entry['shape']}")
        arrays[name] = arr
    return doc["meta"], arrays

"""Array bundles: numpy arrays + JSON metadata in a folder, without pickle.

A bundle holds one zstandard-compressed .npy file per array and `meta.json` with the
caller's metadata, each array's dtype and shape and the sha256 of each file (written
last). Reading verifies every checksum and refuses object (pickle-bearing) arrays.
Model versions are bundles (shards.models); encoder weights go in as numpy arrays, so
loading a model never unpickles anything.
"""
from __future__ import annotations

import hashlib
import io
import json
import posixpath
from tokenize import TokenError
from typing import Any

import numpy as np
import zstandard
from numpy.lib import format as npy_format

from shards.fsio import Location

BUNDLE_FORMAT = "snapline-array-bundle"
BUNDLE_FORMAT_VERSION = 1
META_FILE = "meta.json"


def write_array_bundle_at(loc: Location, meta: dict[str, Any],
                          arrays: dict[str, np.ndarray]) -> None:
    """Write `arrays` and `meta` into the folder loc; meta.json is written last."""
    files = {}
    compressor = zstandard.ZstdCompressor(level=3)
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype.hasobject:
            raise ValueError(f"array {name!r} has an object dtype; bundles hold plain arrays only")
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
        blob = compressor.compress(buf.getvalue())
        fname = f"{name}.npy.zst"
        loc.write_bytes(fname, blob)
        files[name] = {"file": fname, "sha256": hashlib.sha256(blob).hexdigest(),
                       "dtype": arr.dtype.str, "shape": list(arr.shape)}
    doc = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION,
           "meta": meta, "arrays": files}
    loc.write_bytes(META_FILE, json.dumps(doc, indent=1, sort_keys=True).encode())


def read_array_bundle_at(loc: Location) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a bundle written by write_array_bundle_at, verifying every checksum."""
    doc = _read_bundle_doc(loc)
    meta_uri = f"{loc.uri}/{META_FILE}"
    arrays = {}
    for name, entry in doc["arrays"].items():
        fname = entry["file"]
        if posixpath.basename(fname) != fname or fname.startswith(".") or "\\" in fname:
            raise ValueError(f"{meta_uri}: array file name {fname!r} leaves the bundle folder")
        where = f"{loc.uri}/{fname}"
        blob = loc.read_bytes(fname)
        if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
            raise ValueError(f"{where}: sha256 checksum mismatch (file corrupted or replaced)")
        arr = _load_npy(blob, where)
        if arr.dtype.str != entry["dtype"] or list(arr.shape) != entry["shape"]:
            raise ValueError(f"{where}: holds {arr.dtype.str}{list(arr.shape)}, {META_FILE} "
                             f"says {entry['dtype']}{entry['shape']}")
        arrays[name] = arr
    return doc["meta"], arrays


def _load_npy(blob: bytes, where: str) -> np.ndarray:
    """One zstd-compressed .npy array; anything else (a zip such as torch.save's or
    np.savez's, a pickle, garbage) is refused naming the file, and nothing is unpickled."""
    try:
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
        if not raw.startswith(npy_format.MAGIC_PREFIX):
            kind = "a zip archive (torch.save / np.savez)" if raw[:4] == b"PK\x03\x04" else \
                "not a .npy array"
            raise ValueError(f"{kind}, starting {raw[:8]!r}")
        arr = npy_format.read_array(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, EOFError, SyntaxError, TypeError, OverflowError, TokenError,
            zstandard.ZstdError) as exc:   # numpy reads the header with ast.literal_eval
        raise ValueError(f"{where}: not a plain numpy array; pickled or corrupt data is "
                         f"refused ({exc})") from None
    if arr.dtype.hasobject:
        raise ValueError(f"{where}: object arrays are refused")
    return arr


def read_bundle_meta(loc: Location) -> dict[str, Any]:
    """The meta of a bundle (format checked), without reading or verifying its arrays."""
    return _read_bundle_doc(loc)["meta"]


def _read_bundle_doc(loc: Location) -> dict[str, Any]:
    meta_uri = f"{loc.uri}/{META_FILE}"
    if not loc.exists(META_FILE):
        raise FileNotFoundError(f"{loc.uri}: no {META_FILE}; not a snapline model or bundle")
    try:
        doc = json.loads(loc.read_bytes(META_FILE))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{meta_uri}: not valid JSON ({exc})") from None
    if (not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT
            or doc.get("format_version") != BUNDLE_FORMAT_VERSION):
        found = doc if not isinstance(doc, dict) else {"format": doc.get("format"),
                                                       "version": doc.get("format_version")}
        raise ValueError(f"{meta_uri}: unsupported format {found!r}; expected "
                         f"{BUNDLE_FORMAT!r} version {BUNDLE_FORMAT_VERSION}")
    _check_doc(doc, meta_uri)
    return doc


_ENTRY_TYPES = {"file": str, "sha256": str, "dtype": str, "shape": list}


def _check_doc(doc: dict, meta_uri: str) -> None:
    """meta a mapping, arrays a mapping of {file, sha256, dtype, shape} entries."""
    if not isinstance(doc.get("meta"), dict):
        raise ValueError(f"{meta_uri}: 'meta' must be a mapping, got {doc.get('meta')!r:.60}")
    if not isinstance(doc.get("arrays"), dict):
        raise ValueError(f"{meta_uri}: 'arrays' must be a mapping, got {doc.get('arrays')!r:.60}")
    for name, entry in doc["arrays"].items():
        bad = [key for key, kind in _ENTRY_TYPES.items()
               if not isinstance(entry, dict) or not isinstance(entry.get(key), kind)]
        if bad or not all(isinstance(n, int) and n >= 0 for n in entry["shape"]):
            raise ValueError(f"{meta_uri}: array {name!r}: entry {entry!r:.80} needs file, "
                             f"sha256, dtype (strings) and shape (a list of sizes)")

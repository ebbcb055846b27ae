"""Property-based: every reader of the project, fed random bytes, truncations, byte flips
and (for JSON files) random values in place of its fields, either loads or raises one of
the documented errors (ValueError or FileNotFoundError, subclasses included) whose message
names the file. Any other exception (KeyError, TypeError, AttributeError, struct.error,
pyarrow's own errors ...) fails the test. Seeded (derandomize) so CI is repeatable."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shards import IndexShape, Store, open_vectors, write_vectors
from shards.artifacts import read_array_bundle_at, write_array_bundle_at
from shards.fsio import Location
from shards.manifest import Manifest, ShardEntry, read_manifest
from shards.shard_file import ShardMeta, decode_shard, encode_shard

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DOCUMENTED = (ValueError, FileNotFoundError)
VECTOR_FORMATS = ("fbin", "u8bin", "i8bin", "ibin", "fvecs", "bvecs", "ivecs", "npy", "parquet")


# -- valid files, built once --------------------------------------------------------------
def _vectors(fmt: str) -> np.ndarray:
    x = np.arange(5 * 4).reshape(5, 4)
    if fmt in ("fbin", "fvecs"):
        return (x / 7).astype(np.float32)
    if fmt in ("u8bin", "bvecs"):
        return x.astype(np.uint8)
    if fmt == "i8bin":
        return (x - 10).astype(np.int8)
    if fmt == "npy":
        return (x / 3).astype(np.float64)
    return x.astype(np.int32)


def _vector_file_bytes(fmt: str) -> bytes:
    x = _vectors(fmt)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"v.{fmt}")
        if fmt == "parquet":
            table = pa.table({"emb": pa.FixedSizeListArray.from_arrays(
                pa.array(x.astype(np.float32).ravel()), 4)})
            pq.write_table(table, path, row_group_size=2)
        else:
            write_vectors(path, x)
        return Path(path).read_bytes()


def _manifest_doc() -> dict:
    shards = (ShardEntry("shards/part-00000-ab.parquet", 6, 100, "0" * 64),
              ShardEntry("shards/part-00001-cd.parquet", 4, 90, "1" * 64))
    m = Manifest(version="v000001", model_version="m-0123456789abcdef",
                 shape=IndexShape(16, 4, 2, 4, 8), ntotal=10, next_id=10, shards=shards,
                 name="idx", source={"uri": "x.fbin", "rows": 10})
    return json.loads(m.to_json())


def _bundle(tmp: str) -> Location:
    loc = Location.of(os.path.join(tmp, "bundle"))
    write_array_bundle_at(loc, {"kind": "k", "n": 1}, {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(4, dtype=np.uint8)})
    return loc


def _shard_bytes() -> bytes:
    rng = np.random.default_rng(0)
    meta = ShardMeta("m-0123456789abcdef", IndexShape(16, 4, 2, 4, 8), "x.fbin", 0, 12)
    return encode_shard(np.arange(12), np.sort(rng.integers(0, 8, 12)), rng.integers(0, 8, 12),
                        rng.integers(0, 256, (12, 4), dtype=np.uint8), meta, row_group_rows=4)


VALID = {fmt: _vector_file_bytes(fmt) for fmt in VECTOR_FORMATS}
MANIFEST = _manifest_doc()
SHARD = _shard_bytes()


# -- strategies --------------------------------------------------------------------------
def damaged(valid: bytes) -> st.SearchStrategy[bytes]:
    """A truncation, random bytes, a few flipped bytes, or trailing junk."""
    def flip(flips):
        out = bytearray(valid)
        for at, value in flips:
            out[at % len(out)] = value
        return bytes(out)

    return st.one_of(
        st.integers(0, len(valid)).map(lambda k: valid[:k]),
        st.binary(max_size=300),
        st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1,
                 max_size=6).map(flip),
        st.binary(min_size=1, max_size=40).map(lambda tail: valid + tail),
    )


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6)


def _paths(doc, prefix=()):
    yield prefix
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) \
        else ()
    for key, value in items:
        yield from _paths(value, prefix + (key,))


@st.composite
def json_damaged(draw, doc: dict) -> bytes:
    """The doc with one field (at any depth) replaced by a random JSON value or removed,
    or its bytes damaged."""
    if draw(st.booleans()):
        return draw(damaged(json.dumps(doc).encode()))
    doc = json.loads(json.dumps(doc))
    paths = [p for p in _paths(doc) if p]
    path = draw(st.sampled_from(paths))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON_VALUES)
    return json.dumps(doc, allow_nan=True).encode()


def loads_or_names(where: str, load) -> object | None:
    """load(), or None after a documented error that names `where`."""
    try:
        return load()
    except DOCUMENTED as exc:
        assert where in str(exc), f"{type(exc).__name__} does not name {where}: {exc}"
        return None


# -- the properties -------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", VECTOR_FORMATS)
def test_valid_vector_files_load(fmt, tmp_path):
    path = tmp_path / f"v.{fmt}"
    path.write_bytes(VALID[fmt])
    x = open_vectors(str(path)).read()
    np.testing.assert_allclose(x, _vectors(fmt).astype(x.dtype), rtol=1e-6)


@pytest.mark.parametrize("fmt", VECTOR_FORMATS)
def test_vector_readers_on_damaged_files(fmt):
    @FUZZ
    @given(blob=damaged(VALID[fmt]), start=st.integers(0, 6))
    def check(blob, start):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"v.{fmt}")
            Path(path).write_bytes(blob)
            reader = loads_or_names(path, lambda: open_vectors(path))
            if reader is None:
                return
            assert reader.n >= 0 and reader.d > 0
            x = loads_or_names(path, reader.read)
            if x is not None:
                assert x.shape == (reader.n, reader.d) and x.dtype == reader.dtype
            loads_or_names(path, lambda: reader.read(min(start, reader.n)))

    check()


def test_manifest_reader_on_damaged_manifests():
    @FUZZ
    @given(blob=json_damaged(MANIFEST))
    def check(blob):
        with tempfile.TemporaryDirectory() as tmp:
            loc = Location.of(tmp)
            Path(tmp, "manifest.json").write_bytes(blob)
            manifest = loads_or_names(f"{tmp}/manifest.json", lambda: read_manifest(loc))
            if manifest is not None:
                assert sum(s.rows for s in manifest.shards) == manifest.ntotal

    check()


def _rewrite_entry(loc: Location, name: str, blob: bytes) -> None:
    """Replace array `name`'s file and record its new checksum (a 'hash recomputed' forgery)."""
    doc = json.loads(Path(loc.path, "meta.json").read_bytes())
    Path(loc.path, doc["arrays"][name]["file"]).write_bytes(blob)
    doc["arrays"][name]["sha256"] = hashlib.sha256(blob).hexdigest()
    Path(loc.path, "meta.json").write_text(json.dumps(doc))


def test_bundle_reader_on_damaged_meta_json():
    with tempfile.TemporaryDirectory() as tmp:
        doc = json.loads(Path(_bundle(tmp).path, "meta.json").read_bytes())

    @FUZZ
    @given(blob=json_damaged(doc))
    def check(blob):
        with tempfile.TemporaryDirectory() as tmp:
            loc = _bundle(tmp)
            Path(loc.path, "meta.json").write_bytes(blob)
            loaded = loads_or_names(f"{loc.uri}/meta.json", lambda: read_array_bundle_at(loc))
            if loaded is not None:
                meta, arrays = loaded
                assert isinstance(meta, dict) and all(isinstance(a, np.ndarray)
                                                      for a in arrays.values())

    check()


def _npy_zst(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return zstandard.ZstdCompressor().compress(buf.getvalue())


def test_bundle_reader_on_damaged_arrays_with_recomputed_hashes():
    valid = _npy_zst(np.arange(6, dtype=np.float32).reshape(2, 3))
    raw = zstandard.ZstdDecompressor().decompress(valid)

    @FUZZ
    @given(blob=st.one_of(damaged(valid),
                          damaged(raw).map(zstandard.ZstdCompressor().compress)))
    def check(blob):
        with tempfile.TemporaryDirectory() as tmp:
            loc = _bundle(tmp)
            _rewrite_entry(loc, "a", blob)
            loaded = loads_or_names(f"{loc.uri}/a.npy.zst", lambda: read_array_bundle_at(loc))
            if loaded is not None:
                assert loaded[1]["a"].shape == (2, 3) and loaded[1]["a"].dtype == np.float32

    check()


def test_bundle_refuses_pickles_and_zips_without_unpickling(tmp_path):
    import pickle

    import torch

    loc = _bundle(str(tmp_path))
    zip_buf, pickle_buf = io.BytesIO(), io.BytesIO()
    torch.save({"a": torch.zeros(3)}, zip_buf)
    np.savez(pickle_buf, a=np.zeros(3))
    forged = {"torch.save zip": zip_buf.getvalue(), "np.savez zip": pickle_buf.getvalue(),
              "pickle": pickle.dumps(np.zeros(3)),
              "object npy": b"",                    # filled below
              }
    obj = io.BytesIO()
    np.save(obj, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    forged["object npy"] = obj.getvalue()
    for what, raw in forged.items():
        _rewrite_entry(loc, "a", zstandard.ZstdCompressor().compress(raw))
        with pytest.raises(ValueError, match=f"{loc.uri}/a.npy.zst: not a plain numpy array"):
            read_array_bundle_at(loc)


def test_current_reader_on_damaged_files():
    @FUZZ
    @given(blob=st.one_of(damaged(b"v000003\n"), st.binary(max_size=40)))
    def check(blob):
        with tempfile.TemporaryDirectory() as tmp:
            root = Store(tmp).index("idx")
            os.makedirs(root.location.path)
            Path(root.location.path, "CURRENT").write_bytes(blob)
            version = loads_or_names(f"{root.uri}/CURRENT", root.current_version)
            if version is not None:
                assert isinstance(version, str) and "/" not in version

    check()


def test_shard_decoder_on_damaged_shards():
    @FUZZ
    @given(blob=damaged(SHARD))
    def check(blob):
        where = "store/indexes/idx/v000001/shards/part-00000.parquet"
        data = loads_or_names(where, lambda: decode_shard(blob, where))
        if data is not None:
            n = data.ids.shape[0]
            assert data.codes.shape == (n, data.meta.shape.code_bytes)
            assert data.list_ids.shape == data.lambda_idx.shape == (n,)

    check()

"""Random truncations and byte flips of a manifest, CURRENT, a shard and a model's
meta.json: each either loads or raises ValueError / FileNotFoundError naming the file
(seeded, no hypothesis needed)."""
import numpy as np
import pytest

from shards import Store, load_arrays, publish
from shards.manifest import Manifest
from shards.shard_file import decode_shard

TRIES = 120


def _mutations(blob: bytes, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(TRIES):
        kind = rng.integers(3)
        if kind == 0:
            yield blob[:rng.integers(len(blob) + 1)]
        elif kind == 1:
            b = bytearray(blob)
            for pos in rng.integers(0, len(b), rng.integers(1, 4)):
                b[pos] = rng.integers(256)
            yield bytes(b)
        else:
            yield rng.bytes(int(rng.integers(0, 200)))


@pytest.fixture(scope="module")
def published(index, tmp_path_factory):
    root = Store(str(tmp_path_factory.mktemp("fuzz") / "store")).index("demo")
    manifest = publish(root, index.to_arrays(), rows_per_shard=700)
    return root, manifest


def test_manifest_bytes(published):
    root, manifest = published
    blob = manifest.to_json()
    for mutated in _mutations(blob, 1):
        try:
            Manifest.from_json(mutated, "X/manifest.json")
        except ValueError as exc:
            assert str(exc).startswith("X/manifest.json: "), exc


def test_shard_bytes(published):
    root, manifest = published
    blob = root.version_location(manifest.version).read_bytes(manifest.shards[0].path)
    for mutated in _mutations(blob, 2):
        try:
            decode_shard(mutated, "X/part.parquet")
        except ValueError as exc:
            assert str(exc).startswith("X/part.parquet: "), exc


@pytest.mark.parametrize("file", ["CURRENT", "v000001/manifest.json", "model-meta"])
def test_store_files(published, file, tmp_path):
    root, manifest = published
    loc = root.location if file != "model-meta" else root.store.model_location(
        manifest.model_version)
    name = "meta.json" if file == "model-meta" else file
    original = loc.read_bytes(name)
    try:
        for mutated in _mutations(original, 3):
            loc.write_bytes(name, mutated)
            try:
                load_arrays(root)
            except (ValueError, FileNotFoundError) as exc:
                assert f"{loc.uri}/" in str(exc) or loc.uri in str(exc), exc
    finally:
        loc.write_bytes(name, original)

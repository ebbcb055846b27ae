"""Saving over an existing copy is atomic from a reader's view (issue 12, item 7): an
interruption at any step leaves the old copy loadable, a rerun completes the new one."""
import numpy as np
import pytest

from indexer import VLQIndex
from shards.copies import save_copy

SEARCH = {"k": 10, "nprobe": 8, "nlines": 24}
STEPS = [("model",), ("shard", 0), ("shard", 2), ("manifest",), ("cleanup",)]


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def new_index(small_data):
    idx = VLQIndex(small_data["d"], nlist=16, nedge=4, code_bytes=8, nlambda=32, seed=7)
    idx.train(small_data["learn"][1::2])
    idx.add(small_data["base"][5000:6500])
    return idx


def _same(a, b, q):
    np.testing.assert_array_equal(a.search(q, **SEARCH)[1], b.search(q, **SEARCH)[1])


def _save_interrupted(uri, data, at):
    def crash(*step):
        if step == at:
            raise Interrupt(step)

    with pytest.raises(Interrupt):
        save_copy(uri, data, rows_per_shard=700, on_step=crash)


@pytest.mark.parametrize("at", STEPS, ids=lambda s: "-".join(map(str, s)))
def test_interrupted_save_over_a_copy_keeps_it_loadable(index, new_index, small_data,
                                                        tmp_path, at):
    uri = str(tmp_path / "copy")
    index.save(uri, rows_per_shard=700)
    _save_interrupted(uri, new_index.to_arrays(), at)
    expected = new_index if at == ("cleanup",) else index     # the manifest switched last
    _same(expected, VLQIndex.load(uri), small_data["query"])
    new_index.save(uri, rows_per_shard=700)                    # the rerun
    _same(new_index, VLQIndex.load(uri), small_data["query"])
    models = sorted(p.name for p in (tmp_path / "copy").iterdir() if p.name.startswith("model"))
    assert len(models) == 1                                    # the old model was removed
    shards = {p.name for p in (tmp_path / "copy" / "shards").iterdir()}
    assert len(shards) == 3                                    # 1,500 rows / 700


def test_saves_alternate_model_folders_and_stay_loadable(index, new_index, small_data,
                                                        store_uri):
    uri = f"{store_uri}/copy"
    for step, idx in enumerate([index, new_index, index]):
        save_copy(uri, idx.to_arrays(), rows_per_shard=700)
        _same(idx, VLQIndex.load(uri), small_data["query"])
    _save_interrupted(uri, new_index.to_arrays(), ("manifest",))
    _same(index, VLQIndex.load(uri), small_data["query"])

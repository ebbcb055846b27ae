"""ShardEncoder without Ray: a real tiny source, a real local store, the shard it writes."""
import numpy as np

from cluster.build.encode_workers import ShardEncoder
from indexer import VLQIndex
from shards import Store, write_vectors
from shards.shard_file import decode_shard


def test_shard_encoder_writes_the_partition_as_the_index_encodes_it(tmp_path, trained_index,
                                                                    small_data):
    store = str(tmp_path / "store")
    model = trained_index.save_model(store)
    source = tmp_path / "base.fbin"
    x = small_data["base"][:3000]
    write_vectors(str(source), x)
    encoder = ShardEncoder(root=Store(store).index("idx"), version="v000001", model_version=model,
                           source={"uri": str(source)}, node="node-a", worker="actor-1")
    out = encoder({"part": np.array([1]), "start": np.array([1000]), "stop": np.array([2500])})
    assert out["part"].tolist() == [1] and out["rows"].tolist() == [1500]
    assert out["node"].tolist() == ["node-a"] and out["worker"].tolist() == ["actor-1"]
    assert out["skipped"].tolist() == [False]
    path = tmp_path / "store" / "indexes" / "idx" / "v000001" / str(out["path"][0])
    shard = decode_shard(path.read_bytes(), str(path))
    assert shard.meta.model_version == model and (shard.meta.row_start, shard.meta.row_stop) == (
        1000, 2500)
    # the rows are ids 1000..2499, each encoded as the single-process index encodes it
    index = VLQIndex.from_model(store, model)
    list_ids, lambda_idx, codes = index.encode(x[1000:2500])
    order = np.argsort(shard.ids)
    np.testing.assert_array_equal(shard.ids[order], np.arange(1000, 2500))
    np.testing.assert_array_equal(shard.list_ids[order], list_ids)
    np.testing.assert_array_equal(shard.lambda_idx[order], lambda_idx)
    np.testing.assert_array_equal(shard.codes[order], codes)
    # a rerun finds the finished part and skips the work
    again = encoder({"part": np.array([1]), "start": np.array([1000]), "stop": np.array([2500])})
    assert again["skipped"].tolist() == [True] and again["sha256"][0] == out["sha256"][0]

"""The memory estimate of a build, a re-encode and a served index, and the refusal."""
import pytest

from cluster.estimate import (GB, PROCESS_BYTES, MemoryNeed, build_memory, encode_memory,
                              model_bytes, refuse_unless_fits, serving_memory, trainer_memory)
from shards.shape import IndexShape

SHAPE = IndexShape(dim=128, nlist=1024, nedge=32, code_bytes=16)


def test_model_bytes_count_every_array():
    # centroids + graph (int32 edges, float32 lengths) + PQ codebooks + lambda values
    assert model_bytes(SHAPE) == 1024 * 128 * 4 + 1024 * 32 * 8 + 256 * 128 * 4 + 256 * 4
    with_encoder = IndexShape(128, 1024, 32, 16, encoder="opq")
    assert model_bytes(with_encoder) - model_bytes(SHAPE) == 128 * 128 * 4


def test_trainer_holds_the_float32_sample_and_its_working_copies():
    need = trainer_memory(SHAPE, 1_000_000)
    sample = 1_000_000 * 128 * 4
    assert need.part == "trainer"
    assert need.bytes == PROCESS_BYTES + 4 * sample + model_bytes(SHAPE)
    assert trainer_memory(SHAPE, 2_000_000).bytes - need.bytes == 4 * sample


def test_encode_workers_scale_with_workers_and_partition_size():
    one = encode_memory(SHAPE, rows_per_shard=1_000_000, workers=1, read_chunk_rows=65536)
    partition = 2 * 1_000_000 * (16 + 1 + 8 + 4)
    chunk = 3 * 65536 * 128 * 4
    assert one.bytes == PROCESS_BYTES + model_bytes(SHAPE) + partition + chunk
    assert encode_memory(SHAPE, 1_000_000, 4, 65536).bytes == 4 * one.bytes
    # a partition smaller than a read chunk reads only its rows
    small = encode_memory(SHAPE, rows_per_shard=100, workers=1, read_chunk_rows=65536)
    assert small.bytes == PROCESS_BYTES + model_bytes(SHAPE) + 2 * 100 * 29 + 3 * 100 * 128 * 4


def test_a_build_with_a_model_has_no_trainer():
    parts = build_memory(SHAPE, train_rows=100_000, rows_per_shard=10_000, workers=2,
                         read_chunk_rows=65536)
    assert [p.part for p in parts] == ["trainer", "encode workers"]
    parts = build_memory(SHAPE, train_rows=0, rows_per_shard=10_000, workers=2,
                         read_chunk_rows=65536)
    assert [p.part for p in parts] == ["encode workers"]


def test_searchers_hold_their_groups_lists_per_replica():
    need = serving_memory(SHAPE, [1000, 3000], replicas=2)
    # resident (code, lambda, id at its widest, int16 term) + stored (code, lambda, id, list id)
    per_row = (16 + 1 + 8 + 2) + (16 + 1 + 8 + 4)
    assert need.bytes == 2 * (2 * (PROCESS_BYTES + model_bytes(SHAPE)) + 4000 * per_row)


def test_refusal_names_the_part_and_says_required_vs_available():
    needs = [MemoryNeed("trainer", int(2 * GB), "x"), MemoryNeed("encode workers", int(9 * GB),
                                                                   "y")]
    refuse_unless_fits(needs, 10 * GB)                       # fits
    refuse_unless_fits(needs, None)                          # not known: not refused
    with pytest.raises(ValueError, match=r"encode workers: required 9\.0 GB vs available "
                                         r"5\.0 GB"):
        refuse_unless_fits(needs, 5 * GB)
    with pytest.raises(ValueError, match=r"re-encode does not fit: trainer: required 2\.0 GB"):
        refuse_unless_fits(needs, 1 * GB, "re-encode")


def test_plan_reports_the_estimate_the_build_checks():
    """`snapline plan` and the pre-launch check share one estimate (cluster.estimate)."""
    from cluster.build.encode_workers import READ_CHUNK_ROWS
    from cluster.build.plan import PlanConfig, plan
    from cluster.estimate import encode_memory, resident_row_bytes

    cfg = PlanConfig(n=10_000_000, dim=128, code_bytes=16, nlist=1024, nedge=32,
                     sample_size=200_000, rows_per_shard=1_000_000, calibrate_rows=2000)
    result = plan(cfg)
    shape = IndexShape(128, 1024, 32, 16)
    assert result["resident_bytes_per_vector"] == resident_row_bytes(shape) == 27
    assert result["model_bytes"] == model_bytes(shape)
    assert result["trainer_memory_bytes"] == trainer_memory(shape, 200_000).bytes
    assert result["encode_worker_memory_bytes"] == encode_memory(
        shape, 1_000_000, 1, READ_CHUNK_ROWS).bytes
    with pytest.raises(ValueError, match="nedge must be < nlist"):
        plan(PlanConfig(n=1000, dim=128, nlist=16, nedge=64, calibrate_rows=100))

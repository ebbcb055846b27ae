"""The one held-out validation rule (trainers.validation) and the index shape an encoder
config trains (trainers.encoder_config.check_config)."""
import numpy as np
import pytest

from indexer import VLQIndex
from shards.shape import IndexShape
from trainers import EncoderConfig, check_config
from trainers.validation import MAX_ROWS, hold_out, split_rows, validation_recall


def test_split_rows_holds_out_a_capped_fraction_disjoint_and_in_order():
    train, val = split_rows(100, 0.05, seed=0)
    assert val.size == 5 and train.size == 95
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(100))
    assert (np.diff(train) > 0).all() and (np.diff(val) > 0).all()
    np.testing.assert_array_equal(split_rows(100, 0.05, seed=3)[1], split_rows(100, 0.05, seed=3)[1])
    assert split_rows(100_000, 0.05, seed=0)[1].size == MAX_ROWS == 1000
    assert split_rows(10, 0.05, seed=0)[1].size == 1          # at least one query
    assert split_rows(1, 0.05, seed=0)[1].size == 0           # nothing to hold out from
    with pytest.raises(ValueError, match="fraction must lie in"):
        split_rows(100, 1.0, seed=0)


def test_hold_out_ground_truth_is_each_querys_nearest_training_row(small_data):
    x = small_data["learn"][:2000]
    held = hold_out(x, 0.05, seed=1)
    assert held.train.shape == (1900, 32) and held.queries.shape == (100, 32)
    d2 = ((held.queries[:, None, :].astype(np.float64) - held.train[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(held.gt[:, 0], d2.argmin(axis=1))


def test_validation_recall_adds_the_training_rows_and_scans_at_the_default_setting(small_data):
    held = hold_out(small_data["learn"][:3000], 0.05, seed=0)
    index = VLQIndex(32, nlist=8, nedge=4, code_bytes=8, nlambda=16)
    index.train(held.train)
    result = validation_recall(index, held)
    assert index.ntotal == held.train.shape[0]
    assert result["queries"] == 150 and result["nprobe"] == 8      # min(nlist, 32)
    assert 0.0 < result["recall@1"] <= result["recall@10"] <= 1.0
    nothing = hold_out(small_data["learn"][:1], 0.05, seed=0)
    assert validation_recall(VLQIndex(32, nlist=8, nedge=4, code_bytes=8), nothing) == {}


def test_check_config_returns_the_shape_of_the_index_it_trains():
    shape = check_config(EncoderConfig(kind="opq", dim_out=16), IndexShape(32, 8, 4, 8))
    assert (shape.encoder, shape.code_dim, shape.dim, shape.nlist) == ("opq", 16, 32, 8)
    assert check_config(EncoderConfig(kind="opq", dim_out=16), shape) == shape
    with pytest.raises(ValueError, match="the index shape says encoder='gsl'"):
        check_config(EncoderConfig(kind="opq"), IndexShape(32, 8, 4, 8, encoder="gsl"))

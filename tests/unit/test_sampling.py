import numpy as np
import pytest

from shards import write_vectors, open_vectors
from shards.sampling import row_runs, sample_row_ids, sample_vectors


@pytest.mark.parametrize("n, size", [(1000, 900), (10**9, 5000), (50, 80)])
def test_sample_row_ids_distinct_sorted_in_range(n, size):
    rows = sample_row_ids(n, size, seed=3)
    assert rows.size == min(n, size)
    assert (np.diff(rows) > 0).all() and rows[0] >= 0 and rows[-1] < n
    assert np.array_equal(rows, sample_row_ids(n, size, seed=3))
    assert not np.array_equal(rows, sample_row_ids(n, size, seed=4)) or size >= n


def test_sample_covers_the_whole_source_uniformly():
    rows = sample_row_ids(1_000_000, 20_000, seed=0)
    counts = np.histogram(rows, bins=10, range=(0, 1_000_000))[0]
    assert counts.min() > 1800 and counts.max() < 2200   # 2000 expected per tenth


def test_row_runs_merge_close_rows():
    assert row_runs(np.array([1, 2, 5, 200, 201]), max_gap=10) == [(1, 6), (200, 202)]
    assert row_runs(np.array([], dtype=np.int64)) == []


def test_sample_vectors_reads_exactly_the_chosen_rows(tmp_path):
    x = np.arange(5000 * 4, dtype=np.float32).reshape(5000, 4)
    write_vectors(str(tmp_path / "x.fbin"), x)
    rows, sample = sample_vectors(open_vectors(str(tmp_path / "x.fbin")), 700, seed=1)
    assert np.array_equal(sample, x[rows])
    with pytest.raises(ValueError, match="sample size must be > 0"):
        sample_row_ids(10, 0, 0)

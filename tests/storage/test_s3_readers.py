"""Vector readers on s3:// issue range requests and never download a whole file."""
import numpy as np
import pytest
import s3fs

from shards import open_vectors, read_ground_truth, write_ground_truth, write_vectors


@pytest.fixture()
def get_object_calls(monkeypatch):
    """Record every S3 GetObject that s3fs sends (the real call still goes out)."""
    calls = []
    original = s3fs.S3FileSystem._call_s3

    async def spy(self, method, *args, **kwargs):
        if method == "get_object":
            calls.append(kwargs)
        return await original(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", spy)
    return calls


@pytest.mark.parametrize("ext", ["fbin", "u8bin", "fvecs", "bvecs", "npy"])
def test_row_range_reads_are_range_requests(s3_bucket, get_object_calls, ext):
    rng = np.random.default_rng(0)
    dtype = np.float32 if ext in ("fbin", "fvecs", "npy") else np.uint8
    x = (rng.random((40_000, 64)) * 200).astype(dtype)      # 2.5-10 MB
    uri = f"s3://{s3_bucket}/data/base.{ext}"
    write_vectors(uri, x)
    get_object_calls.clear()
    reader = open_vectors(uri)
    assert (reader.n, reader.d) == x.shape
    np.testing.assert_array_equal(reader.read(12_345, 12_400), x[12_345:12_400])
    np.testing.assert_array_equal(reader.read(39_990), x[39_990:])
    assert get_object_calls, "no GetObject was sent"
    assert all("Range" in call for call in get_object_calls)
    fetched = 0
    for call in get_object_calls:
        first, last = call["Range"].removeprefix("bytes=").split("-")
        fetched += int(last) - int(first) + 1
    assert fetched < 64 * 1024 + 65 * x.itemsize * 64, fetched   # headers + the rows asked


def test_ground_truth_and_endpoint_from_storage_options(s3_bucket, s3_endpoint, monkeypatch):
    ids = np.arange(50, dtype=np.int64).reshape(5, 10)
    dist = np.linspace(0, 1, 50, dtype=np.float32).reshape(5, 10)
    uri = f"s3://{s3_bucket}/gt.ibin"
    write_ground_truth(uri, ids, dist)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    s3fs.S3FileSystem.clear_instance_cache()
    got_ids, got_dist = read_ground_truth(uri, storage_options={"endpoint_url": s3_endpoint})
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got_dist, dist)


def test_truncated_file_on_s3_names_the_file(s3_bucket):
    uri = f"s3://{s3_bucket}/bad.fbin"
    fs = s3fs.S3FileSystem()
    header = np.array([100, 8], dtype=np.uint32).tobytes()
    fs.pipe_file(uri, header + np.zeros(99 * 8, np.float32).tobytes())
    with pytest.raises(ValueError, match="bad.fbin"):
        open_vectors(uri)

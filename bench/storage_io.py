"""Shard write/read throughput on local disk and on a local S3 endpoint (moto_server).

    .venv/bin/python bench/storage_io.py ../shared/data/sift-real-dev --code-bytes 16 \
        --out bench/out/storage-sift-16.json

Builds a VLQIndex on the data set (train on learn, add base), then times publishing it
as Parquet shards (shards/ -> store) and loading it back, for a local folder and for
s3:// on a moto_server started on a free loopback port. Reports MB/s of shard bytes,
vectors/s, and stored bytes per vector against the raw in-memory column size.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.json_records import write_json  # noqa: E402
from indexer import VLQIndex  # noqa: E402
from shards import Store, load_arrays, open_vectors, publish  # noqa: E402


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint)
    import requests
    for _ in range(300):
        try:
            requests.get(endpoint, timeout=1)
            return proc, endpoint
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError("moto_server did not start")


def measure(store: str, data, rows_per_shard: int, repeats: int) -> dict:
    write_s, read_s = [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        root = Store(store).index(f"bench{r}")
        manifest = publish(root, data, rows_per_shard=rows_per_shard)
        write_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _, loaded = load_arrays(root)
        read_s.append(time.perf_counter() - t0)
        assert loaded.ids.shape[0] == data.ids.shape[0]
    nbytes = sum(s.bytes for s in manifest.shards)
    n = manifest.ntotal
    w, rd = min(write_s), min(read_s)
    return {"store": store.split(":")[0] if "://" in store else "local", "shards": len(manifest.shards),
            "shard_mb": nbytes / 2**20, "write_s": w, "read_s": rd,
            "write_mb_s": nbytes / 2**20 / w, "read_mb_s": nbytes / 2**20 / rd,
            "write_vectors_s": n / w, "read_vectors_s": n / rd,
            "stored_bytes_per_vector": nbytes / n}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir")
    parser.add_argument("--code-bytes", type=int, default=16)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--rows-per-shard", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    files = {p.stem: str(p) for p in Path(args.data_dir).iterdir() if p.suffix.endswith("bin")}
    learn, base = open_vectors(files["learn"]), open_vectors(files["base"])
    index = VLQIndex(base.d, nlist=args.nlist, nedge=32, code_bytes=args.code_bytes)
    index.train(learn.read())
    index.add(base.read())
    data = index.to_arrays()
    m = args.code_bytes
    raw = 8 + 4 + 1 + m   # id uint64, list_id uint32, lambda uint8, code M bytes
    proc, endpoint = start_moto()
    tmp = tempfile.mkdtemp(prefix="snapline-storage-bench-")
    try:
        import s3fs
        s3fs.S3FileSystem().mkdir("snapline-bench")
        runs = [measure(os.path.join(tmp, "store"), data, args.rows_per_shard, args.repeats),
                measure("s3://snapline-bench/store", data, args.rows_per_shard, args.repeats)]
    finally:
        proc.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"dataset": Path(args.data_dir).name, "n": index.ntotal, "code_bytes": m,
              "rows_per_shard": args.rows_per_shard, "raw_bytes_per_vector": raw,
              "method": f"best of {args.repeats}: publish() then load_arrays() of the whole "
                        "index; S3 = moto_server on loopback (single process, not AWS)",
              "runs": runs}
    write_json(result, args.out)
    for run in runs:
        print(f"{run['store']:>5}: {run['shards']} shards {run['shard_mb']:.1f} MB | write "
              f"{run['write_mb_s']:.1f} MB/s {run['write_vectors_s']:.0f} vec/s | read "
              f"{run['read_mb_s']:.1f} MB/s {run['read_vectors_s']:.0f} vec/s | "
              f"{run['stored_bytes_per_vector']:.2f} B/vec stored vs {raw} raw")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory of loading an index version into one searchable index (what a searcher
does when it starts), against the bytes the index keeps resident.

    .venv/bin/python bench/load_peak.py ../shared/data/sift-real-dev --rows 10000000 \
        --work /tmp/load-peak --out bench/out/load/peak-10m.json

Trains a model on the data set's learn rows (nlist 1024, 16 code bytes), then publishes a
version of `--rows` rows in `--shards` shards whose codes are random (the load's cost does
not depend on what the codes say; random codes do not compress, the worst case on disk),
and loads it `--repeats` times, each in a fresh process: peak RSS after `load_arrays` and
after building the index (`VLQIndex.from_arrays`), the interpreter's own RSS before any
data, the resident bytes (`ntotal x bytes_per_vector`) and the seconds.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.dataset_files import find_dataset_files  # noqa: E402
from bench.json_records import write_json  # noqa: E402

LOAD = """
import json, sys, time
sys.path.insert(0, {repo!r})
from shards import load_arrays
from indexer import VLQIndex

def rss():   # this process's peak (VmHWM; ru_maxrss would carry the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e3
start_mb, t0 = rss(), time.perf_counter()
_, data = load_arrays({index!r})
arrays_mb = rss()
index = VLQIndex.from_arrays(data)
del data
print(json.dumps({{"startup_rss_mb": start_mb, "peak_after_load_arrays_mb": arrays_mb,
                  "peak_after_index_mb": rss(), "seconds": time.perf_counter() - t0,
                  "ntotal": index.ntotal, "bytes_per_vector": index.bytes_per_vector}}))
"""


def publish_random(data_dir: str, work: Path, rows: int, shards: int, seed: int) -> str:
    """A version of `rows` rows with random codes over a model trained on the learn rows."""
    from indexer import VLQIndex
    from shards import Store, open_vectors, publish

    root = Store(str(work / "store")).index(f"random-{rows}")
    if root.current_version() is not None:
        return str(work / "store" / "indexes" / f"random-{rows}")
    learn = open_vectors(str(find_dataset_files(data_dir).learn)).read()
    model = VLQIndex(learn.shape[1], nlist=1024, nedge=32, code_bytes=16)
    model.train(learn)
    rng = np.random.default_rng(seed)
    arrays = dataclasses.replace(
        model.to_arrays(), ids=np.arange(rows, dtype=np.int64),
        list_ids=np.sort(rng.integers(0, 1024, rows)).astype(np.int64),
        lambda_idx=rng.integers(0, model.nlambda, rows, dtype=np.uint8),
        codes=rng.integers(0, 256, (rows, 16), dtype=np.uint8), next_id=rows)
    publish(root, arrays, rows_per_shard=-(-rows // shards))
    return str(work / "store" / "indexes" / f"random-{rows}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/load-peak"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    t0 = time.perf_counter()
    index = publish_random(args.data_dir, args.work, args.rows, args.shards, args.seed)
    made_s = time.perf_counter() - t0
    repo = str(Path(__file__).resolve().parents[1])
    runs = [json.loads(subprocess.run([sys.executable, "-c", LOAD.format(repo=repo, index=index)],
                                      check=True, capture_output=True, text=True).stdout)
            for _ in range(args.repeats)]
    for r in runs:
        r["resident_mb"] = r["ntotal"] * r["bytes_per_vector"] / 1e6
        r["load_over_resident"] = (r["peak_after_index_mb"] - r["startup_rss_mb"]) / r["resident_mb"]
        print(f"{args.rows:,} rows in {args.shards} shards: peak RSS {r['peak_after_load_arrays_mb']:,.0f} MB "
              f"after load_arrays, {r['peak_after_index_mb']:,.0f} MB after the index "
              f"(interpreter {r['startup_rss_mb']:,.0f} MB; resident {r['resident_mb']:,.0f} MB: "
              f"{r['load_over_resident']:.1f}x above the interpreter), {r['seconds']:.1f} s")
    write_json({"rows": args.rows, "shards": args.shards, "index": index,
                "publish_s": made_s, "runs": runs}, args.out)


if __name__ == "__main__":
    main()

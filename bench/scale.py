"""100 million vectors on this machine, end to end (issue 16): a benchmark, not a test.

    .venv/bin/python bench/scale.py ../shared/data/sift-real-dev --work /tmp/snapline-scale \
        --rows 100000000 --out bench/out/scale/sift-100m.json

1. Source: `rows` SIFT-like u8bin rows made from the real set's rows (base and learn): each
   is w a + (1 - w) b for two random real rows a, b and w uniform in [0.25, 0.75], rounded,
   plus seeded integer jitter in [-J, J] per coordinate (J = --jitter, default 1), clipped
   to [0, 255]. Never a copy of a real row, and not a near-copy of another synthetic row
   (jittered copies of the same real row, as first tried, put 4 rows within jitter of
   each other per real row at 2M rows and 200 at 100M: the neighbours of a query were
   then copies of one row, which says nothing of SIFT1B). Distances between synthetic rows
   are of the order of real neighbour distances.
2. Build: `snapline build` (2 encode workers, local store, 5M rows per shard, nlist 1024,
   nedge 32, 16 code bytes, a 100k sample), as a user runs it; its summary gives the build
   throughput and the workers' peak RSS. nlist is far below the ~4 sqrt(n) = 40k that 1e8
   rows would want: the coarse assignment costs nlist x d flops per row, and at 4096 the
   build alone would take most of an hour on these 2 cores.
3. Ground truth: the exact 100 nearest of the first 100 queries by brute force over all
   rows (indexer.evaluation.exact_ground_truth, the source read in slices).
4. Serving: a local Ray (2 CPUs), 2 searchers (half the shards each), 1,000 real queries
   in one batch through the Client at 3 sweep points, k = 100; QPS (best of 3), R@1/10/100
   on the first 100 queries; peak RSS of every serving process; resident bytes per vector.
5. `snapline plan` for these rows beside the measured figures, then for SIFT1B and DEEP1B.
Each stage is skipped when its output exists in --work (the source, the published index,
the ground truth), so a rerun resumes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.dataset_files import find_dataset_files  # noqa: E402
from bench.json_records import write_json  # noqa: E402
from shards import open_vectors, read_ground_truth  # noqa: E402

BLOCK_ROWS = 1_000_000
VENV_BIN = Path(sys.executable).parent
SWEEP = ((8, 32), (16, 128), (32, 512))        # (nprobe, nlines)


def make_source(real: np.ndarray, path: Path, rows: int, jitter: int, seed: int) -> dict:
    """u8bin of `rows` mixed real rows (see the module docstring)."""
    if path.exists() and path.stat().st_size == 8 + rows * real.shape[1]:
        return {"made": False}
    t0 = time.perf_counter()
    tmp = path.with_suffix(".partial")
    with open(tmp, "wb") as f:
        f.write(np.array([rows, real.shape[1]], dtype="<u4").tobytes())
        for start in range(0, rows, BLOCK_ROWS):
            n = min(BLOCK_ROWS, rows - start)
            rng = np.random.default_rng([seed, start])
            a = real[rng.integers(0, real.shape[0], n)].astype(np.float32)
            b = real[rng.integers(0, real.shape[0], n)].astype(np.float32)
            w = rng.uniform(0.25, 0.75, size=(n, 1)).astype(np.float32)
            x = np.rint(w * a + (1 - w) * b)
            x += rng.integers(-jitter, jitter + 1, size=x.shape).astype(np.float32)
            f.write(np.clip(x, 0, 255).astype(np.uint8).tobytes())
            if start // BLOCK_ROWS % 10 == 0:
                print(f"  source: {start + n:,} / {rows:,} rows", flush=True)
    os.replace(tmp, path)
    return {"made": True, "seconds": time.perf_counter() - t0}


def build(work: Path, source: Path, rows: int, nlist: int, sample: int) -> dict:
    """`snapline build` of the source into work/store (skipped when published)."""
    summary_path = work / "build-summary.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    import yaml

    config = work / "build.yaml"
    config.write_text(yaml.safe_dump({
        "name": "sift100m", "store": str(work / "store"), "source": {"uri": str(source)},
        "sample": {"size": sample, "seed": 0},
        "index": {"nlist": nlist, "nedge": 32, "code_bytes": 16},
        "shards": {"rows_per_shard": 5_000_000}, "workers": {"encode": 2}}))
    t0 = time.perf_counter()
    subprocess.run([str(VENV_BIN / "snapline"), "build", "--config", str(config),
                    "--summary-json", str(summary_path)], check=True)
    summary = json.loads(summary_path.read_text())
    summary["wall_s_measured_here"] = time.perf_counter() - t0
    summary_path.write_text(json.dumps(summary, indent=1, default=str))
    return summary


def ground_truth(work: Path, source: Path, queries: np.ndarray, nq: int) -> np.ndarray:
    path = work / f"gt-{nq}.npy"
    if path.exists():
        return np.load(path)
    from indexer.evaluation import exact_ground_truth

    reader = open_vectors(str(source))
    rows = np.memmap(source, dtype=np.uint8, mode="r", offset=8, shape=(reader.n, reader.d))
    t0 = time.perf_counter()
    _, ids = exact_ground_truth(rows, queries[:nq].astype(np.float32), 100)
    print(f"  ground truth of {nq} queries over {reader.n:,} rows: "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    np.save(path, ids)
    return ids


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def serve_and_query(store: str, queries: np.ndarray, gt: np.ndarray, searchers: int) -> dict:
    import ray

    from cluster.client import Client
    from cluster.serving.coordinator import get_coordinator, start_service, stop_service
    from cluster.serving.types import NAMESPACE, ServeConfig
    from indexer.evaluation import evaluate

    ray.init(num_cpus=2, include_dashboard=False, namespace=NAMESPACE, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        start_service(ServeConfig(store, "sift100m", searchers=searchers, poll_s=0,
                                  timeout_s=600, load_timeout_s=3600,
                                  searcher_threads=max(1, (os.cpu_count() or 1) // searchers)))
        load_s = time.perf_counter() - t0
        client = Client.connect("sift100m")
        infos = [ray.get(s["handle"].info.remote()) for s in
                 ray.get(get_coordinator("sift100m").searchers.remote())]
        points = []
        for nprobe, nlines in SWEEP:
            params = dict(k=100, nprobe=nprobe, nlines=nlines)
            client.search(queries[:10], **params)                 # warm up
            times, ids = [], None
            for _ in range(3):
                t = time.perf_counter()
                ids = client.search(queries, **params).ids
                times.append(time.perf_counter() - t)
            recall = evaluate(ids[: gt.shape[0]], gt)
            points.append({"nprobe": nprobe, "nlines": nlines, "k": 100,
                           "qps": queries.shape[0] / min(times), "seconds": times, **recall})
            print(f"  nprobe {nprobe} nlines {nlines}: {points[-1]['qps']:,.0f} QPS, "
                  f"R@1 {recall['recall@1']:.3f} R@10 {recall['recall@10']:.3f} "
                  f"R@100 {recall['recall@100']:.3f}", flush=True)
        rss = {f"searcher {i} ({info['ntotal']:,} rows)": peak_rss_mb(info["pid"])
               for i, info in enumerate(infos)}
        rss["driver (client)"] = peak_rss_mb(os.getpid())
        stop_service("sift100m")
    finally:
        ray.shutdown()
    return {"searchers": searchers, "load_s": load_s, "points": points, "peak_rss_mb": rss,
            "bytes_per_vector": [info.get("bytes_per_vector") for info in infos],
            "ntotal": sum(info["ntotal"] for info in infos)}


def plans(rows: int, nlist: int, sample: int) -> dict:
    from cluster.build.plan import PlanConfig, plan

    return {"this_build": plan(PlanConfig(n=rows, dim=128, nlist=nlist, sample_size=sample,
                                          rows_per_shard=5_000_000, encode_workers=2)),
            "sift1b": plan(PlanConfig(n=1_000_000_000, dim=128)),
            "deep1b": plan(PlanConfig(n=1_000_000_000, dim=96))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--work", type=Path, required=True, help="source, store, ground truth")
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--jitter", type=int, default=1)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--sample", type=int, default=100_000)
    parser.add_argument("--searchers", type=int, default=2)
    parser.add_argument("--gt-queries", type=int, default=100)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    files = find_dataset_files(args.data_dir)
    real = np.concatenate([open_vectors(str(files.base)).read(),
                           open_vectors(str(files.learn)).read()])
    queries = open_vectors(str(files.query)).read()
    source = args.work / "source.u8bin"
    record = {"data": Path(args.data_dir).name, "rows": args.rows, "jitter": args.jitter,
              "nlist": args.nlist, "nedge": 32, "code_bytes": 16, "sample": args.sample,
              "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "nq": int(queries.shape[0]), "gt_queries": args.gt_queries}
    print("1. source", flush=True)
    record["source"] = make_source(real, source, args.rows, args.jitter, seed=16)
    print("2. build", flush=True)
    record["build"] = build(args.work, source, args.rows, args.nlist, args.sample)
    print("3. ground truth", flush=True)
    gt = ground_truth(args.work, source, queries, args.gt_queries)
    print("4. serving", flush=True)
    record["serving"] = serve_and_query(str(args.work / "store"), queries, gt, args.searchers)
    print("5. plans", flush=True)
    record["plan"] = plans(args.rows, args.nlist, args.sample)
    write_json(record, args.out)
    return record


if __name__ == "__main__":
    main()

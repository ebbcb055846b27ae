"""Encode throughput: full-precision vs Quantization-Networks 8-bit encoder (SPEC 3).

    .venv/bin/python bench/encode_throughput.py ../shared/data/sift-real-dev ../shared/data/deep-real-dev \
        --out bench/out/encode-throughput.json

For each dataset, on its learn set (float32 rows, read once): the full-precision encoder
(LinearEncoder, W = a random rotation), and the 8-bit one exported from the same W the way
GSL training exports it (weights and activations calibrated on 8192 rows), run through its
int8 path ("qn8") and its float32 emulation ("qn8-emulated", the previous deployed form).
Runs are interleaved in one process, so that load from other processes on the machine hits
all of them alike, in an order that reverses every repeat (fp qn8 emu emu qn8 fp fp ...),
because a run can be slowed by the thread pool the previous one leaves spinning (numpy's
OpenBLAS workers spin ~0.1 s after a product): qn8 follows fp and emu alike, and fp
follows qn8 as often as itself. The record
holds every timing and the median vectors/s; "blocked" repeats each encoder back to back
with itself instead (no other pool in between), for reference. Time includes activation quantization and
the output allocation.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.dataset_files import find_dataset_files  # noqa: E402
from bench.json_records import write_json  # noqa: E402
from indexer.sizing import set_threads  # noqa: E402
from shards import open_vectors  # noqa: E402
from indexer.encoders import LinearEncoder  # noqa: E402
from trainers import EncoderConfig, EncoderNet  # noqa: E402


def encoders(x: np.ndarray, seed: int) -> dict:
    d = x.shape[1]
    w = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))[0].astype(np.float32)
    net = EncoderNet(w, EncoderConfig(kind="gsl", qn_weight_bits=8, qn_activation_bits=8))
    net.layer.calibrate(torch.from_numpy(x[:8192]))
    net.layer.hard_mode(True)
    qn8 = net.export({})
    if qn8.backend != "int8":
        raise RuntimeError(f"the 8-bit encoder did not get the int8 path (backend {qn8.backend})")
    return {"fp": LinearEncoder(w, kind="gsl").encode, "qn8": qn8.encode,
            "qn8-emulated": qn8.encode_emulated}


def measure(x: np.ndarray, repeats: int, seed: int) -> dict:
    runs = encoders(x, seed)
    reference = runs["qn8-emulated"](x)
    if not np.array_equal(runs["qn8"](x), reference):
        raise RuntimeError("int8 path differs from the emulated integer semantics")
    seconds = {name: [] for name in runs}
    names = list(runs)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            runs[name](x)
            seconds[name].append(time.perf_counter() - t0)
    blocked = {name: [] for name in runs}
    for name, encode in runs.items():
        for _ in range(repeats):
            t0 = time.perf_counter()
            encode(x)
            blocked[name].append(time.perf_counter() - t0)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    median_blocked = {name: statistics.median(s) for name, s in blocked.items()}
    return {"n": int(x.shape[0]), "d": int(x.shape[1]), "int8_equals_emulated": True,
            "vectors_per_s": {name: x.shape[0] / m for name, m in median.items()},
            "speedup_qn8_vs_fp": median["fp"] / median["qn8"],
            "blocked_vectors_per_s": {name: x.shape[0] / m for name, m in median_blocked.items()},
            "blocked_speedup_qn8_vs_fp": median_blocked["fp"] / median_blocked["qn8"],
            "seconds": seconds, "blocked_seconds": blocked}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dirs", nargs="+")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    record = {"repeats": args.repeats, "threads": threads, "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "datasets": {}}
    for data_dir in args.data_dirs:
        reader = open_vectors(str(find_dataset_files(data_dir).learn))
        x = np.ascontiguousarray(reader.read(0, reader.n), dtype=np.float32)
        result = measure(x, args.repeats, args.seed)
        record["datasets"][Path(data_dir).name] = result
        rates = result["vectors_per_s"]
        print(f"{Path(data_dir).name}: n={x.shape[0]} d={x.shape[1]} "
              + ", ".join(f"{k} {v / 1e6:.2f} M vectors/s" for k, v in rates.items())
              + f", qn8/fp {result['speedup_qn8_vs_fp']:.2f}x interleaved, "
              f"{result['blocked_speedup_qn8_vs_fp']:.2f}x blocked")
    write_json(record, args.out)
    return record


if __name__ == "__main__":
    main()

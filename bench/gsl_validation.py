"""One encoder training on a dataset's learn set: GSL validation R@10 by round, as JSON.

    .venv/bin/python bench/gsl_validation.py ../shared/data/sift-real-dev 1024 gsl \
        bench/out/gsl-orthogonal/sift-base.json

Arguments: data folder, VLQ nlist (the benchmark's: sift-real-dev 1024, deep-real-dev 256),
encoder spec (encoder_config_from_spec), output JSON. nedge 32, 16 code bytes, nlambda 256,
2 threads, as in the encoder ablation. The validation set is 1000 held-out learn vectors,
so R@10 differences under ~1 point (one standard error at R@10 0.85) are noise.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.dataset_files import find_dataset_files  # noqa: E402
from bench.json_records import write_json  # noqa: E402
from indexer.sizing import set_threads  # noqa: E402
from shards import open_vectors  # noqa: E402
from shards.shape import IndexShape  # noqa: E402
from trainers.train_encoder import encoder_config_from_spec, train_encoder  # noqa: E402


def main(argv: list[str]) -> dict:
    data_dir, nlist, spec, out = argv[0], int(argv[1]), argv[2], Path(argv[3])
    set_threads(2)
    reader = open_vectors(str(find_dataset_files(data_dir).learn))
    x = np.ascontiguousarray(reader.read(0, reader.n), dtype=np.float32)
    t0 = time.perf_counter()
    cfg = encoder_config_from_spec(spec)
    shape = IndexShape(x.shape[1], nlist, 32, 16, 256, encoder=cfg.kind, code_dim=cfg.dim_out)
    encoder, _, metrics = train_encoder(x, shape, cfg)
    record = {"data": data_dir, "nlist": nlist, "spec": spec, "rounds": metrics["rounds"],
              "best_round": encoder.params.get("best_round"), "train_s": time.perf_counter() - t0}
    weight = getattr(encoder, "weight", None)
    if weight is not None:
        record["orthogonality_error"] = float(np.abs(weight @ weight.T - np.eye(weight.shape[0])).max())
    write_json(record, out)
    return record


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(json.dumps(main(sys.argv[1:])))

"""Train a model version: the one path from a sample to `<store>/models/<version>/`, used by
the build's trainer actor, `snapline train --name` and `snapline train --learn`.

Held-out validation rows are set aside (trainers.validation), the encoder and the VLQ
codebooks are trained on the rest, the validation recall of the trained model is measured,
and the model is written with what it was trained on and how well it did.
"""
from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timezone

import numpy as np

from indexer import VLQIndex
from indexer.refine import normalize_rows
from indexer.validation import as_float32, check_vectors
from shards import IndexShape, Store
from trainers.encoder_config import EncoderConfig
from trainers.train_encoder import train_encoder
from trainers.validation import hold_out, validation_recall

log = logging.getLogger(__name__)


def train_model_version(x: np.ndarray, shape: IndexShape, cfg: EncoderConfig, store: Store,
                        sample: dict, extra_meta: dict | None = None) -> dict:
    """Train on the rows of `x` (what `sample` describes: uri, rows, seed ...), write the
    model version into `store`; returns its version, training time, rows, the validation
    figures and the encoder's description."""
    what = f"{sample.get('uri') or 'training sample'}: training vectors"
    x = as_float32(check_vectors(x, shape.dim, what), what)   # NaN/inf named, before faiss
    x = normalize_rows(x, what) if shape.metric == "cosine" else x
    held = hold_out(x, cfg.validation_fraction, cfg.seed, shape.metric)
    encoder, quantizer, metrics = train_encoder(held.train, shape, cfg)
    trained = lambda: VLQIndex.from_trained(encoder, quantizer, metric=shape.metric)  # noqa: E731
    validation = validation_recall(trained(), held)
    version = trained().save_model(store, extra_meta={
        "training": {"sample": sample, "validation": validation,
                     "train_rows": int(held.train.shape[0]), **metrics},
        "created": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        **(extra_meta or {})})
    log.info("trained model %s on %d rows in %.1f s; validation R@10 %s", version,
             held.train.shape[0], metrics["train_s"],
             f"{validation['recall@10']:.3f}" if validation else "- (no held-out rows)")
    return {"model_version": version, "train_s": metrics["train_s"],
            "train_rows": int(held.train.shape[0]), "validation": validation,
            "encoder": encoder.describe(), "rounds": metrics.get("rounds"),
            "config": dataclasses.asdict(cfg)}

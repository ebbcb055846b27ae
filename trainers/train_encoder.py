"""Training entry point for the encoder (SPEC 3): identity, OPQ, or GSL-trained linear map.

    encoder, quantizer, metrics = train_encoder(x, IndexShape(...), EncoderConfig(...))
    index = VLQIndex.from_trained(encoder, quantizer)

`kind="none"` is the identity, `"opq"` the faiss OPQ rotation, `"gsl"` a linear map
trained from the OPQ rotation (trainers.gsl_training); the VLQ codebooks are then
trained on the encoder's output of the whole sample.
"""
from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np

from indexer import VLQQuantizer
from indexer.encoders import IdentityEncoder, train_opq
from indexer.refine import normalize_rows
from shards.shape import IndexShape
from trainers.encoder_config import EncoderConfig, EncoderKind, check_config, encoder_config_from_spec
from trainers.gsl_training import train_gsl

__all__ = ["EncoderConfig", "EncoderKind", "check_config", "encoder_config_from_spec",
           "train_encoder"]


def train_encoder(x: np.ndarray, shape: IndexShape, cfg: EncoderConfig):
    """Train an encoder and the VLQ quantizer on its output, for an index of `shape`
    (its encoder and code_dim come from cfg, see `check_config`). Returns (encoder,
    quantizer, metrics)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    shape = check_config(cfg, shape)
    if x.ndim != 2 or x.shape[1] != shape.dim:
        raise ValueError(f"training vectors must be (n, {shape.dim}), got shape {x.shape}")
    if shape.metric == "cosine":   # the model learns the directions the index will see
        x = normalize_rows(x, "training vectors")
    t0 = time.perf_counter()
    if cfg.kind == "none":
        encoder = IdentityEncoder(shape.dim)
    else:
        encoder = train_opq(x, shape.pq_m, shape.code_dim)
    metrics = {"config": asdict(cfg)}
    if cfg.kind == "gsl":
        encoder, history = train_gsl(x, encoder, shape, cfg)
        metrics["rounds"] = history
    quantizer = VLQQuantizer.train(encoder.encode(x), shape.nlist, shape.nedge, shape.code_bytes,
                                   shape.nlambda, seed=cfg.seed, pq_bits=shape.pq_bits)
    metrics["train_s"] = time.perf_counter() - t0
    return encoder, quantizer, metrics

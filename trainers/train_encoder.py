"""Training entry point for the encoder (SPEC 3): identity, OPQ, or GSL-trained linear map.

GSL training alternates, for `rounds` rounds:
  (a) fix f, retrain the VLQ codebooks on f(sample);
  (b) fix the codebooks, train f for `epochs` epochs with a neighbourhood-preserving loss
      (listwise KL between input-space and z-space softmax neighbour distributions over the
      exact kNN plus random negatives, plus a small distance-distortion term) through the
      Gradient Snapping Layer, whose codewords are each vector's quantized
      reconstructions through its `snap_k` nearest centroids.
The round with the best validation R@10 (held-out queries against the training part,
exact ground truth in input space) is kept; round 0 is the OPQ initialisation itself.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Literal

import faiss
import numpy as np
import torch

from trainers.encoder import IdentityEncoder, LinearEncoder, QuantizedEncoder, train_opq
from trainers.gsl import gradient_snap
from trainers.quantization import LinearTemperatureSchedule, QuantizedLinear
from trainers.smh import SMHPool

log = logging.getLogger(__name__)

EncoderKind = Literal["none", "opq", "gsl"]


@dataclass(frozen=True)
class EncoderConfig:
    kind: EncoderKind = "none"
    dim_out: int | None = None
    rounds: int = 2
    epochs: int = 2
    batch_size: int = 256
    lr: float = 1e-4
    beta: float = 0.5
    snap_k: int = 4
    knn: int = 10
    negatives: int = 20
    distortion_weight: float = 0.1
    qn_weight_bits: int | None = None        # Quantization Networks: low-bit weights ...
    qn_activation_bits: int | None = None    # ... and activations (None: full precision)
    qn_temperature_start: float = 1.0        # linear temperature schedule over training
    qn_temperature_end: float = 200.0
    smh_fraction: float | None = None        # Structured Multi-Hashing: trainable share
    validation_fraction: float = 0.1
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        if self.kind not in ("none", "opq", "gsl"):
            raise ValueError(f"kind must be 'none', 'opq' or 'gsl', got kind={self.kind!r}")
        for name in ("rounds", "epochs", "batch_size", "snap_k", "knn", "negatives"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
        if self.dim_out is not None and (not isinstance(self.dim_out, int) or self.dim_out <= 0):
            raise ValueError(f"dim_out must be a positive integer, got dim_out={self.dim_out!r}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1], got beta={self.beta}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got lr={self.lr}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must lie in (0, 1), got {self.validation_fraction}")
        if self.distortion_weight < 0:
            raise ValueError(f"distortion_weight must be >= 0, got {self.distortion_weight}")
        for name in ("qn_weight_bits", "qn_activation_bits"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 2 <= value <= 16):
                raise ValueError(f"{name} must be None or an integer in [2, 16], got {value!r}")
        if (self.qn_weight_bits is None) != (self.qn_activation_bits is None):
            raise ValueError("qn_weight_bits and qn_activation_bits must be set together "
                             f"(got {self.qn_weight_bits} and {self.qn_activation_bits})")
        if not 0 < self.qn_temperature_start <= self.qn_temperature_end:
            raise ValueError(f"need 0 < qn_temperature_start <= qn_temperature_end, got "
                             f"{self.qn_temperature_start} and {self.qn_temperature_end}")
        if self.smh_fraction is not None and not 0.0 < self.smh_fraction <= 1.0:
            raise ValueError(f"smh_fraction must lie in (0, 1], got smh_fraction={self.smh_fraction}")
        if self.kind != "gsl" and (self.qn_weight_bits or self.smh_fraction):
            raise ValueError(f"Quantization Networks and SMH train with kind='gsl', got kind={self.kind!r}")


def encoder_config_from_spec(spec: str, seed: int = 0) -> EncoderConfig:
    """'none', 'opq', 'gsl', or 'gsl' with '+qn<bits>' (weights and activations) and/or
    '+smh<fraction>' options, e.g. 'gsl+qn4', 'gsl+smh0.25'."""
    kind, *options = spec.split("+")
    fields: dict = {"kind": kind, "seed": seed}
    for option in options:
        try:
            if option.startswith("qn"):
                fields["qn_weight_bits"] = fields["qn_activation_bits"] = int(option[2:])
            elif option.startswith("smh"):
                fields["smh_fraction"] = float(option[3:])
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"encoder spec {spec!r}: unknown option {option!r}; use "
                             f"'none', 'opq', 'gsl', 'gsl+qn<bits>', 'gsl+smh<fraction>'") from None
    return EncoderConfig(**fields)


@dataclass(frozen=True)
class VLQShape:
    nlist: int
    nedge: int
    code_bytes: int
    nlambda: int = 256


def check_config(cfg: EncoderConfig, dim: int, vlq: VLQShape) -> int:
    """Refuse a config that cannot work with the index, before any training."""
    dim_out = cfg.dim_out or dim
    if dim_out > dim:
        raise ValueError(f"dim_out={dim_out} exceeds the input dimension {dim}")
    if dim_out % vlq.code_bytes:
        raise ValueError(f"code_bytes={vlq.code_bytes} must divide the encoder output "
                         f"dimension {dim_out}")
    if cfg.kind == "none" and dim_out != dim:
        raise ValueError(f"kind='none' cannot change the dimension ({dim} -> {dim_out})")
    return dim_out


def train_encoder(x: np.ndarray, vlq: VLQShape, cfg: EncoderConfig):
    """Train an encoder and the VLQ quantizer on its output. Returns (encoder, quantizer,
    metrics)."""
    from indexer.quantizer import VLQQuantizer

    x = np.ascontiguousarray(x, dtype=np.float32)
    dim_out = check_config(cfg, x.shape[1], vlq)
    t0 = time.perf_counter()
    if cfg.kind == "none":
        encoder = IdentityEncoder(x.shape[1])
    else:
        encoder = train_opq(x, vlq.code_bytes, dim_out)
    metrics = {"config": asdict(cfg)}
    if cfg.kind == "gsl":
        encoder, history = _train_gsl(x, encoder, vlq, cfg)
        metrics["rounds"] = history
    quantizer = VLQQuantizer.train(encoder.encode(x), vlq.nlist, vlq.nedge, vlq.code_bytes,
                                   vlq.nlambda, seed=cfg.seed)
    metrics["train_s"] = time.perf_counter() - t0
    return encoder, quantizer, metrics


def _split(n: int, cfg: EncoderConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(n)
    nval = min(1000, max(1, int(n * cfg.validation_fraction)))
    return order[nval:], order[:nval]


def _validation_recall(encoder, x_train, x_val, gt, vlq: VLQShape, seed: int):
    """R@10 of held-out queries with a VLQ index built on f(x_train)."""
    from indexer import VLQIndex

    index = VLQIndex(encoder.dim_out, vlq.nlist, vlq.nedge, vlq.code_bytes, vlq.nlambda, seed=seed)
    z = encoder.encode(x_train)
    index.train(z)
    index.add(z)
    nprobe = min(vlq.nlist, 16)
    nlines = min(8 * nprobe, nprobe * vlq.nedge)
    _, ids = index.search(encoder.encode(x_val), k=10, nprobe=nprobe, nlines=nlines)
    return float((ids == gt[:, :1]).any(axis=1).mean()), index.quantizer


class _EncoderNet(torch.nn.Module):
    """The trainable encoder: one (quantized) linear layer, its weight optionally a slice
    of an SMH pool."""

    def __init__(self, init: np.ndarray, cfg: EncoderConfig):
        super().__init__()
        d_out, d = init.shape
        w0 = torch.from_numpy(init.copy())
        self.pool = None
        provider = None
        if cfg.smh_fraction is not None:
            self.pool = SMHPool({"weight": (d_out, d)}, cfg.smh_fraction, init={"weight": w0},
                                seed=cfg.seed)
            provider = self.pool.provider("weight")
        self.layer = QuantizedLinear(d, d_out, weight_bits=cfg.qn_weight_bits,
                                     activation_bits=cfg.qn_activation_bits,
                                     weight=None if provider else w0, weight_provider=provider)

    @property
    def quantized(self) -> bool:
        return self.layer.weight_quantizer is not None

    def forward(self, x):
        return self.layer(x)

    def trainable_parameters(self) -> int:
        if self.pool is not None:
            return self.pool.trainable_parameters()
        return self.layer.current_weight().numel()

    @torch.no_grad()
    def export(self, params: dict):
        """The deployed encoder: integer levels when quantized, a float matrix otherwise."""
        params = {**params, "trainable_parameters": self.trainable_parameters()}
        if not self.quantized:
            # a copy: .numpy() of the CPU parameter shares its memory, so training on would
            # rewrite the weight of an exported (e.g. best-round) encoder in place
            return LinearEncoder(self.layer.current_weight().cpu().numpy().copy(), kind="gsl",
                                 params=params)
        wq, aq = self.layer.weight_quantizer, self.layer.activation_quantizer
        params.update(weight_bits=wq.bits, activation_bits=aq.bits)
        return QuantizedEncoder(wq.integer_codes(self.layer.current_weight()).cpu().numpy(),
                                wq.scale, float(aq.beta.detach()), aq.scale, aq.low, aq.high,
                                params=params)


def _train_gsl(x: np.ndarray, init: LinearEncoder, vlq: VLQShape, cfg: EncoderConfig):
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train_ids, val_ids = _split(x.shape[0], cfg)
    x_train, x_val = x[train_ids], x[val_ids]
    _, gt = faiss.knn(x_val, x_train, 1)
    _, nbr = faiss.knn(x_train, x_train, cfg.knn + 1)
    nbr = nbr[:, 1:]                                   # drop each vector itself
    device = torch.device(cfg.device)
    net = _EncoderNet(init.weight, cfg).to(device)
    xt = torch.from_numpy(x_train).to(device)
    net.layer.calibrate(xt[:8192])
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    nbatches = -(-x_train.shape[0] // cfg.batch_size)
    schedule = LinearTemperatureSchedule(cfg.qn_temperature_start, cfg.qn_temperature_end,
                                         max(1, cfg.rounds * cfg.epochs * nbatches))
    step = 0
    base_params = {"beta": cfg.beta, "snap_k": cfg.snap_k, "rounds": cfg.rounds,
                   "qn_weight_bits": cfg.qn_weight_bits, "smh_fraction": cfg.smh_fraction}
    d_knn = ((x_train[:2000, None, :] - x_train[nbr[:2000, -1]][:, None, :]) ** 2).sum(-1)
    tau = float(np.median(d_knn))                      # distance scale of the k-th neighbour
    net.layer.hard_mode(True)
    current = net.export(base_params)           # OPQ init, quantized/hashed as configured
    best_recall, quantizer = _validation_recall(current, x_train, x_val, gt, vlq, cfg.seed)
    best, history = current, [{"round": 0, "val_recall@10": best_recall, "loss": None}]
    log.info("GSL round 0 (OPQ init): validation R@10 %.4f", best_recall)
    for rnd in range(1, cfg.rounds + 1):
        losses = []
        for _ in range(cfg.epochs):
            codewords = torch.from_numpy(quantizer.reconstruction_candidates(
                current.encode(x_train), cfg.snap_k)).to(device)
            for start in range(0, x_train.shape[0], cfg.batch_size):
                anchors = np.arange(start, min(x_train.shape[0], start + cfg.batch_size))
                negatives = rng.integers(0, x_train.shape[0], (anchors.size, cfg.negatives))
                others = np.concatenate([nbr[anchors], negatives], axis=1)
                ids = torch.from_numpy(np.concatenate([anchors[:, None], others], axis=1))
                xb = xt[ids]                                          # (B, 1 + L, d)
                if net.quantized:
                    net.layer.set_temperature(schedule.value(step))
                step += 1
                z = net(xb)
                flat = gradient_snap(z.reshape(-1, z.shape[-1]),
                                     codewords[ids.reshape(-1)], cfg.beta)
                z = flat.reshape(z.shape)
                # the database side is seen quantized, as ADC sees it: value = its current
                # reconstruction, gradient = that of z (through the snapping layer)
                recon = codewords[ids[:, 1:], 0]
                z_db = z[:, 1:] + (recon - z[:, 1:]).detach()
                d_x = ((xb[:, 1:] - xb[:, :1]) ** 2).sum(-1) / tau
                d_z = ((z_db - z[:, :1]) ** 2).sum(-1) / tau
                target = torch.softmax(-d_x, dim=1)
                loss = torch.nn.functional.kl_div(torch.log_softmax(-d_z, dim=1), target,
                                                  reduction="batchmean")
                loss = loss + cfg.distortion_weight * ((d_z - d_x) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
            net.layer.hard_mode(True)
            current = net.export(base_params)
        recall, quantizer = _validation_recall(current, x_train, x_val, gt, vlq, cfg.seed)
        history.append({"round": rnd, "val_recall@10": recall, "loss": float(np.mean(losses))})
        log.info("GSL round %d: loss %.5f, validation R@10 %.4f", rnd, np.mean(losses), recall)
        if recall > best_recall:
            best, best_recall = current, recall
    best.params["best_round"] = max(history, key=lambda h: h["val_recall@10"])["round"]
    return best, history

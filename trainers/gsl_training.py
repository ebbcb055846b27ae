"""GSL training of a linear encoder (SPEC 3), started from the OPQ rotation.

For `rounds` rounds: (a) fix f, retrain the VLQ codebooks on f(sample); (b) fix the
codebooks, train f for `epochs` epochs with a neighbourhood-preserving loss (listwise KL
between input-space and z-space softmax neighbour distributions over the exact kNN plus
random negatives, plus a small distance-distortion term) through the Gradient Snapping
Layer, whose codewords are each vector's quantized reconstructions through its `snap_k`
nearest centroids. The round with the best validation R@10 (trainers.validation: held-out
sample rows, exact ground truth in input space) is kept; round 0 is the OPQ
initialisation itself.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import numpy as np
import torch

from indexer import VLQIndex
from indexer.encoders import LinearEncoder, QuantizedEncoder
from shards.shape import IndexShape
from trainers.encoder_config import EncoderConfig
from trainers.gsl import gradient_snap
from trainers.quantization import LinearTemperatureSchedule, QuantizedLinear
from trainers.smh import SMHPool
from trainers.validation import HeldOut, hold_out, validation_recall

log = logging.getLogger(__name__)

CALIBRATION_ROWS = 8192   # rows that set the activation quantizer's range
TAU_ROWS = 2000           # rows whose k-th neighbour distance sets the loss' scale


class EncoderNet(torch.nn.Module):
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


@dataclass(frozen=True, eq=False)
class _Neighbourhoods:
    """What every training step reads: the training rows (numpy and on the device), each
    row's exact nearest other rows, the anchor order and the loss' distance scale."""

    x: np.ndarray            # (n, d) float32
    xt: torch.Tensor         # the same on the training device
    neighbours: np.ndarray   # (n, knn)
    order: np.ndarray        # a seeded permutation of the rows: the anchors' order
    tau: float               # median squared distance to the knn-th neighbour

    @classmethod
    def of(cls, x: np.ndarray, knn: int, rng: np.random.Generator,
           device: torch.device) -> "_Neighbourhoods":
        _, nbr = faiss.knn(x, x, knn + 1)
        nbr = nbr[:, 1:]                                   # drop each vector itself
        order = rng.permutation(x.shape[0])
        some = order[:TAU_ROWS]
        tau = float(np.median(((x[some] - x[nbr[some, -1]]) ** 2).sum(-1)))
        return cls(x, torch.from_numpy(x).to(device), nbr, order, tau)


class _GSLTrainer:
    """The network, its optimiser and temperature schedule, and the step counter."""

    def __init__(self, x_train: np.ndarray, init: np.ndarray, cfg: EncoderConfig):
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.device = torch.device(cfg.device)
        self.data = _Neighbourhoods.of(x_train, cfg.knn, self.rng, self.device)
        self.net = EncoderNet(init, cfg).to(self.device)
        self.net.layer.calibrate(self.data.xt[self.data.order[:CALIBRATION_ROWS]])
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        nbatches = -(-x_train.shape[0] // cfg.batch_size)
        self.schedule = LinearTemperatureSchedule(cfg.qn_temperature_start,
                                                  cfg.qn_temperature_end,
                                                  max(1, cfg.rounds * cfg.epochs * nbatches))
        self.step = 0
        self.params = {"beta": cfg.beta, "snap_k": cfg.snap_k, "rounds": cfg.rounds,
                       "qn_weight_bits": cfg.qn_weight_bits, "smh_fraction": cfg.smh_fraction}

    def export(self):
        """The encoder as trained so far, quantized/hashed as configured."""
        self.net.layer.hard_mode(True)
        return self.net.export(self.params)

    def epoch(self, quantizer, current) -> list[float]:
        """One pass over the training rows, snapping toward the codewords of `quantizer`
        for the `current` encoder; the loss of every batch."""
        codewords = torch.from_numpy(quantizer.reconstruction_candidates(
            current.encode(self.data.x), self.cfg.snap_k)).to(self.device)
        losses = []
        for start in range(0, self.data.x.shape[0], self.cfg.batch_size):
            anchors = self.data.order[start:start + self.cfg.batch_size]
            if self.net.quantized:
                self.net.layer.set_temperature(self.schedule.value(self.step))
            self.step += 1
            loss = self._batch_loss(anchors, codewords)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            losses.append(float(loss.detach()))
        return losses

    def _batch_loss(self, anchors: np.ndarray, codewords: torch.Tensor) -> torch.Tensor:
        cfg, data = self.cfg, self.data
        negatives = self.rng.integers(0, data.x.shape[0], (anchors.size, cfg.negatives))
        others = np.concatenate([data.neighbours[anchors], negatives], axis=1)
        ids = torch.from_numpy(np.concatenate([anchors[:, None], others], axis=1))
        xb = data.xt[ids]                                             # (B, 1 + L, d)
        z = self.net(xb)
        flat = gradient_snap(z.reshape(-1, z.shape[-1]), codewords[ids.reshape(-1)], cfg.beta)
        z = flat.reshape(z.shape)
        # the database side is seen quantized, as ADC sees it: value = its current
        # reconstruction, gradient = that of z (through the snapping layer)
        recon = codewords[ids[:, 1:], 0]
        z_db = z[:, 1:] + (recon - z[:, 1:]).detach()
        d_x = ((xb[:, 1:] - xb[:, :1]) ** 2).sum(-1) / data.tau
        d_z = ((z_db - z[:, :1]) ** 2).sum(-1) / data.tau
        target = torch.softmax(-d_x, dim=1)
        loss = torch.nn.functional.kl_div(torch.log_softmax(-d_z, dim=1), target,
                                          reduction="batchmean")
        return loss + cfg.distortion_weight * ((d_z - d_x) ** 2).mean()


def _round_recall(encoder, held: HeldOut, shape: IndexShape, seed: int):
    """Validation R@10 of an encoder with VLQ codebooks trained on its output of the
    training rows; returns (recall, the quantizer)."""
    index = VLQIndex(shape.dim, shape.nlist, shape.nedge, shape.code_bytes, shape.nlambda,
                     pq_bits=shape.pq_bits, encoder=encoder, seed=seed)
    index.train(held.train)
    return validation_recall(index, held)["recall@10"], index.quantizer


def train_gsl(x: np.ndarray, init: LinearEncoder, shape: IndexShape, cfg: EncoderConfig):
    """GSL-train an encoder from `init` (the OPQ rotation) on float32 rows x. Returns
    (the best round's encoder, per-round history)."""
    torch.manual_seed(cfg.seed)
    held = hold_out(x, cfg.validation_fraction, cfg.seed)
    trainer = _GSLTrainer(held.train, init.weight, cfg)
    current = trainer.export()                  # OPQ init, quantized/hashed as configured
    best_recall, quantizer = _round_recall(current, held, shape, cfg.seed)
    best, history = current, [{"round": 0, "val_recall@10": best_recall, "loss": None}]
    log.info("GSL round 0 (OPQ init): validation R@10 %.4f", best_recall)
    for rnd in range(1, cfg.rounds + 1):
        losses = []
        for _ in range(cfg.epochs):
            losses += trainer.epoch(quantizer, current)
            current = trainer.export()
        recall, quantizer = _round_recall(current, held, shape, cfg.seed)
        history.append({"round": rnd, "val_recall@10": recall, "loss": float(np.mean(losses))})
        log.info("GSL round %d: loss %.5f, validation R@10 %.4f", rnd, np.mean(losses), recall)
        if recall > best_recall:
            best, best_recall = current, recall
    best.params["best_round"] = max(history, key=lambda h: h["val_recall@10"])["round"]
    return best, history

"""The encoder's training settings (`EncoderConfig`) and the checks against an index shape."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from shards.shape import IndexShape

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
    validation_fraction: float = 0.05        # held-out rows (trainers.validation)
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


def check_config(cfg: EncoderConfig, shape: IndexShape) -> IndexShape:
    """Refuse a config that cannot work with the index sizes `shape`, before any training.

    Returns `shape` describing the encoder that cfg trains (`encoder` = its kind,
    `code_dim` = its output dimension). A shape that already describes an encoder must
    describe that one.
    """
    dim = shape.dim
    dim_out = cfg.dim_out or dim
    if dim_out > dim:
        raise ValueError(f"dim_out={dim_out} exceeds the input dimension {dim}")
    if dim_out % shape.pq_m:
        raise ValueError(f"code_bytes={shape.code_bytes} ({shape.pq_m} PQ sub-quantizers of "
                         f"{shape.pq_bits} bits) must divide the encoder output dimension "
                         f"{dim_out}")
    if cfg.kind == "none" and dim_out != dim:
        raise ValueError(f"kind='none' cannot change the dimension ({dim} -> {dim_out})")
    described = (shape.encoder, shape.code_dim)
    if described not in (("none", dim), (cfg.kind, dim_out)):
        raise ValueError(f"the index shape says encoder={shape.encoder!r} with code_dim="
                         f"{shape.code_dim}, the encoder config trains kind={cfg.kind!r} "
                         f"with output dimension {dim_out}")
    return dataclasses.replace(shape, encoder=cfg.kind, code_dim=dim_out)

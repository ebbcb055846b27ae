"""Quantization Networks (Yang et al., CVPR 2019): quantization as a sum of sigmoids.

Training: y = alpha * (sum_i sigmoid(T * (beta * x - b_i)) - o), differentiable in x,
alpha and beta; the trainer raises the temperature T on a linear schedule
(`LinearTemperatureSchedule`). Inference: the sigmoids become unit steps, y = alpha * q
with an integer code q, so a quantized linear layer runs as an integer matmul and one
float rescale (deployed as indexer.encoders.QuantizedEncoder).

Grid (every step height s_i = 1, thresholds b_i halfway between consecutive levels):
- signed, b bits: symmetric levels -Q..Q, Q = 2**(b-1) - 1, i.e. 2**b - 1 levels and
  2**b - 2 unit steps, thresholds -Q + 1/2 .. Q - 1/2, offset o = Q. The two's-complement
  value -2**(b-1) is left out so that the grid is symmetric, zero is exact and a code
  fits a signed b-bit integer (int8 for 8 bits).
- unsigned, b bits: levels 0..n, n = 2**b - 1 unit steps, thresholds 1/2 .. n - 1/2,
  offset o = 0.
The integer code of x is the level itself, clamp(floor(beta * x + 1/2), low, high) (a
value on a threshold rounds up: step(0) = 1), and the hard output is `scale` * code with
`scale` = alpha. The soft forward needs O(numel * steps) memory: fine for 4 and 8 bits.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

MAX_BITS = 16


class SigmoidQuantizer(torch.nn.Module):
    """Uniform `bits`-bit quantizer: sum of sigmoids in training, unit steps at inference.

    alpha (output scale) and beta (input scale) are learned and kept positive by storing
    their logarithms. `init_scale` is the initial grid step in input units: alpha =
    init_scale, beta = 1 / init_scale, so that initially y ~= x (see also `calibrate`).
    `temperature` (T) is a plain attribute set by the trainer; None means hard mode.
    """

    def __init__(self, bits: int, signed: bool = True, init_scale: float = 1.0) -> None:
        super().__init__()
        min_bits = 2 if signed else 1
        if isinstance(bits, bool) or not isinstance(bits, int) or not min_bits <= bits <= MAX_BITS:
            raise ValueError(f"bits must be an int in [{min_bits}, {MAX_BITS}] (signed={signed}), "
                             f"got {bits!r}")
        if not (init_scale > 0 and math.isfinite(init_scale)):
            raise ValueError(f"init_scale must be a finite number > 0, got {init_scale}")
        self.bits, self.signed = bits, signed
        self.low = -(2 ** (bits - 1) - 1) if signed else 0
        self.high = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
        self.offset = float(-self.low)
        thresholds = torch.arange(self.low, self.high, dtype=torch.float32) + 0.5
        self.register_buffer("thresholds", thresholds, persistent=False)
        self.log_alpha = torch.nn.Parameter(torch.tensor(math.log(init_scale)))
        self.log_beta = torch.nn.Parameter(torch.tensor(-math.log(init_scale)))
        self.temperature: float | None = None
        self.hard = True

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    @property
    def beta(self) -> torch.Tensor:
        return self.log_beta.exp()

    @property
    def scale(self) -> float:
        """Float value of one integer code step at the output: y_hard = scale * code."""
        return float(self.alpha.detach())

    @property
    def code_dtype(self) -> torch.dtype:
        """Smallest signed integer type holding every code (int8 for signed 8-bit)."""
        return next(dtype for dtype in (torch.int8, torch.int16, torch.int32)
                    if self.high <= torch.iinfo(dtype).max)

    def set_temperature(self, temperature: float | None) -> None:
        """Set T. A number enters soft (training) mode; None enters hard mode."""
        if temperature is None:
            self.temperature, self.hard = None, True
            return
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a finite number > 0 or None, got {temperature}")
        self.temperature, self.hard = float(temperature), False

    def hard_mode(self, enabled: bool = True) -> None:
        """Switch to unit steps (inference) or back to the sigmoids at the current T."""
        if not enabled and self.temperature is None:
            raise ValueError("hard_mode(False) needs a temperature: call set_temperature(T) first")
        self.hard = bool(enabled)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        """Set beta so that max |x| (max x when unsigned) maps to the top level, alpha = 1/beta."""
        top = float(x.detach().abs().max() if self.signed else x.detach().clamp(min=0).max())
        step = top / self.high if top > 0 else 1.0
        self.log_alpha.fill_(math.log(step))
        self.log_beta.fill_(-math.log(step))

    def _levels(self, x: torch.Tensor) -> torch.Tensor:
        """sum_i step(beta*x - b_i) - o, computed as a clamped rounding (float tensor)."""
        return torch.clamp(torch.floor(self.beta.detach() * x + 0.5), self.low, self.high)

    @torch.no_grad()
    def integer_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Hard integer code of every element (the level, in `code_dtype`)."""
        return self._levels(x).to(self.code_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hard or self.temperature is None:
            return self.alpha * self._levels(x).to(x.dtype)
        return self.alpha * (self._soft_levels(self.beta * x) - self.offset)

    def _soft_levels(self, t: torch.Tensor) -> torch.Tensor:
        """sum_i sigmoid(T (t - b_i)), evaluating only the thresholds within a window
        around t: one further than `window` levels contributes 1 (or 0) up to
        exp(-T (window - 1)) < 5e-5, so an 8-bit quantizer costs ~2 window sigmoids per
        element instead of 254 (measured: 320 s -> tens of seconds per training)."""
        temperature = self.temperature
        n = self.thresholds.numel()
        window = int(math.ceil(10.0 / temperature)) + 2
        if 2 * window >= n:
            z = t.unsqueeze(-1) - self.thresholds.to(t.dtype)
            return torch.sigmoid(temperature * z).sum(dim=-1)
        below = torch.floor(t.detach() - self.low - 0.5)             # index of b just below t
        first = below - (window - 1)
        offsets = torch.arange(2 * window, device=t.device, dtype=t.dtype)
        index = first.unsqueeze(-1) + offsets                          # (..., 2w)
        inside = (index >= 0) & (index < n)
        b = self.low + 0.5 + index
        soft = torch.sigmoid(temperature * (t.unsqueeze(-1) - b)) * inside
        return first.clamp(0, n) + soft.sum(dim=-1)


@dataclass(frozen=True)
class LinearTemperatureSchedule:
    """T rising linearly from `start` (step 0) to `end` (step `total_steps` and after)."""

    start: float
    end: float
    total_steps: int

    def __post_init__(self) -> None:
        if not (self.start > 0 and math.isfinite(self.start)):
            raise ValueError(f"start must be a finite number > 0, got {self.start}")
        if not (self.end >= self.start and math.isfinite(self.end)):
            raise ValueError(f"end must be finite and >= start ({self.start}), got {self.end}")
        if (isinstance(self.total_steps, bool) or not isinstance(self.total_steps, int)
                or self.total_steps <= 0):
            raise ValueError(f"total_steps must be an int > 0, got {self.total_steps!r}")

    def value(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return self.start + (self.end - self.start) * min(step, self.total_steps) / self.total_steps


class QuantizedLinear(torch.nn.Module):
    """y = q_a(x) @ q_w(W).T (+ bias): weight and input activation each pass a quantizer.

    `weight_bits` / `activation_bits` None means full precision for that side. The weight
    is an owned (out_features x in_features) parameter, initialised from `weight` when
    given, or comes from `weight_provider()` at every call (e.g. `SMHPool.provider(name)`;
    the module owning both must register the pool so that its parameters are trained).
    The weight quantizer is calibrated on the initial weight; call `calibrate(x_sample)`
    to set the activation range. The bias, if any, stays in float.
    """

    def __init__(self, in_features: int, out_features: int, *, weight_bits: int | None = 8,
                 activation_bits: int | None = 8, weight: torch.Tensor | None = None,
                 weight_provider: Callable[[], torch.Tensor] | None = None, bias: bool = False,
                 signed_activations: bool = True) -> None:
        super().__init__()
        for field, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{field} must be an int > 0, got {value!r}")
        if weight is not None and weight_provider is not None:
            raise ValueError("give either weight or weight_provider, not both")
        self.in_features, self.out_features = in_features, out_features
        self._weight_provider = weight_provider
        self.register_parameter("weight", None)
        if weight_provider is None:
            self.weight = torch.nn.Parameter(torch.nn.init.kaiming_uniform_(  # as nn.Linear
                torch.empty(out_features, in_features), a=math.sqrt(5)) if weight is None
                else self._checked(weight.detach().clone().float()))
        self.bias = torch.nn.Parameter(torch.zeros(out_features)) if bias else None
        self.weight_quantizer = None if weight_bits is None else SigmoidQuantizer(weight_bits, True)
        self.activation_quantizer = (None if activation_bits is None
                                     else SigmoidQuantizer(activation_bits, signed_activations))
        if self.weight_quantizer is not None:
            self.weight_quantizer.calibrate(self.current_weight())

    def _checked(self, w: torch.Tensor) -> torch.Tensor:
        if tuple(w.shape) != (self.out_features, self.in_features):
            raise ValueError(f"weight must have shape ({self.out_features}, {self.in_features}), "
                             f"got {tuple(w.shape)}")
        return w

    def _quantizers(self) -> list[SigmoidQuantizer]:
        return [q for q in (self.weight_quantizer, self.activation_quantizer) if q is not None]

    def current_weight(self) -> torch.Tensor:
        """The full-precision weight (owned, or from the provider)."""
        if self._weight_provider is None:
            return self.weight
        return self._checked(self._weight_provider())

    def quantized_weight(self) -> torch.Tensor:
        w = self.current_weight()
        return w if self.weight_quantizer is None else self.weight_quantizer(w)

    def set_temperature(self, temperature: float | None) -> None:
        for q in self._quantizers():
            q.set_temperature(temperature)

    def hard_mode(self, enabled: bool = True) -> None:
        for q in self._quantizers():
            q.hard_mode(enabled)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        """Fit the activation range to a sample of inputs and the weight range to the weight."""
        if self.activation_quantizer is not None:
            self.activation_quantizer.calibrate(x)
        if self.weight_quantizer is not None:
            self.weight_quantizer.calibrate(self.current_weight())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x must have {self.in_features} features, got shape {tuple(x.shape)}")
        if self.activation_quantizer is not None:
            x = self.activation_quantizer(x)
        return F.linear(x, self.quantized_weight(), self.bias)

"""Encoders: maps from input vectors (d) into the space VLQ-ADC quantizes (d_out <= d).

- `IdentityEncoder`: f(x) = x.
- `LinearEncoder`: f(x) = W x with W (d_out x d), held as numpy for encoding; it is the
  OPQ baseline (W = faiss OPQ rotation) and the deployed form of a GSL-trained encoder.
- `QuantizedEncoder`: the deployed low-bit (Quantization Networks) encoder, integer
  weight and activation levels, integer matrix product, one float rescale; runs in int8
  (indexer.int8_linear) when the levels fit, else in an exact float32/int64 emulation.
Each has `encode(x) -> float32`, `to_arrays()` (plain numpy, stored with the model) and
`describe()`; `encoder_from_arrays` rebuilds one from a model bundle, and `train_opq`
fits the OPQ rotation (faiss). GSL/QN/SMH training is torch, in trainers/. Queries pass
through the same encoder as the base.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import faiss
import numpy as np

from indexer.int8_linear import Int8Linear


@dataclass(frozen=True, eq=False)
class IdentityEncoder:
    dim: int
    kind: str = field(default="none", init=False)

    @property
    def dim_out(self) -> int:
        return self.dim

    def encode(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def describe(self) -> dict:
        return {"kind": "none", "dim": self.dim, "parameters": 0}


@dataclass(frozen=True, eq=False)
class LinearEncoder:
    """f(x) = x @ W.T (+ bias); `kind` says how W was obtained ("opq", "gsl")."""

    weight: np.ndarray             # (d_out, d) float32
    kind: str = "gsl"
    bias: np.ndarray | None = None
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.weight.ndim != 2 or self.weight.shape[0] > self.weight.shape[1]:
            raise ValueError(f"encoder weight must be (d_out, d) with d_out <= d, got "
                             f"{self.weight.shape}")
        if self.bias is not None and np.shape(self.bias) != (self.weight.shape[0],):
            raise ValueError(f"encoder bias must be ({self.weight.shape[0]},) for weight "
                             f"{self.weight.shape}, got {np.shape(self.bias)}")
        object.__setattr__(self, "weight", np.ascontiguousarray(self.weight, dtype=np.float32))
        object.__setattr__(self, "_weight_t", np.ascontiguousarray(self.weight.T))

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    @property
    def dim_out(self) -> int:
        return self.weight.shape[0]

    def encode(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"encoder expects (n, {self.dim}) input, got {x.shape}")
        z = np.ascontiguousarray(x, dtype=np.float32) @ self._weight_t
        if self.bias is not None:
            z += self.bias
        return z

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"encoder.weight": self.weight}
        if self.bias is not None:
            arrays["encoder.bias"] = self.bias.astype(np.float32)
        return arrays

    def describe(self) -> dict:
        n = self.weight.size + (0 if self.bias is None else self.bias.size)
        return {"kind": self.kind, "dim": self.dim, "dim_out": self.dim_out,
                "parameters": int(self.params.get("trainable_parameters", n)), **self.params}


@dataclass(frozen=True, eq=False)
class QuantizedEncoder:
    """The deployed Quantization-Networks encoder: z = s * (codes(x) @ W_codes.T).

    Activations are mapped to integer levels clamp(floor(act_beta * x + 1/2), lo, hi),
    weights are stored as integer levels, and the product is an integer matrix product
    followed by one float rescale s = act_scale * weight_scale. `backend` says how:
    "int8" (indexer.int8_linear: uint8 x int8 GEMM with int32 sums, when the levels fit
    and the op passes its exactness probe), else the emulation "float32-exact" (integer
    product computed exactly in float32 while in_features * |a|max * |w|max < 2**24) or
    "int64". All three give the same result up to the rounding of the final rescale.
    """

    weight_codes: np.ndarray       # (d_out, d) int8/int16 levels
    weight_scale: float
    act_beta: float
    act_scale: float
    act_low: int
    act_high: int
    params: dict = field(default_factory=dict)
    kind: str = "gsl"
    use_int8: bool = True          # False: always the emulation (reference, tests)

    def __post_init__(self):
        w = np.asarray(self.weight_codes)
        exact = w.shape[1] * max(abs(self.act_low), abs(self.act_high)) * int(np.abs(w).max(initial=0))
        object.__setattr__(self, "_exact_f32", exact < 2 ** 24)
        object.__setattr__(self, "_w_t", np.ascontiguousarray(
            w.T, dtype=np.float32 if exact < 2 ** 24 else np.int64))
        object.__setattr__(self, "_int8", Int8Linear.build(w, self.act_low, self.act_high)
                           if self.use_int8 else None)

    def __getstate__(self):  # the prepacked oneDNN weight does not pickle: rebuild it
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    def __setstate__(self, state):
        for name, value in state.items():
            object.__setattr__(self, name, value)
        self.__post_init__()

    @property
    def dim(self) -> int:
        return self.weight_codes.shape[1]

    @property
    def dim_out(self) -> int:
        return self.weight_codes.shape[0]

    @property
    def backend(self) -> str:
        if self._int8 is not None:
            return "int8"
        return "float32-exact" if self._exact_f32 else "int64"

    def encode(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"encoder expects (n, {self.dim}) input, got {x.shape}")
        if self._int8 is not None:
            return self._int8(x, self.act_beta, self.act_scale * self.weight_scale)
        return self.encode_emulated(x)

    def encode_emulated(self, x: np.ndarray) -> np.ndarray:
        """The reference: integer levels and product emulated exactly in float32/int64."""
        a = np.floor(np.asarray(x, dtype=np.float32) * np.float32(self.act_beta) + np.float32(0.5))
        np.clip(a, self.act_low, self.act_high, out=a)
        acc = a @ self._w_t if self._exact_f32 else a.astype(np.int64) @ self._w_t
        return (acc * np.float32(self.act_scale * self.weight_scale)).astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"encoder.weight_codes": self.weight_codes,
                "encoder.quant": np.array([self.weight_scale, self.act_beta, self.act_scale,
                                           self.act_low, self.act_high], dtype=np.float64)}

    def describe(self) -> dict:
        return {"kind": self.kind, "dim": self.dim, "dim_out": self.dim_out,
                "parameters": int(self.params.get("trainable_parameters", self.weight_codes.size)),
                **self.params}


def encoder_from_arrays(meta: dict, arrays: dict[str, np.ndarray]):
    """Rebuild the encoder a model bundle describes (meta["encoder"]); ValueError naming
    the key or array that is missing or malformed."""
    dim = meta["dim"] if "dim" in meta else (meta.get("shape") or {}).get("dim")
    desc = meta.get("encoder") or {"kind": "none", "dim": dim}
    if not isinstance(desc, dict) or not isinstance(desc.get("kind"), str):
        raise ValueError(f"model metadata: 'encoder' must be a mapping with a 'kind', got {desc!r}")
    if desc["kind"] == "none":
        return IdentityEncoder(desc.get("dim", dim))
    if "encoder.weight" not in arrays and "encoder.weight_codes" not in arrays:
        raise ValueError(f"model says encoder kind {desc['kind']!r} but holds no encoder.weight")
    params = {k: v for k, v in desc.items() if k not in ("kind", "dim", "dim_out", "parameters")}
    if "encoder.weight_codes" in arrays:
        codes, quant = arrays["encoder.weight_codes"], arrays.get("encoder.quant")
        if codes.ndim != 2 or codes.dtype.kind not in "iu":
            raise ValueError(f"model array 'encoder.weight_codes' must be 2-D integer levels, "
                             f"got {codes.dtype} {codes.shape}")
        if quant is None or quant.shape != (5,):
            raise ValueError(f"model array 'encoder.quant' must hold 5 values (weight scale, "
                             f"activation beta and scale, low, high), got "
                             f"{None if quant is None else quant.shape}")
        w_scale, a_beta, a_scale, lo, hi = quant.tolist()
        if lo != int(lo) or hi != int(hi) or lo > hi:
            raise ValueError(f"model array 'encoder.quant': activation levels [{lo}, {hi}] must "
                             f"be integers with low <= high")
        return QuantizedEncoder(codes, w_scale, a_beta, a_scale,
                                int(lo), int(hi), params=params, kind=desc["kind"])
    return LinearEncoder(arrays["encoder.weight"], kind=desc["kind"],
                         bias=arrays.get("encoder.bias"), params=params)


def train_opq(x: np.ndarray, pq_m: int, dim_out: int | None = None) -> LinearEncoder:
    """The OPQ baseline: a learned rotation (faiss OPQMatrix) for a PQ of pq_m sub-quantizers."""
    d = x.shape[1]
    dim_out = dim_out or d
    opq = faiss.OPQMatrix(d, pq_m, dim_out)
    opq.niter = 25  # faiss seeds OPQ's random initialisation itself: runs are repeatable
    opq.train(np.ascontiguousarray(x, dtype=np.float32))
    weight = faiss.vector_to_array(opq.A).reshape(dim_out, d)
    return LinearEncoder(weight, kind="opq", params={"pq_m": pq_m})

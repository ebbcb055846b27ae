"""Real int8 inference for the deployed Quantization-Networks encoder (SPEC 3).

The deployed encoder computes y = s * (a @ W.T) with integer activation levels
a = clamp(floor(beta * x + 1/2), low, high), integer weight levels W and one float scale s.
`Int8Linear` runs that product in int8 on the CPU:

1. per block of rows, one compiled pass (numba, single-threaded) maps float32 x to uint8
   a - low (zero point -low), with the same float32 arithmetic as the numpy reference
   (multiply, add 1/2, floor, clamp);
2. oneDNN's u8 x s8 -> s32 GEMM (`torch.ops.onednn.qlinear_pointwise`, weight prepacked
   once) removes the zero point, converts the exact int32 sum to float32 and multiplies
   it by s (passed as the activation scale, weight scale 1).
The whole call runs on one thread (`THREADS`; torch's thread count is lowered for the
call and restored): on the 2-core benchmark machine a second thread gained ~20% alone,
but right after a numpy (OpenBLAS) product, whose idle workers keep spinning for ~0.1 s,
the 2-thread call was 2.5x slower, and in add() the encoder always follows the numpy and
faiss work of the previous batch. One thread also leaves the other core to other workers.

`Int8Linear.build` returns None, and the caller keeps its exact float/int64 emulation,
when the levels do not fit (weights outside int8, more than 256 activation levels, a
sum that could overflow int32), when numba or the oneDNN op is missing, or when the op
fails an exactness probe on extreme inputs (e.g. a kernel that saturates 16-bit
intermediate sums, as AVX2 u8 x s8 kernels without VNNI can).

Infinite inputs clamp to the end levels on both paths; a NaN input gives an unspecified
level here where the emulation gives NaN outputs (the encoder does not check for NaN).
"""
from __future__ import annotations

import logging
import threading
from contextlib import contextmanager

import numpy as np

log = logging.getLogger(__name__)

# Rows per oneDNN call: 2048-4096 measured fastest, one thread, 100k x 128 (1024 pays the
# per-call overhead, 16384 spills the cache; one call over all 100k rows was 2x slower).
GEMM_ROWS = 4096
THREADS = 1
_threads_lock = threading.Lock()   # serialises the save / lower / restore of torch's count

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency
    numba = None

if numba is not None:
    @numba.njit(cache=True)
    def _levels_u8(x, beta, low, high, out):
        """out = clamp(floor(x * beta + 1/2), low, high) - low as uint8; float32 throughout
        (no fastmath: multiply and add round separately, as numpy does)."""
        half = np.float32(0.5)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                v = np.floor(x[i, j] * beta + half)
                if v < low:
                    v = low
                elif v > high:
                    v = high
                out[i, j] = np.uint8(np.int32(v - low))


@contextmanager
def _torch_threads(n: int):
    import torch

    with _threads_lock:
        previous = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


def _onednn_ops():
    """The oneDNN int8 linear ops, or None when this torch build has none."""
    import torch

    try:
        return torch.ops.onednn.qlinear_prepack, torch.ops.onednn.qlinear_pointwise
    except (AttributeError, RuntimeError):
        return None


class Int8Linear:
    """y = scale * (clamp(floor(beta x + 1/2), low, high) @ weight_codes.T), in int8.

    Build with `Int8Linear.build`, which returns None when the int8 path cannot reproduce
    the integer semantics exactly on this machine. Holds only the prepacked weight:
    `__call__` allocates its buffers per call; calls from several threads are serialised.
    """

    def __init__(self, weight_codes: np.ndarray, act_low: int, act_high: int) -> None:
        import torch

        self._torch = torch
        prepack, self._linear = _onednn_ops()
        self.dim_out, self.dim = weight_codes.shape
        self.act_low, self.act_high = int(act_low), int(act_high)
        self._packed = prepack(torch.from_numpy(np.ascontiguousarray(weight_codes, np.int8)),
                               [GEMM_ROWS, self.dim])
        self._unit = torch.ones(1, dtype=torch.float32)         # weight scale
        self._zero = torch.zeros(1, dtype=torch.int64)          # weight zero point

    @classmethod
    def build(cls, weight_codes: np.ndarray, act_low: int, act_high: int) -> Int8Linear | None:
        """The int8 path for these levels, or None (with the reason logged) when the levels
        do not fit it, the op is unavailable, or it fails the exactness probe."""
        w = np.asarray(weight_codes)
        reason = None
        if numba is None:
            reason = "numba is not installed"
        elif w.ndim != 2 or w.size == 0:
            reason = f"weight codes of shape {w.shape}"
        elif not np.issubdtype(w.dtype, np.integer):
            reason = f"weight codes of dtype {w.dtype}"
        elif w.min() < -128 or w.max() > 127:
            reason = f"weight levels [{w.min()}, {w.max()}] exceed int8"
        elif act_high - act_low > 255:
            reason = f"activation levels [{act_low}, {act_high}] exceed 256 values"
        elif w.shape[1] * 255 * 128 >= 2 ** 31:
            reason = f"in_features={w.shape[1]} could overflow the int32 sum"
        elif _onednn_ops() is None:
            reason = "torch has no oneDNN int8 linear op"
        if reason is not None:
            log.info("int8 encoder path off: %s; using the exact float/int64 emulation", reason)
            return None
        try:
            int8 = cls(w, act_low, act_high)
            exact = int8._passes_probe(w)
        except RuntimeError as exc:  # op present but unsupported on this CPU/build
            log.info("int8 encoder path off: oneDNN int8 linear failed (%s)", exc)
            return None
        if not exact:
            log.warning("int8 encoder path off: oneDNN int8 linear is not exact on this CPU")
            return None
        return int8

    def _gemm(self, levels_u8: np.ndarray, scale: float) -> np.ndarray:
        torch = self._torch
        y = self._linear(torch.from_numpy(levels_u8), float(scale), -self.act_low, self._packed,
                         self._unit, self._zero, None, 1.0, 0, torch.float32, "none", [], "")
        return y.numpy()

    def _passes_probe(self, w: np.ndarray) -> bool:
        """Exact int32 sums (scale 1) on inputs that push every partial sum to its extreme:
        per output row, activations at the level matching each weight's sign, their
        opposite, the constant extremes, and random levels."""
        lo, hi = self.act_low, self.act_high
        w64 = w.astype(np.int64)
        aligned = np.where(w64 >= 0, hi, lo)
        rng = np.random.default_rng(0)
        levels = np.concatenate([aligned, np.where(w64 >= 0, lo, hi),
                                 np.full((1, self.dim), lo), np.full((1, self.dim), hi),
                                 rng.integers(lo, hi + 1, (64, self.dim))]).astype(np.int64)
        want = (levels @ w64.T).astype(np.float32)
        got = self._gemm(np.ascontiguousarray(levels - lo, dtype=np.uint8), 1.0)
        return bool(np.array_equal(got, want))

    def __call__(self, x: np.ndarray, beta: float, scale: float) -> np.ndarray:
        """Encode float32 rows x (n, dim): the float32 (n, dim_out) result."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = x.shape[0]
        out = np.empty((n, self.dim_out), dtype=np.float32)
        block = np.empty((min(n, GEMM_ROWS), self.dim), dtype=np.uint8)
        beta32, lo, hi = np.float32(beta), np.float32(self.act_low), np.float32(self.act_high)
        with _torch_threads(THREADS):
            for start in range(0, n, GEMM_ROWS):
                stop = min(n, start + GEMM_ROWS)
                levels = block[:stop - start]
                _levels_u8(x[start:stop], beta32, lo, hi, levels)
                out[start:stop] = self._gemm(levels, scale)
        return out

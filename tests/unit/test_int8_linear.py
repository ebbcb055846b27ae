"""The int8 path of the deployed quantized encoder equals its integer semantics."""
import pickle

import numpy as np
import pytest

import indexer.int8_linear as int8_linear
from indexer.encoders import QuantizedEncoder
from indexer.int8_linear import Int8Linear

needs_int8 = pytest.mark.skipif(Int8Linear.build(np.eye(4, dtype=np.int8), -127, 127) is None,
                                reason="no exact oneDNN int8 linear on this machine")


def random_encoder(rng, d, d_out, w_max, lo, hi, **kwargs) -> QuantizedEncoder:
    w = rng.integers(-w_max, w_max + 1, (d_out, d)).astype(np.int8 if w_max <= 127 else np.int16)
    return QuantizedEncoder(w, weight_scale=0.0137, act_beta=float(rng.uniform(0.5, 4.0)),
                            act_scale=0.29, act_low=lo, act_high=hi, **kwargs)


@needs_int8
@pytest.mark.parametrize("d, d_out, w_max, lo, hi", [
    (128, 128, 127, -127, 127),    # 8-bit signed weights and activations
    (96, 48, 127, 0, 255),         # 8-bit unsigned activations
    (64, 64, 7, -7, 7),            # 4-bit
    (33, 17, 127, -127, 127),      # odd sizes
])
def test_int8_path_equals_the_emulated_integer_product(d, d_out, w_max, lo, hi):
    rng = np.random.default_rng(d)
    enc = random_encoder(rng, d, d_out, w_max, lo, hi)
    assert enc.backend == "int8"
    # spread over the whole grid and beyond it (clamping), more rows than one oneDNN call
    n = int8_linear.GEMM_ROWS + 123
    x = (rng.normal(size=(n, d)) * (hi - lo) / (2 * enc.act_beta)).astype(np.float32)
    # values exactly on a rounding threshold: beta * x + 1/2 an integer (rounds up)
    x[:50] = (rng.integers(lo, hi, (50, d)) + np.float32(0.5)) / np.float32(enc.act_beta)
    x[50, :] = np.inf
    x[51, :] = -np.inf
    want = enc.encode_emulated(x)
    got = enc.encode(x)
    assert got.dtype == np.float32 and got.shape == (n, d_out)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
    ref = QuantizedEncoder(enc.weight_codes, enc.weight_scale, enc.act_beta, enc.act_scale,
                           lo, hi, use_int8=False)
    assert ref.backend == "float32-exact"
    np.testing.assert_array_equal(ref.encode(x), want)
    assert enc.encode(x[:0]).shape == (0, d_out)
    np.testing.assert_allclose(enc.encode(x[:1]), want[:1], rtol=1e-6, atol=1e-6 * np.abs(want).max())


@needs_int8
def test_int8_encoder_pickles_and_keeps_its_path():
    enc = random_encoder(np.random.default_rng(1), 32, 16, 127, -127, 127)
    again = pickle.loads(pickle.dumps(enc))
    x = np.random.default_rng(2).normal(size=(100, 32)).astype(np.float32) * 40
    assert again.backend == "int8"
    np.testing.assert_array_equal(again.encode(x), enc.encode(x))


@pytest.mark.parametrize("w_max, lo, hi, backend", [
    (200, -127, 127, "float32-exact"),   # 9-bit weights do not fit int8
    (127, -255, 255, "float32-exact"),   # 511 activation levels do not fit uint8
    (2000, -32767, 32767, "int64"),      # 16-bit: the float32 product would not be exact
])
def test_fallback_when_levels_exceed_int8(w_max, lo, hi, backend):
    rng = np.random.default_rng(3)
    enc = random_encoder(rng, 48, 24, w_max, lo, hi)
    assert enc._int8 is None and enc.backend == backend
    x = rng.normal(size=(200, 48)).astype(np.float32) * 10
    a = np.clip(np.floor(x * np.float32(enc.act_beta) + np.float32(0.5)), lo, hi).astype(np.int64)
    want = (a @ enc.weight_codes.astype(np.int64).T) * (enc.act_scale * enc.weight_scale)
    np.testing.assert_allclose(enc.encode(x), want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


def test_build_refuses_levels_it_cannot_run_exactly(monkeypatch):
    w = np.ones((4, 8), np.int16)
    assert Int8Linear.build(w * 128, -127, 127) is None
    assert Int8Linear.build(w, -1, 255) is None
    assert Int8Linear.build(w.astype(np.float32), -127, 127) is None
    monkeypatch.setattr(int8_linear, "_onednn_ops", lambda: None)
    assert Int8Linear.build(w, -127, 127) is None
    assert QuantizedEncoder(w, 1.0, 1.0, 1.0, -127, 127).backend == "float32-exact"


@needs_int8
def test_build_refuses_an_op_that_fails_the_probe(monkeypatch):
    """A kernel that saturates (as u8 x s8 kernels without VNNI can) is not used."""
    real_gemm = Int8Linear._gemm

    def saturating(self, levels_u8, scale):
        return np.clip(real_gemm(self, levels_u8, 1.0), -2 ** 15, 2 ** 15 - 1) * np.float32(scale)

    monkeypatch.setattr(Int8Linear, "_gemm", saturating)
    w = np.full((4, 64), 127, np.int8)
    assert Int8Linear.build(w, -127, 127) is None

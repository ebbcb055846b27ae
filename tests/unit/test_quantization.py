"""Quantization Networks: the sigmoid sum tends to the unit steps; integer inference matches."""
import re

import numpy as np
import pytest
import torch

from trainers.quantization import LinearTemperatureSchedule, QuantizedLinear, SigmoidQuantizer

GRIDS = [(2, True), (4, True), (4, False), (8, True), (8, False)]


@torch.no_grad()
def int_forward(layer: QuantizedLinear, x: np.ndarray) -> np.ndarray:
    """The layer's hard forward as deployed: integer codes, integer matmul, one float
    rescale. Accumulates in int32 (int64 if in_features * max|code_a| * max|code_w| could
    overflow int32)."""
    wq, aq = layer.weight_quantizer, layer.activation_quantizer
    if wq is None or aq is None:
        raise ValueError("int_forward needs integer weights and activations, got "
                         f"weight_bits={None if wq is None else wq.bits}, "
                         f"activation_bits={None if aq is None else aq.bits}")
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != layer.in_features:
        raise ValueError(f"x must have shape (n, {layer.in_features}), got {x.shape}")
    bound = layer.in_features * max(-aq.low, aq.high) * max(-wq.low, wq.high)
    acc_dtype = np.int32 if bound < 2 ** 31 else np.int64
    w_codes = wq.integer_codes(layer.current_weight()).numpy().astype(acc_dtype)
    x_codes = aq.integer_codes(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    acc = x_codes.numpy().astype(acc_dtype) @ w_codes.T
    y = (acc * (aq.scale * wq.scale)).astype(np.float32)
    if layer.bias is not None:
        y += layer.bias.detach().numpy()
    return y


def off_threshold(q: SigmoidQuantizer, n: int, seed: int, margin: float = 0.05) -> torch.Tensor:
    """Inputs over the grid and a little beyond, at least `margin` from every threshold
    (thresholds sit at k + 1/2 when beta = 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, generator=g) * (q.high - q.low + 3) + (q.low - 1.5)
    return x[((x - torch.floor(x)) - 0.5).abs() > margin]


@pytest.mark.parametrize("bits,signed", GRIDS)
def test_hard_forward_is_the_step_sum_and_clamped_rounding(bits, signed):
    q = SigmoidQuantizer(bits, signed=signed, init_scale=0.5)
    assert q.hard and q.temperature is None
    x = torch.randn(2000, generator=torch.Generator().manual_seed(1)) * (q.high * 0.5) + 0.1
    z = q.beta.detach() * x
    step_sum = (z[:, None] - q.thresholds >= 0).sum(dim=1) - q.offset
    y = q(x)
    assert torch.equal(y, q.alpha.detach() * step_sum)
    assert torch.equal(q.integer_codes(x).long(), step_sum.long())
    assert q.integer_codes(x).dtype == (torch.int8 if q.high <= 127 else torch.int16)
    assert q.low == (-q.high if signed else 0) and len(q.thresholds) == q.high - q.low
    assert torch.allclose(y, q.scale * q.integer_codes(x).float())


@pytest.mark.parametrize("bits,signed", GRIDS)
def test_high_temperature_equals_hard_steps(bits, signed):
    q = SigmoidQuantizer(bits, signed=signed)
    x = off_threshold(q, 5000, seed=2)
    hard = q(x)
    q.set_temperature(1e4)
    assert not q.hard
    soft = q(x)
    assert (soft - hard).abs().max() < 1e-3


def test_soft_output_converges_to_hard_as_temperature_rises():
    q = SigmoidQuantizer(4, signed=True)
    x = off_threshold(q, 20000, seed=3)
    hard = q(x)
    errors = []
    for temperature in (1.0, 3.0, 10.0, 30.0, 100.0, 1000.0):
        q.set_temperature(temperature)
        errors.append(float((q(x) - hard).detach().abs().mean()))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-6


@pytest.mark.parametrize("temperature", [1.0, 10.0, 1e4])
def test_gradients_are_finite(temperature):
    q = SigmoidQuantizer(8, signed=True, init_scale=0.05)
    q.set_temperature(temperature)
    x = torch.randn(4096, generator=torch.Generator().manual_seed(4)) * 3
    x = torch.cat([x, q.thresholds[::7] * 0.05]).requires_grad_(True)  # some exactly on thresholds
    (q(x) ** 2).sum().backward()
    for grad in (x.grad, q.log_alpha.grad, q.log_beta.grad):
        assert torch.isfinite(grad).all()
        assert grad.abs().sum() > 0


def test_modes_and_validation():
    q = SigmoidQuantizer(4)
    with pytest.raises(ValueError, match="set_temperature"):
        q.hard_mode(False)
    q.set_temperature(5.0)
    q.hard_mode(True)
    assert q.hard and q.temperature == 5.0
    q.hard_mode(False)
    assert not q.hard
    q.set_temperature(None)
    assert q.hard
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            q.set_temperature(bad)
    for bits, signed in ((1, True), (0, False), (17, True), (4.0, True)):
        with pytest.raises(ValueError, match="bits"):
            SigmoidQuantizer(bits, signed=signed)
    with pytest.raises(ValueError, match="init_scale"):
        SigmoidQuantizer(4, init_scale=0.0)


@pytest.mark.parametrize("start,end,total_steps,field", [
    (0.0, 10.0, 100, "start"), (-1.0, 10.0, 100, "start"), (5.0, 1.0, 100, "end"),
    (1.0, float("inf"), 100, "end"), (1.0, 10.0, 0, "total_steps"), (1.0, 10.0, -5, "total_steps"),
    (1.0, 10.0, 2.5, "total_steps"),
])
def test_schedule_validation_names_field_and_value(start, end, total_steps, field):
    value = {"start": start, "end": end, "total_steps": total_steps}[field]
    with pytest.raises(ValueError, match=f"{field}.*{re.escape(str(value))}"):
        LinearTemperatureSchedule(start, end, total_steps)


def test_schedule_is_linear_and_holds_at_the_end():
    schedule = LinearTemperatureSchedule(1.0, 101.0, 100)
    assert [schedule.value(s) for s in (0, 25, 50, 100, 1000)] == [1.0, 26.0, 51.0, 101.0, 101.0]
    assert LinearTemperatureSchedule(3.0, 3.0, 1).value(7) == 3.0
    with pytest.raises(ValueError, match="step"):
        schedule.value(-1)


@pytest.mark.parametrize("weight_bits,activation_bits,signed", [
    (8, 8, True), (4, 4, True), (4, 8, True), (8, 8, False),
])
def test_int_forward_matches_hard_forward(weight_bits, activation_bits, signed):
    rng = np.random.default_rng(5)
    weight = torch.from_numpy(rng.normal(size=(24, 64)).astype(np.float32))
    x = rng.normal(size=(300, 64)).astype(np.float32) + (3.0 if not signed else 0.0)
    layer = QuantizedLinear(64, 24, weight_bits=weight_bits, activation_bits=activation_bits,
                            weight=weight, bias=True, signed_activations=signed)
    layer.calibrate(torch.from_numpy(x))
    with torch.no_grad():  # learned scales need not be reciprocal: break alpha = 1 / beta
        layer.weight_quantizer.log_alpha += 0.3
        layer.activation_quantizer.log_beta -= 0.2
        layer.bias.copy_(torch.from_numpy(rng.normal(size=24).astype(np.float32)))
    layer.set_temperature(50.0)
    layer.hard_mode(True)
    expected = layer(torch.from_numpy(x)).detach().numpy()
    got = int_forward(layer, x)
    assert got.dtype == np.float32 and got.shape == (300, 24)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_int_forward_needs_both_sides_quantized_and_full_precision_is_plain_linear():
    weight = torch.randn(8, 16, generator=torch.Generator().manual_seed(6))
    x = torch.randn(10, 16, generator=torch.Generator().manual_seed(7))
    layer = QuantizedLinear(16, 8, weight_bits=None, activation_bits=None, weight=weight)
    assert torch.allclose(layer(x), x @ weight.T, atol=1e-6)
    with pytest.raises(ValueError, match="weight_bits=None"):
        int_forward(layer, x.numpy())
    with pytest.raises(ValueError, match="shape"):
        QuantizedLinear(16, 8, weight=torch.zeros(16, 8))
    with pytest.raises(ValueError, match="features"):
        QuantizedLinear(16, 8)(torch.zeros(3, 15))


def test_weight_quantization_error_decreases_with_bits():
    weight = torch.randn(64, 64, generator=torch.Generator().manual_seed(8))
    errors = []
    for bits in (2, 4, 8):
        layer = QuantizedLinear(64, 64, weight_bits=bits, activation_bits=None, weight=weight)
        errors.append(float((layer.quantized_weight().detach() - weight).norm() / weight.norm()))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.02


def test_weight_provider_receives_gradients_in_soft_mode():
    source = torch.randn(8, 16, generator=torch.Generator().manual_seed(9), requires_grad=True)
    layer = QuantizedLinear(16, 8, weight_bits=4, activation_bits=4, weight_provider=lambda: source)
    assert layer.weight is None and len(list(layer.parameters())) == 4  # alphas and betas
    layer.calibrate(torch.randn(64, 16, generator=torch.Generator().manual_seed(10)))
    layer.set_temperature(10.0)
    layer(torch.randn(32, 16, generator=torch.Generator().manual_seed(11))).pow(2).sum().backward()
    assert torch.isfinite(source.grad).all() and source.grad.abs().sum() > 0


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("temperature", [1.0, 3.0, 20.0, 500.0])
def test_windowed_sigmoid_sum_equals_the_full_sum(bits, temperature):
    torch.manual_seed(0)
    q = SigmoidQuantizer(bits)
    q.set_temperature(temperature)
    t = (torch.rand(4000) * 2 - 1) * (2 ** (bits - 1) + 3)      # also beyond both ends
    full = torch.sigmoid(temperature * (t.unsqueeze(-1) - q.thresholds)).sum(dim=-1)
    torch.testing.assert_close(q._soft_levels(t), full, atol=1e-3, rtol=0)

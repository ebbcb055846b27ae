"""Structured Multi-Hashing: size control by `fraction`, slicing, gradients, SVD init."""
import math
import re

import pytest
import torch

from trainers.quantization import QuantizedLinear
from trainers.smh import SMHPool, choose_rank, virtual_side


def virtual_matrix(pool: SMHPool) -> torch.Tensor:
    """The whole m x m matrix L @ R (padding included)."""
    return pool.left @ pool.right

SHAPES = {"encoder": (24, 32), "bias": (24,), "head": (3, 4, 5)}  # pool 852, m 30


def padded_target(pool: SMHPool, init: dict[str, torch.Tensor]) -> torch.Tensor:
    flat = torch.zeros(pool.m * pool.m, dtype=torch.float64)
    for name, tensor in init.items():
        start = pool.offsets[name]
        flat[start:start + tensor.numel()] = tensor.reshape(-1).double()
    return flat.reshape(pool.m, pool.m)


def relative_error(pool: SMHPool, init: dict[str, torch.Tensor]) -> float:
    target = padded_target(pool, init)
    return float((virtual_matrix(pool).detach().double() - target).norm() / target.norm())


@pytest.mark.parametrize("shapes", [SHAPES, {"w": (16, 16)}, {"w": (128, 128), "b": (128,)},
                                    {"tiny": (3,)}])
@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.25, 0.5, 0.77, 1.0])
def test_rank_is_the_best_integer_for_the_fraction(shapes, fraction):
    pool = SMHPool(shapes, fraction)
    pool_size = sum(math.prod(s) for s in shapes.values())
    m, r = pool.m, pool.rank
    assert pool.pool_size == pool_size
    assert m == math.ceil(math.sqrt(pool_size)) == virtual_side(pool_size)
    assert (m - 1) ** 2 < pool_size <= m * m
    assert pool.trainable_parameters() == 2 * m * r == sum(p.numel() for p in pool.parameters())
    assert pool.left.shape == (m, r) and pool.right.shape == (r, m)
    target = fraction * pool_size
    assert r >= 1
    assert all(abs(2 * m * r - target) <= abs(2 * m * other - target) for other in range(1, m + 1))


def test_choose_rank_examples():
    assert choose_rank(256, 1.0) == 8  # m = 16: 2 * 16 * 8 = 256
    assert choose_rank(256, 0.01) == 1  # never below one
    assert choose_rank(128, 0.5) == 3  # m = 12: 72 is closer to 64 than 48


def test_slices_have_their_shapes_and_tile_the_virtual_matrix_in_order():
    pool = SMHPool(SHAPES, 0.3, seed=1)
    weights = {name: pool.weight(name) for name in SHAPES}
    for name, shape in SHAPES.items():
        assert weights[name].shape == shape
    flat = torch.cat([w.reshape(-1) for w in weights.values()])
    expected = virtual_matrix(pool).reshape(-1)[:pool.pool_size]
    torch.testing.assert_close(flat, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(pool.provider("head")(), weights["head"])
    with pytest.raises(KeyError, match="nope"):
        pool.weight("nope")


def test_random_init_scale_and_seed():
    pool = SMHPool({"w": (64, 64)}, 0.5, seed=3)
    std = float(pool.weight("w").detach().std())
    assert 0.5 / 8 < std < 2 / 8  # 1 / sqrt(fan-in 64)
    assert torch.equal(SMHPool({"w": (64, 64)}, 0.5, seed=3).left, pool.left)
    assert not torch.equal(SMHPool({"w": (64, 64)}, 0.5, seed=4).left, pool.left)


def test_gradients_flow_to_left_and_right():
    pool = SMHPool(SHAPES, 0.2)
    loss = sum((pool.weight(name) ** 2).sum() for name in SHAPES)
    loss.backward()
    for grad in (pool.left.grad, pool.right.grad):
        assert torch.isfinite(grad).all() and (grad != 0).any()


def test_quantized_linear_trains_the_pool_through_its_weight_provider():
    pool = SMHPool({"encoder": (8, 16)}, 0.5, init={"encoder": torch.eye(8, 16)})
    layer = QuantizedLinear(16, 8, weight_bits=4, activation_bits=None,
                            weight_provider=pool.provider("encoder"))
    layer.set_temperature(10.0)
    layer(torch.randn(32, 16, generator=torch.Generator().manual_seed(2))).pow(2).sum().backward()
    for grad in (pool.left.grad, pool.right.grad):
        assert torch.isfinite(grad).all() and (grad != 0).any()


@pytest.mark.parametrize("fraction", [0, 0.0, -0.1, 1.5, float("nan"), True])
def test_fraction_outside_unit_interval_is_refused(fraction):
    with pytest.raises(ValueError, match=rf"fraction.*{re.escape(repr(fraction))}"):
        SMHPool(SHAPES, fraction)


def test_bad_shapes_and_init_are_refused():
    with pytest.raises(ValueError, match="shapes"):
        SMHPool({}, 0.5)
    with pytest.raises(ValueError, match=r"shapes\['w'\]"):
        SMHPool({"w": (4, 0)}, 0.5)
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        SMHPool({"w": (4, 5)}, 0.5, init={"w": torch.eye(4)})
    with pytest.raises(ValueError, match="unknown"):
        SMHPool({"w": (4, 5)}, 0.5, init={"v": torch.eye(4)})


def test_svd_init_is_exact_when_the_target_has_rank_at_most_r():
    g = torch.Generator().manual_seed(5)
    target = torch.randn(20, 3, generator=g) @ torch.randn(3, 20, generator=g)  # rank 3
    pool = SMHPool({"w": (20, 20)}, 0.5, init={"w": target})  # m = 20, r = 5
    assert pool.rank == 5
    assert relative_error(pool, {"w": target}) < 1e-5
    assert SMHPool({"w": (20, 20)}, 0.1, init={"w": target}).rank == 1
    assert relative_error(SMHPool({"w": (20, 20)}, 0.1, init={"w": target}), {"w": target}) > 0.1


def test_identity_encoder_with_bias_is_reproduced_exactly_and_still_trains():
    # d x d identity then d zeros: pool d*d + d, m = d + 1, so the ones all land in
    # column 0 of the virtual matrix, which has rank 1 <= r at every fraction.
    d = 16
    init = {"encoder": torch.eye(d), "bias": torch.zeros(d)}
    for fraction in (0.05, 0.5, 1.0):
        pool = SMHPool({"encoder": (d, d), "bias": (d,)}, fraction, init=init)
        assert pool.m == d + 1
        torch.testing.assert_close(pool.weight("encoder"), torch.eye(d), rtol=0, atol=1e-6)
        torch.testing.assert_close(pool.weight("bias"), torch.zeros(d), rtol=0, atol=1e-6)
    pool.weight("encoder").sum().backward()  # the r - 1 unused directions still get gradient
    assert (pool.right.grad.abs().sum(dim=1) > 0).all()


@pytest.mark.parametrize("kind", ["identity", "rotation"])
def test_svd_init_error_is_the_optimum_and_falls_as_fraction_rises(kind):
    # alone, a d x d identity or rotation fills an m = d virtual matrix with d unit
    # singular values: the rank-r optimum leaves sqrt((d - r) / d) relative error, and
    # r <= d / 2 for fraction <= 1, so it is never exact.
    d = 32
    g = torch.Generator().manual_seed(6)
    rotation = torch.linalg.qr(torch.randn(d, d, generator=g))[0]
    target = torch.eye(d) if kind == "identity" else rotation
    errors = []
    for fraction in (0.0625, 0.125, 0.25, 0.5, 1.0):
        pool = SMHPool({"encoder": (d, d)}, fraction, init={"encoder": target})
        errors.append(relative_error(pool, {"encoder": target}))
        assert errors[-1] == pytest.approx(math.sqrt((d - pool.rank) / d), abs=1e-5)
    assert all(a > b for a, b in zip(errors, errors[1:])), errors


def test_svd_init_of_a_general_target_matches_eckart_young():
    g = torch.Generator().manual_seed(7)
    init = {"encoder": torch.randn(24, 32, generator=g), "bias": torch.randn(24, generator=g)}
    shapes = {"encoder": (24, 32), "bias": (24,)}
    errors = []
    for fraction in (0.1, 0.3, 0.6, 1.0):
        pool = SMHPool(shapes, fraction, init=init)
        target = padded_target(pool, init)
        s = torch.linalg.svdvals(target)
        optimum = float(s[pool.rank:].norm() / s.norm())
        errors.append(relative_error(pool, init))
        assert errors[-1] == pytest.approx(optimum, abs=1e-5)
    assert all(a > b for a, b in zip(errors, errors[1:])), errors

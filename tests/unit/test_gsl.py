"""Gradient Snapping Layer: identity forward, snapped descent-direction backward."""
import pytest
import torch

from trainers.gsl import gradient_snap, snap_gradient


def test_forward_is_identity_and_backward_snaps():
    z = torch.tensor([[0.0, 0.0]], requires_grad=True)
    # codeword A lies ahead of the descent step -g = (+1, +0.2); B lies behind it
    codewords = torch.tensor([[[1.0, 0.5], [-1.0, 0.0]]])
    out = gradient_snap(z, codewords, beta=0.5)
    assert torch.equal(out, z)
    g = torch.tensor([[-1.0, -0.2]])
    out.backward(g)
    g_out = z.grad
    assert float((g_out * g).sum()) >= 0            # still a descent direction
    # a small descent step moves z toward A, and more so than the plain gradient
    a = codewords[0, 0]
    step = 0.1
    plain = torch.dist(z.detach() - step * g, a)
    snapped = torch.dist(z.detach() - step * g_out, a)
    assert snapped < torch.dist(z.detach(), a)
    assert snapped < plain


def test_descent_direction_on_random_batches():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(512, 16, generator=gen)
    g = torch.randn(512, 16, generator=gen)
    codewords = z[:, None, :] + torch.randn(512, 4, 16, generator=gen)
    for beta in (0.0, 0.3, 0.5, 1.0):
        out = snap_gradient(z, g, codewords, beta)
        assert ((out * g).sum(dim=1) >= -1e-6).all()
        assert torch.isfinite(out).all()
    assert torch.allclose(snap_gradient(z, g, codewords, 0.0), g)


def test_no_codeword_ahead_passes_gradient_unchanged():
    z = torch.zeros(1, 2)
    g = torch.tensor([[1.0, 0.0]])                    # descent moves toward -x
    codewords = torch.tensor([[[1.0, 0.0], [2.0, 1.0]]])   # both at +x: behind the step
    assert torch.equal(snap_gradient(z, g, codewords, 0.5), g)


def test_bad_beta_and_shapes_refused():
    z = torch.zeros(3, 2, requires_grad=True)
    with pytest.raises(ValueError, match="beta must lie in"):
        gradient_snap(z, torch.zeros(3, 1, 2), beta=1.5)
    with pytest.raises(ValueError, match="codewords must be"):
        gradient_snap(z, torch.zeros(3, 2), beta=0.5)

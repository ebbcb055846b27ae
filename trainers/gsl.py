"""Gradient Snapping Layer (SPEC 3; after Liu & Lu, arXiv 1610.09645).

Forward: identity on the representation z. Backward: with g the incoming gradient and
C_z the `snap_k` quantized reconstructions (codewords) nearest to z, pick the codeword
c* that a descent step moves toward, i.e. maximising cos(z - c, g); with
u = (z - c*) / |z - c*| the outgoing gradient is

    g_out = (1 - beta) g + beta <g, u> u,

so <g_out, g> = (1 - beta) |g|^2 + beta <g, u>^2 >= 0 (still a descent direction) and
the step leans toward c*. If no codeword lies ahead of the step (all cosines <= 0), the
gradient passes unchanged.
"""
from __future__ import annotations

import torch

_EPS = 1e-12


def snap_gradient(z: torch.Tensor, g: torch.Tensor, codewords: torch.Tensor,
                  beta: float) -> torch.Tensor:
    """The snapped gradient for a batch: z, g (n, d); codewords (n, snap_k, d)."""
    diff = z[:, None, :] - codewords                              # z - c
    diff_norm = diff.norm(dim=-1).clamp_min(_EPS)                 # (n, snap_k)
    g_norm = g.norm(dim=-1, keepdim=True).clamp_min(_EPS)         # (n, 1)
    cos = (diff * g[:, None, :]).sum(dim=-1) / (diff_norm * g_norm)
    best_cos, best = cos.max(dim=1)
    rows = torch.arange(z.shape[0], device=z.device)
    u = diff[rows, best] / diff_norm[rows, best, None]
    along = (g * u).sum(dim=-1, keepdim=True)
    snapped = (1.0 - beta) * g + beta * along * u
    return torch.where(best_cos[:, None] > 0, snapped, g)


class GradientSnap(torch.autograd.Function):
    """z -> z, with the backward pass of `snap_gradient`."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, codewords: torch.Tensor, beta: float) -> torch.Tensor:
        ctx.save_for_backward(z.detach(), codewords.detach())
        ctx.beta = float(beta)
        return z.view_as(z)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        z, codewords = ctx.saved_tensors
        return snap_gradient(z, g, codewords, ctx.beta), None, None


def gradient_snap(z: torch.Tensor, codewords: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """Apply the Gradient Snapping Layer; `beta` in [0, 1]."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    if codewords.ndim != 3 or codewords.shape[0] != z.shape[0] or codewords.shape[2] != z.shape[1]:
        raise ValueError(f"codewords must be (n, snap_k, d) = ({z.shape[0]}, k, {z.shape[1]}), "
                         f"got {tuple(codewords.shape)}")
    return GradientSnap.apply(z, codewords, beta)

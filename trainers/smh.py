"""Structured Multi-Hashing (Eban et al., CVPR 2020): every weight is a slice of W = L @ R.

`pool_size` is the total number of weights named in `shapes`; the virtual matrix W is
m x m with m = ceil(sqrt(pool_size)). Flattened row-major, its first pool_size entries
are the weights, sliced consecutively in the order of `shapes`; the remaining
m*m - pool_size entries are unused padding. L is (m x r) and R is (r x m), so 2*m*r
numbers are trained, where r >= 1 is the integer bringing 2*m*r closest to
fraction * pool_size (ties to the smaller r): `fraction` sets the model size directly.

Since fraction <= 1 gives r <= about m / 2, W never has full rank m: a target whose
virtual matrix has rank above r (a d x d rotation alone, say) is only approximated,
even at fraction = 1. The initialisation from target weights is the truncated SVD of
the padded virtual matrix (targets in place, zeros as padding), split evenly as
L = U_r sqrt(S_r), R = sqrt(S_r) V_r^T: by Eckart-Young the closest rank-r matrix in
Frobenius norm over the whole padded matrix (padding counted as a zero target), and
exact whenever that matrix has rank <= r.
"""
from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable

import torch


def virtual_side(pool_size: int) -> int:
    """m = ceil(sqrt(pool_size)), in exact integer arithmetic."""
    return math.isqrt(pool_size - 1) + 1


def choose_rank(pool_size: int, fraction: float) -> int:
    """The integer r >= 1 with 2*m*r closest to fraction * pool_size (ties: smaller r)."""
    m = virtual_side(pool_size)
    target = fraction * pool_size
    low = max(1, math.floor(target / (2 * m)))
    return min((low, low + 1), key=lambda r: (abs(2 * m * r - target), r))


class SMHPool(torch.nn.Module):
    """All weights of a model as slices of one virtual matrix L @ R (see module docstring).

    Without `init`, L and R are Gaussian with a scale that gives the virtual entries a
    standard deviation of 1 / sqrt(largest fan-in). With `init` (a target tensor for some
    or all names), L and R come from the truncated SVD; names missing from `init` get
    Gaussian targets of that same deviation. Singular directions with a (near-)zero
    singular value get small random columns in L and zero rows in R: W is unchanged,
    but the gradient still reaches them (zero on both sides would never train).
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], fraction: float,
                 init: dict[str, torch.Tensor] | None = None, seed: int = 0) -> None:
        super().__init__()
        if not shapes:
            raise ValueError(f"shapes must name at least one weight, got {shapes!r}")
        for name, shape in shapes.items():
            if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
                raise ValueError(f"shapes[{name!r}] must be a tuple of ints > 0, got {shape!r}")
        if (isinstance(fraction, bool) or not isinstance(fraction, numbers.Real)
                or not 0 < fraction <= 1):
            raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
        self.shapes = {name: tuple(shape) for name, shape in shapes.items()}
        self.offsets: dict[str, int] = {}
        offset = 0
        for name, shape in self.shapes.items():
            self.offsets[name] = offset
            offset += math.prod(shape)
        self.pool_size, self.fraction = offset, float(fraction)
        self.m = virtual_side(offset)
        self.rank = choose_rank(offset, fraction)
        fan_in = max((math.prod(s[1:]) for s in self.shapes.values() if len(s) >= 2), default=1)
        self.init_std = 1.0 / math.sqrt(fan_in)
        generator = torch.Generator().manual_seed(seed)
        left, right = (self._random_factors(generator) if init is None
                       else self._svd_factors(init, generator))
        self.left = torch.nn.Parameter(left)
        self.right = torch.nn.Parameter(right)

    def _factor_std(self) -> float:
        # entries of L @ R are sums of r products: std = sqrt(r) * sigma**2 = init_std
        return math.sqrt(self.init_std / math.sqrt(self.rank))

    def _random_factors(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = self._factor_std()
        return (torch.randn(self.m, self.rank, generator=generator) * sigma,
                torch.randn(self.rank, self.m, generator=generator) * sigma)

    def _svd_factors(self, init: dict[str, torch.Tensor],
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        unknown = sorted(set(init) - set(self.shapes))
        if unknown:
            raise ValueError(f"init names unknown weights {unknown}; known: {list(self.shapes)}")
        flat = torch.zeros(self.m * self.m, dtype=torch.float64)
        flat[:self.pool_size] = torch.randn(self.pool_size, generator=generator,
                                            dtype=torch.float64) * self.init_std
        for name, tensor in init.items():
            if tuple(tensor.shape) != self.shapes[name]:
                raise ValueError(f"init[{name!r}] has shape {tuple(tensor.shape)}, "
                                 f"expected {self.shapes[name]}")
            start = self.offsets[name]
            flat[start:start + tensor.numel()] = tensor.detach().reshape(-1).to(torch.float64)
        u, s, vh = torch.linalg.svd(flat.reshape(self.m, self.m))
        u, s, vh = u[:, :self.rank], s[:self.rank], vh[:self.rank]
        left, right = u * s.sqrt(), s.sqrt()[:, None] * vh
        dead = s <= s[0] * 1e-6 if s[0] > 0 else torch.ones_like(s, dtype=torch.bool)
        left[:, dead] = torch.randn(self.m, int(dead.sum()), generator=generator,
                                    dtype=torch.float64) * self._factor_std()
        right[dead] = 0.0
        return left.float(), right.float()

    def trainable_parameters(self) -> int:
        """Number of trained numbers, 2 * m * r."""
        return self.left.numel() + self.right.numel()

    def weight(self, name: str) -> torch.Tensor:
        """The weight `name`: its slice of the flattened L @ R, reshaped to its shape.

        Only the rows of L @ R that the slice touches are computed.
        """
        if name not in self.shapes:
            raise KeyError(f"no weight named {name!r} in the pool; known: {list(self.shapes)}")
        shape, start = self.shapes[name], self.offsets[name]
        numel = math.prod(shape)
        first_row, end_row = start // self.m, (start + numel - 1) // self.m + 1
        rows = self.left[first_row:end_row] @ self.right
        begin = start - first_row * self.m
        return rows.reshape(-1)[begin:begin + numel].reshape(shape)

    def provider(self, name: str) -> Callable[[], torch.Tensor]:
        """A no-argument callable returning `weight(name)` (a QuantizedLinear weight_provider)."""
        if name not in self.shapes:
            raise KeyError(f"no weight named {name!r} in the pool; known: {list(self.shapes)}")
        return functools.partial(self.weight, name)

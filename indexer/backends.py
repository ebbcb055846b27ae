"""Which scan a VLQIndex runs: the compiled numba kernels on the CPU, torch on a GPU."""
from __future__ import annotations

from typing import Literal

from indexer.kernels import numba

Backend = Literal["auto", "numba", "torch"]


def resolve_backend(backend: Backend, device: str | None) -> tuple[str, str]:
    """auto: torch on CUDA when a GPU is visible, else the compiled numba scan."""
    if backend == "auto":
        if device is None:
            import torch
            if torch.cuda.is_available():
                return "torch", "cuda"
        backend = "numba" if numba is not None and device in (None, "cpu") else "torch"
    if backend == "numba":
        if numba is None:
            raise ValueError("backend='numba' needs numba installed")
        return "numba", "cpu"
    return "torch", device or "cpu"

"""The index itself: VLQ coarse level, line assignment, PQ/ADC, search kernels, evaluation.

Pure numpy/torch/faiss/numba; never imports ray.
"""
from indexer.quantizer import VLQQuantizer
from indexer.vlq import VLQIndex

__all__ = ["VLQIndex", "VLQQuantizer"]

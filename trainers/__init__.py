"""Learning: k-means/PQ codebooks for VLQ-ADC (and, later, the learned encoder)."""
from trainers.codebooks import (
    MIN_POINTS_PER_CENTROID,
    product_quantizer,
    quantize_scalars,
    train_centroids,
    train_product_quantizer,
    train_scalar_codebook,
)

__all__ = [
    "MIN_POINTS_PER_CENTROID",
    "product_quantizer",
    "quantize_scalars",
    "train_centroids",
    "train_product_quantizer",
    "train_scalar_codebook",
]

"""Codebook training for VLQ-ADC with faiss: coarse centroids, lambda codebook, PQ.

Pure numpy/faiss; every function takes a float32 training matrix and returns arrays,
so the same code trains the single-process index and the Ray trainer actor.
"""
from __future__ import annotations

import logging

import faiss
import numpy as np

from indexer.sizing import MIN_POINTS_PER_CENTROID

log = logging.getLogger(__name__)

PQ_NBITS_CHOICES = (8, 4)   # bits per sub-code: the scalar scan's bytes, the fast scan's nibbles


def train_centroids(x: np.ndarray, nlist: int, *, niter: int = 20, seed: int = 0) -> np.ndarray:
    """k-means (faiss.Kmeans) on the sample: (nlist, d) float32 centroids."""
    n, d = x.shape
    if n < nlist:
        raise ValueError(f"k-means needs at least nlist={nlist} training vectors, got {n}")
    if n < MIN_POINTS_PER_CENTROID * nlist:
        log.warning("training k-means with %d points for %d centroids (< %d per centroid); "
                    "consider a smaller nlist", n, nlist, MIN_POINTS_PER_CENTROID)
    # faiss prints its own warning for the same condition; ours above goes through logging
    kmeans = faiss.Kmeans(d, nlist, niter=niter, seed=seed, verbose=False,
                          min_points_per_centroid=1)
    kmeans.train(np.ascontiguousarray(x, dtype=np.float32))
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def train_scalar_codebook(values: np.ndarray, nlevels: int, *, niter: int = 25,
                          seed: int = 0) -> np.ndarray:
    """1-D k-means on scalar values: sorted (nlevels,) float32 levels.

    Used for the line parameter lambda. When the sample has fewer distinct values than
    levels, the distinct values themselves are the levels (padded by repetition).
    """
    values = np.asarray(values, dtype=np.float32).reshape(-1, 1)
    distinct = np.unique(values)
    if distinct.size <= nlevels:
        levels = np.resize(distinct, nlevels)
    else:
        kmeans = faiss.Kmeans(1, nlevels, niter=niter, seed=seed, verbose=False,
                              max_points_per_centroid=1024)
        kmeans.train(np.ascontiguousarray(values))
        levels = kmeans.centroids.reshape(-1)
    return np.sort(levels).astype(np.float32)


def quantize_scalars(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Index of the nearest level for every value (levels sorted ascending), as uint8/int."""
    mid = (levels[1:] + levels[:-1]) * 0.5
    idx = np.searchsorted(mid, np.asarray(values, dtype=np.float32), side="left")
    return idx.astype(np.uint8 if levels.size <= 256 else np.int32)


def train_product_quantizer(residuals: np.ndarray, m: int, *, nbits: int = 8,
                            seed: int = 0) -> np.ndarray:
    """faiss ProductQuantizer with m sub-quantizers of nbits (8 or 4) bits: codebook
    (m, 2**nbits, d/m)."""
    n, d = residuals.shape
    if d % m:
        raise ValueError(f"{m} PQ sub-quantizers must divide the dimension {d}")
    if nbits not in PQ_NBITS_CHOICES:
        raise ValueError(f"PQ sub-codes are 4 or 8 bits, got nbits={nbits}")
    ksub = 1 << nbits
    if n < ksub:
        raise ValueError(f"PQ training needs at least {ksub} vectors, got {n}")
    if n < MIN_POINTS_PER_CENTROID * ksub:
        log.warning("training PQ with %d points for %d centroids per sub-quantizer "
                    "(< %d per centroid)", n, ksub, MIN_POINTS_PER_CENTROID)
    pq = faiss.ProductQuantizer(d, m, nbits)
    pq.cp.seed = seed
    pq.cp.min_points_per_centroid = 1  # warned above through logging
    pq.train(np.ascontiguousarray(residuals, dtype=np.float32))
    return faiss.vector_to_array(pq.centroids).reshape(m, ksub, d // m).astype(np.float32)


def product_quantizer(codebook: np.ndarray) -> faiss.ProductQuantizer:
    """A faiss ProductQuantizer holding a (m, 2**nbits, dsub) codebook (nbits 8 or 4), for
    encode/decode. Codes are m * nbits / 8 bytes; with 4 bits, sub-code 2p is the low and
    2p+1 the high nibble of byte p."""
    m, ksub, dsub = codebook.shape
    nbits = {1 << b: b for b in PQ_NBITS_CHOICES}.get(ksub)
    if nbits is None:
        raise ValueError(f"PQ codebook must have 256 or 16 centroids per sub-quantizer, "
                         f"got {ksub}")
    pq = faiss.ProductQuantizer(m * dsub, m, nbits)
    faiss.copy_array_to_vector(np.ascontiguousarray(codebook, dtype=np.float32).ravel(), pq.centroids)
    pq.sync_transposed_centroids()
    return pq

"""The index itself and everything a query or an encode worker runs: VLQ coarse level,
line assignment, PQ/ADC, search kernels, query-time encoders, codebook training with
faiss, top-k merging, evaluation.

Pure numpy/torch/faiss/numba; imports only shards/ of the project, never ray.
"""
from indexer.codebooks import train_centroids, train_product_quantizer, train_scalar_codebook
from indexer.encoders import (
    IdentityEncoder,
    LinearEncoder,
    QuantizedEncoder,
    encoder_from_arrays,
    train_opq,
)
from indexer.evaluation import evaluate, exact_ground_truth, k_recall_at_k, recall_at_k
from indexer.merge import merge_topk
from indexer.quantizer import VLQQuantizer
from indexer.validation import check_queries
from indexer.vlq import VLQIndex

__all__ = [
    "IdentityEncoder",
    "LinearEncoder",
    "QuantizedEncoder",
    "VLQIndex",
    "VLQQuantizer",
    "check_queries",
    "encoder_from_arrays",
    "evaluate",
    "exact_ground_truth",
    "k_recall_at_k",
    "merge_topk",
    "recall_at_k",
    "train_centroids",
    "train_opq",
    "train_product_quantizer",
    "train_scalar_codebook",
]

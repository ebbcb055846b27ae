"""The trained VLQ-ADC quantizer: centroids, graph, lambda levels, PQ codebook (SPEC 2).

`VLQQuantizer.train` fits it on a sample; `encode` maps float32 vectors to
(list id, lambda index, PQ code); `code_terms` gives each code's query-independent
distance term. Pure numpy/faiss, shared by the single-process index and the Ray workers.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import numpy as np

from indexer.coarse import assign_lines, build_graph, centroid_distances
from indexer.codebooks import (
    product_quantizer,
    quantize_scalars,
    train_centroids,
    train_product_quantizer,
    train_scalar_codebook,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class VLQQuantizer:
    centroids: np.ndarray      # (K, d) float32
    edges: np.ndarray          # (K, nedge) int32
    edge_len2: np.ndarray      # (K, nedge) float32
    lambda_values: np.ndarray  # (nlambda,) float32, ascending
    pq_codebook: np.ndarray    # (M, 2**pq_bits, d / M) float32; pq_bits 8 or 4
    metric: str = "l2"         # what search ranks by: "l2" or "ip" (cosine: ip on unit rows)

    def __post_init__(self):
        k, d = self.centroids.shape
        m, ksub, dsub = self.pq_codebook.shape
        if self.edges.shape != self.edge_len2.shape or self.edges.shape[0] != k:
            raise ValueError(f"graph shapes {self.edges.shape} / {self.edge_len2.shape} do not "
                             f"match {k} centroids")
        if m * dsub != d or ksub not in (16, 256) or (ksub == 16 and m % 2):
            raise ValueError(f"PQ codebook {self.pq_codebook.shape} must be (M, 256, d / M) "
                             f"(8-bit sub-codes) or (M, 16, d / M) with M even (4-bit) for "
                             f"dimension {d}")
        if self.edges.dtype.kind not in "iu":
            raise ValueError(f"graph edge ids must be integers, got {self.edges.dtype}")
        if self.edges.size and (self.edges.min() < 0 or self.edges.max() >= k):
            raise ValueError(f"graph edge ids must lie in [0, {k}), got "
                             f"[{self.edges.min()}, {self.edges.max()}]")
        if self.metric not in ("l2", "ip"):
            raise ValueError(f"quantizer metric must be 'l2' or 'ip', got {self.metric!r}")
        if not 1 <= self.lambda_values.size <= 256:
            raise ValueError(f"lambda levels must number 1..256, got {self.lambda_values.size}")
        object.__setattr__(self, "_centroid_norms",
                           np.einsum("kd,kd->k", self.centroids, self.centroids))
        object.__setattr__(self, "_pq", product_quantizer(self.pq_codebook))
        # -2 y (l2) or -y (ip), laid out (M, dsub, ksub): a query table is one GEMM per sub-space
        factor = -2.0 if self.metric == "l2" else -1.0
        object.__setattr__(self, "_lut_codebook", np.ascontiguousarray(
            (factor * self.pq_codebook).transpose(0, 2, 1), dtype=np.float32))
        # how the kernels rank lines: (0 l2 | 1 ip, lowest lambda, highest lambda)
        object.__setattr__(self, "line_rule", np.array(
            [self.metric == "ip", self.lambda_values.min(), self.lambda_values.max()],
            dtype=np.float32))
        flat = faiss.IndexFlatL2(d)
        flat.add(self.centroids)
        object.__setattr__(self, "_centroid_index", flat)

    # -- shape -------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    @property
    def nlist(self) -> int:
        return self.centroids.shape[0]

    @property
    def nedge(self) -> int:
        return self.edges.shape[1]

    @property
    def pq_bits(self) -> int:
        """Bits per PQ sub-code: 8 or 4."""
        return 8 if self.pq_codebook.shape[1] == 256 else 4

    @property
    def pq_m(self) -> int:
        return self.pq_codebook.shape[0]

    @property
    def code_bytes(self) -> int:
        return self.pq_m * self.pq_bits // 8

    def arrays(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids, "edges": self.edges, "edge_len2": self.edge_len2,
                "lambda_values": self.lambda_values, "pq_codebook": self.pq_codebook}

    # -- training ------------------------------------------------------------
    @classmethod
    def train(cls, x: np.ndarray, nlist: int, nedge: int, code_bytes: int, nlambda: int,
              seed: int = 0, pq_bits: int = 8, metric: str = "l2") -> "VLQQuantizer":
        """Fit on a float32 sample (SPEC 2 training steps 1-6); the PQ has
        code_bytes * 8 // pq_bits sub-quantizers of pq_bits bits. Codes always minimise
        the reconstruction error; `metric` is what search ranks by."""
        log.info("VLQ training on %d x %d: k-means nlist=%d", x.shape[0], x.shape[1], nlist)
        centroids = train_centroids(x, nlist, seed=seed)
        edges, edge_len2 = build_graph(centroids, nedge)
        flat = faiss.IndexFlatL2(x.shape[1])
        flat.add(centroids)
        nearest = flat.search(x, 1)[1][:, 0]
        edge_idx, lam = assign_lines(x, centroids, edges, edge_len2, nearest)
        log.info("VLQ training: lambda codebook (%d levels), then PQ%dx%d on residuals",
                 nlambda, code_bytes * 8 // pq_bits, pq_bits)
        lambda_values = train_scalar_codebook(lam, nlambda, seed=seed)
        lam_hat = lambda_values[quantize_scalars(lam, lambda_values)]
        other = edges[nearest, edge_idx]
        residuals = x - _anchors(centroids, nearest, other, lam_hat)
        pq_codebook = train_product_quantizer(residuals, code_bytes * 8 // pq_bits,
                                              nbits=pq_bits, seed=seed)
        return cls(centroids, edges, edge_len2, lambda_values, pq_codebook, metric)

    # -- encoding ------------------------------------------------------------
    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """float32 (n, d) -> (list_ids int64 (n,), lambda_idx uint8 (n,), codes uint8
        (n, code_bytes): one byte per sub-code, or two 4-bit sub-codes per byte)."""
        nearest = self.nearest_centroids(x)
        edge_idx, lam = assign_lines(x, self.centroids, self.edges, self.edge_len2, nearest)
        lam_idx = quantize_scalars(lam, self.lambda_values).astype(np.uint8)
        other = self.edges[nearest, edge_idx]
        anchors = _anchors(self.centroids, nearest, other, self.lambda_values[lam_idx])
        codes = self._pq.compute_codes(np.ascontiguousarray(x - anchors))
        list_ids = nearest.astype(np.int64) * self.nedge + edge_idx
        return list_ids, lam_idx, codes

    def nearest_centroids(self, x: np.ndarray) -> np.ndarray:
        """Id of the nearest centroid of each row (faiss, blocked: no (n, K) matrix)."""
        _, nearest = self._centroid_index.search(x, 1)
        return nearest[:, 0]

    def reconstruction_candidates(self, x: np.ndarray, snap_k: int) -> np.ndarray:
        """The quantized reconstructions of each row through its `snap_k` nearest
        centroids (best line of each, quantized lambda, PQ-coded residual):
        float32 (n, snap_k, d). The first is the reconstruction `encode` would give."""
        _, near = self._centroid_index.search(x, snap_k)
        out = np.empty((x.shape[0], snap_k, self.dim), dtype=np.float32)
        for i in range(snap_k):
            a_ids = near[:, i]
            edge_idx, lam = assign_lines(x, self.centroids, self.edges, self.edge_len2, a_ids)
            lam_hat = self.lambda_values[quantize_scalars(lam, self.lambda_values)]
            anchors = _anchors(self.centroids, a_ids, self.edges[a_ids, edge_idx], lam_hat)
            codes = self._pq.compute_codes(np.ascontiguousarray(x - anchors))
            out[:, i] = anchors + self._pq.decode(codes)
        return out

    def anchors(self, list_ids: np.ndarray, lam_idx: np.ndarray) -> np.ndarray:
        a_ids = list_ids // self.nedge
        s_ids = self.edges[a_ids, list_ids % self.nedge]
        return _anchors(self.centroids, a_ids, s_ids, self.lambda_values[lam_idx])

    def decode(self, list_ids: np.ndarray, lam_idx: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Reconstructions anchor + r_hat, float32 (n, d)."""
        return self.anchors(list_ids, lam_idx) + self._pq.decode(np.ascontiguousarray(codes))

    def code_terms(self, list_ids: np.ndarray, lam_idx: np.ndarray, codes: np.ndarray,
                   batch_size: int = 16384) -> np.ndarray:
        """Query-independent ADC term 2 <anchor, r_hat> + |r_hat|^2 per code (l2; zero for
        the inner product, whose distance has none), float32."""
        out = np.zeros(list_ids.shape[0], dtype=np.float32)
        if self.metric == "ip":
            return out
        for s in range(0, list_ids.shape[0], batch_size):
            sl = slice(s, s + batch_size)
            anchor = self.anchors(list_ids[sl], lam_idx[sl]).astype(np.float64)
            r_hat = self._pq.decode(np.ascontiguousarray(codes[sl])).astype(np.float64)
            out[sl] = np.einsum("nd,nd->n", 2.0 * anchor + r_hat, r_hat)
        return out

    def query_tables(self, q: np.ndarray) -> np.ndarray:
        """Per-query lookup tables -2 <q_m, y_m,k> (l2) or -<q_m, y_m,k> (ip): float32
        (nq, M, ksub)."""
        m, ksub, dsub = self.pq_codebook.shape
        lut = np.empty((q.shape[0], m, ksub), dtype=np.float32)
        for sub in range(m):  # one GEMM per sub-quantizer (stacked matmul is far slower)
            np.matmul(q[:, sub * dsub:(sub + 1) * dsub], self._lut_codebook[sub], out=lut[:, sub])
        return lut

    def centroid_tables(self) -> np.ndarray:
        """T[A, m, k] = 2 <c_A,m, y_m,k> + |y_m,k|^2, float32 (K, M, ksub): with the query
        table, the ADC table of codes anchored at centroid A (SPEC 2 search step 3); zero
        for the inner product."""
        cached = getattr(self, "_centroid_tables", None)
        if cached is None and self.metric == "ip":
            cached = np.zeros((self.nlist,) + self.pq_codebook.shape[:2], dtype=np.float32)
            object.__setattr__(self, "_centroid_tables", cached)
        if cached is None:
            m, ksub, dsub = self.pq_codebook.shape
            c = self.centroids.reshape(self.nlist, m, dsub)
            y = self.pq_codebook
            cached = (2.0 * np.einsum("amd,mkd->amk", c, y)
                      + np.einsum("mkd,mkd->mk", y, y)[None]).astype(np.float32)
            object.__setattr__(self, "_centroid_tables", cached)
        return cached

    def centroid_tables_with_bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """centroid_tables() with, per (centroid, sub-quantizer), its minimum and its
        range over the codewords: float32 (K, M) each."""
        cached = getattr(self, "_table_bounds", None)
        if cached is None:
            tables = self.centroid_tables()
            low = tables.min(axis=2)
            cached = (tables, low, (tables.max(axis=2) - low).astype(np.float32))
            object.__setattr__(self, "_table_bounds", cached)
        return cached

    def centroid_distances(self, q: np.ndarray) -> np.ndarray:
        """What probes rank by, (nq, K) float32: squared L2 distances (l2) or -<q, c> (ip)."""
        if self.metric == "ip":
            return np.negative(q @ self.centroids.T)
        return centroid_distances(q, self.centroids, self._centroid_norms)


def _anchors(centroids, a_ids, s_ids, lam_hat) -> np.ndarray:
    c_a = centroids[a_ids]
    return c_a + lam_hat[:, None] * (centroids[s_ids] - c_a)

"""The scan of one batch of queries on each backend (SPEC 2 search steps 1-4), as
`VLQIndex.search` runs it: the coarse step, then the 4-bit fast scan, the 8-bit numba scan
or the torch scan, each given the bitset of the rows it may return (indexer.live)."""
from __future__ import annotations

import numpy as np

from indexer.coarse import select_lines
from indexer.fastscan_search import search_fastscan, timed
from indexer.kernels import scan_torch, search_numba
from indexer.sizing import blas_controller
from indexer.validation import check_finite_rows

__all__ = ["scan_batch"]


def scan_batch(index, q, k, nprobe, nlines, rerank, row0, stages, allowed, exact=True):
    """(distances ascending, row positions) of the k best allowed rows for raw queries q
    (float32): l2 squared distances or, for the inner product, -<q, x_hat>; padded with
    (inf, -1). exact=False lets the fast scan return its approximate best (a refinement
    follows)."""
    quantizer, lists = index.quantizer, index.lists
    fast = index.pq_bits == 4 and index.backend == "numba"
    # one BLAS thread: OpenBLAS workers spinning after a GEMM would compete with the
    # scan's threads (measured: 80 -> 53 ms per 1000 queries on 2 cores)
    with blas_controller().limit(limits=1, user_api="blas"):
        with timed(stages, "coarse"):
            q = index.encoder.encode(q)
            dist_qc = quantizer.centroid_distances(q)
        # NaN or inf distances never reach the kernels' selections and index computations
        check_finite_rows(dist_qc, "queries", row0, "its distances to the centroids are "
                          "not finite in float32 (a query, or model values, too large "
                          "for float32)")
        if fast:
            return search_fastscan(quantizer, lists, q, dist_qc, k, nprobe, nlines, rerank,
                                   stages, allowed=allowed, exact=exact)
        with timed(stages, "tables"):
            lut = quantizer.query_tables(q)
    if index.backend == "numba":
        with timed(stages, "scan"):
            dist, pos = search_numba(dist_qc, lut, quantizer.edges, quantizer.edge_len2,
                                     quantizer.line_rule, nprobe, nlines,
                                     quantizer.lambda_values, lists.offsets, lists.codes,
                                     lists.lambda_idx, lists.terms, lists.term_base,
                                     lists.term_scale, quantizer.centroids,
                                     quantizer.pq_codebook, k, rerank, allowed)
        return dist, pos
    return _scan_torch(index, lut, dist_qc, k, nprobe, nlines, stages, allowed)


def _scan_torch(index, lut, dist_qc, k, nprobe, nlines, stages, allowed):
    import torch
    quantizer = index.quantizer
    with timed(stages, "lines"):
        list_ids, line_b, line_alpha, line_c = select_lines(
            dist_qc, quantizer.edges, quantizer.edge_len2, nprobe, nlines, quantizer.line_rule)
    with timed(stages, "scan"):
        dev = lists_on_device(index, allowed)
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(index.device)  # noqa: E731
        dist, pos = scan_torch(t(lut), t(list_ids), t(line_b.astype(np.float32)),
                               t(line_alpha.astype(np.float32)), t(line_c.astype(np.float32)),
                               dev["lambda_values"], dev["offsets"], dev["codes"],
                               dev["lambda_idx"], dev["terms"], k)
        return dist.cpu().numpy(), pos.cpu().numpy().astype(np.int64)


def lists_on_device(index, allowed) -> dict:
    """The lists as the torch scan reads them: one sub-code per byte (4-bit codes
    unpacked) and the exact float32 ADC term of every code (+inf where a row is not
    allowed, so that it never ranks), on the device; cached until the lists change."""
    import torch
    from indexer.rowsets import rows_of
    if index._device_lists is None:
        lists, codes = index.lists, index.lists.codes
        terms = index.quantizer.code_terms(lists.list_ids(), lists.lambda_idx, codes)
        if index.pq_bits == 4:
            codes = np.stack([codes & 15, codes >> 4], axis=2).reshape(codes.shape[0], -1)
        arrays = {"offsets": lists.offsets, "codes": codes, "lambda_idx": lists.lambda_idx,
                  "terms": terms, "lambda_values": index.quantizer.lambda_values}
        index._device_lists = {name: torch.from_numpy(np.ascontiguousarray(a)).to(index.device)
                               for name, a in arrays.items()}
    dev = index._device_lists
    if allowed is None:
        return dev
    mask = torch.from_numpy(rows_of(allowed, index.lists.nrows)).to(index.device)
    return {**dev, "terms": torch.where(mask, dev["terms"], float("inf"))}

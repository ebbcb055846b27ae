"""VLQIndex: the single-process VLQ-ADC index (SPEC 2).

    index = VLQIndex(dim=128, nlist=1024, nedge=32, code_bytes=16)
    index.train(x_learn); index.add(x_base)
    D, I = index.search(q, k=10, nprobe=32, nlines=256)
With `stored_vectors`, `search(..., refine=R)` re-ranks the R best by exact distance.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

import dataclasses

from indexer.backends import Backend, resolve_backend
from indexer.encoders import IdentityEncoder
from indexer.fastscan_search import timed
from indexer.invlists import InvertedLists
from indexer.live import (RowSets, check_new_attributes, exhaustive_search, remove_ids,
                          search_plan, short_rows)
from indexer.merge import order_ties_by_id
from indexer.persistence import index_from_arrays, index_from_trained, index_to_arrays, model_meta
from indexer.quantizer import VLQQuantizer
from indexer.refine import (check_metric, check_refine, check_store,
                            larger_is_better, normalize_rows, refine as refine_candidates,
                            store_rows, stored_input)
from indexer.search_paths import scan_batch
from indexer.validation import (
    as_float32,
    check_finite_rows,
    check_ids,
    check_index_array,
    check_positive_int,
    check_queries,
    check_unique_ids,
    check_vectors,
)
from shards import (IndexArrays, IndexRoot, IndexShape, Store, load_arrays, load_model,
                    save_copy, save_model)
from shards.index_arrays import DEFAULT_ROWS_PER_SHARD
from shards.vector_store import store_dtype, store_nbytes, store_width

ID_BYTES = 4      # ids kept as uint32 above a base (int64 when they span >= 2**32)
LAMBDA_BYTES = 1
TERM_BYTES = 2    # 8-bit codes: resident int16 ADC term per code (recomputed on load)
#: codes re-ranked with exact ADC per query, as a multiple of k, by pq_bits
DEFAULT_RERANK_FACTOR = {4: 2, 8: 1}


class VLQIndex:
    """Vector/line-quantized inverted index with exact ADC over PQ codes."""

    def __init__(self, dim: int, nlist: int, nedge: int = 32, code_bytes: int = 16,
                 nlambda: int = 256, *, pq_bits: int = 8, encoder=None, seed: int = 0,
                 backend: Backend = "auto", device: str | None = None,
                 add_batch_size: int = 16384, metric: str = "l2",
                 stored_vectors: str | None = None):
        self.dim = check_positive_int(dim, "dim")
        # vectors (and queries) pass through the encoder; VLQ quantizes its output
        self.encoder = IdentityEncoder(self.dim) if encoder is None else encoder
        if self.encoder.dim != self.dim:
            raise ValueError(f"encoder takes {self.encoder.dim}-d input, the index has dim={dim}")
        self.code_dim = self.encoder.dim_out
        self.nlist = check_positive_int(nlist, "nlist")
        if self.nlist < 2:
            raise ValueError(f"nlist must be >= 2 (lines join two centroids), got {nlist}")
        self.nedge = check_positive_int(nedge, "nedge", upper=self.nlist - 1)
        self.code_bytes = check_positive_int(code_bytes, "code_bytes")
        self.nlambda = check_positive_int(nlambda, "nlambda", upper=256)
        if isinstance(pq_bits, bool) or pq_bits not in (4, 8):
            raise ValueError(f"pq_bits must be 4 or 8, got pq_bits={pq_bits!r}")
        self.pq_bits = pq_bits
        if self.code_dim % (self.code_bytes * 8 // pq_bits):
            raise ValueError(f"code_bytes={code_bytes} must divide dim={self.code_dim} into "
                             f"{self.code_bytes * 8 // pq_bits} PQ sub-spaces of {pq_bits} bits")
        if backend not in ("auto", "numba", "torch"):
            raise ValueError(f"backend must be 'auto', 'numba' or 'torch', got {backend!r}")
        self.seed = int(seed)
        self.add_batch_size = check_positive_int(add_batch_size, "add_batch_size")
        self.backend, self.device = resolve_backend(backend, device)
        self.metric = check_metric(metric)
        self.quantizer = None
        self.stored_vectors = check_store(stored_vectors)   # dtype name of the vector store
        self.lists = InvertedLists(self.nlist * self.nedge, self.code_bytes,
                                   blocked=pq_bits == 4, with_terms=pq_bits == 8,
                                   vector_dtype=None if stored_vectors is None else
                                   store_dtype(stored_vectors),
                                   vector_width=store_width(stored_vectors or "uint8", self.dim))
        self._next_id = 0
        self._device_lists = None
        self._row_sets = RowSets()

    # -- properties ----------------------------------------------------------
    @property
    def is_trained(self) -> bool:
        return self.quantizer is not None

    @property
    def ntotal(self) -> int:
        return len(self.lists)

    @property
    def shape(self) -> IndexShape:
        """What the index is sized for (stored with its model, manifest and shards)."""
        return IndexShape(self.dim, self.nlist, self.nedge, self.code_bytes, self.nlambda,
                          encoder=self.encoder.kind, code_dim=self.code_dim, pq_bits=self.pq_bits,
                          metric=self.metric)

    @property
    def bytes_per_vector(self) -> float:
        """Resident bytes per vector, measured from the arrays (`InvertedLists.nbytes`:
        codes with block padding, lambda byte, id, ADC term of 8-bit codes, list offsets,
        stored vectors); for an empty index, what one vector will cost."""
        self.lists.compact()
        if self.ntotal:
            return self.lists.nbytes / self.ntotal
        return float(self.code_bytes + LAMBDA_BYTES + ID_BYTES + TERM_BYTES * (self.pq_bits == 8)
                     + store_nbytes(self.stored_vectors, self.dim))

    def __repr__(self) -> str:
        return (f"VLQIndex(dim={self.dim}, encoder={self.encoder.kind!r}, nlist={self.nlist}, nedge={self.nedge}, "
                f"code_bytes={self.code_bytes}, pq_bits={self.pq_bits}, nlambda={self.nlambda}, ntotal={self.ntotal}, "
                f"metric={self.metric!r}, stored_vectors={self.stored_vectors!r}, backend={self.backend!r})")

    # -- build ---------------------------------------------------------------
    def train(self, x: np.ndarray) -> None:
        """Fit centroids, graph, lambda levels and PQ on a sample (float32 or uint8)."""
        check_vectors(x, self.dim, "train")
        if self.ntotal:
            raise ValueError(f"train: the index already holds {self.ntotal} vectors; "
                             f"train a new index instead")
        xt = as_float32(x, "train")
        xt = normalize_rows(xt, "train") if self.metric == "cosine" else xt
        if xt.shape[0] < self.nlist:
            raise ValueError(f"train: {xt.shape[0]} training vectors for nlist={self.nlist}; "
                             f"need at least nlist (ideally >= 39 * nlist)")
        self.quantizer = VLQQuantizer.train(self.encoder.encode(xt), self.nlist, self.nedge,
                                            self.code_bytes, self.nlambda, seed=self.seed,
                                            pq_bits=self.pq_bits)

    @property
    def quantizer(self) -> VLQQuantizer | None:
        return self._quantizer

    @quantizer.setter
    def quantizer(self, quantizer: VLQQuantizer | None) -> None:
        """The quantizer ranks as the index's metric says (cosine: ip on unit rows)."""
        if quantizer is not None and quantizer.metric != (ranks := "l2" if self.metric == "l2" else "ip"):
            quantizer = dataclasses.replace(quantizer, metric=ranks)
        self._quantizer = quantizer

    def add(self, x: np.ndarray, ids: np.ndarray | None = None, attributes=None) -> None:
        """Encode and append vectors (kept too, with a vector store); ids default to
        ntotal, ntotal+1, ...; attributes: a pyarrow Table with one row per vector (the
        columns filters read).

        Streams in batches of `add_batch_size` rows (x may be a memory map). Nothing is
        added unless every batch encodes: a bad row, or an id given twice or already in
        the index, leaves the index as it was.
        """
        self._require_trained("add")
        check_vectors(x, self.dim, "add")
        n = x.shape[0]
        attributes = check_new_attributes(self.lists, attributes, n, "add")
        if ids is None:
            ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        else:
            ids = check_ids(ids, n)
            self._refuse_taken_ids(ids, "add")
        encoded = []
        for s in range(0, n, self.add_batch_size):
            batch = x[s:s + self.add_batch_size]
            list_ids, lam_idx, codes = self._encode_batch(batch, "add", s)
            terms = self._terms(list_ids, lam_idx, codes)
            kept = None if self.stored_vectors is None else \
                store_rows(batch, self.stored_vectors, "add", s)
            encoded.append((list_ids, lam_idx, codes, ids[s:s + self.add_batch_size], terms, kept,
                            None if attributes is None else attributes.slice(s, self.add_batch_size)))
        for part in encoded:
            self.lists.append(*part)
        if n:
            self._next_id = max(self._next_id, int(ids.max()) + 1)
        self._changed()

    def remove_ids(self, ids) -> int:
        """Remove vectors by id; returns how many were removed (unknown ids are ignored).
        Removed rows are skipped by every scan from now on."""
        removed = remove_ids(self.lists, ids)
        self._changed()
        return removed

    def _changed(self) -> None:
        """The rows changed: cached device copies and filter row sets are stale."""
        self._device_lists = None
        self._row_sets.invalidate()

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(list ids, lambda indexes, PQ codes) of vectors, without adding them: what a
        build worker stores in a shard. Streams in batches of `add_batch_size` rows."""
        self._require_trained("encode")
        check_vectors(x, self.dim, "encode")
        parts = [self._encode_batch(x[s:s + self.add_batch_size], "encode", s)
                 for s in range(0, x.shape[0], self.add_batch_size)]
        if not parts:
            return (np.empty(0, np.int64), np.empty(0, np.uint8),
                    np.empty((0, self.code_bytes), np.uint8))
        return tuple(np.concatenate(p) for p in zip(*parts))

    def _encode_batch(self, x: np.ndarray, what: str, row_offset: int):
        batch = as_float32(x, what, row_offset=row_offset)
        if self.metric == "cosine":
            batch = normalize_rows(batch, what, row_offset)
        return self.quantizer.encode(self.encoder.encode(batch))

    def add_encoded(self, list_ids: np.ndarray, lambda_idx: np.ndarray, codes: np.ndarray,
                    ids: np.ndarray, vectors: np.ndarray | None = None, attributes=None) -> None:
        """Append codes encoded elsewhere (by `quantizer.encode`, e.g. on a worker): integer
        arrays in range (nothing is cast silently) and ids not yet in the index; `vectors`
        (n, dim), what a vector store keeps (required with one, refused without)."""
        self._require_trained("add_encoded")
        if not isinstance(ids, np.ndarray) or ids.ndim != 1:
            raise ValueError(f"add_encoded: ids must be a 1-D integer numpy array, got "
                             f"{getattr(ids, 'shape', type(ids).__name__)}")
        n = ids.shape[0]
        ids = check_ids(ids, n)
        list_ids = np.asarray(check_index_array(list_ids, "add_encoded: list_ids", (n,),
                                                self.lists.nlists), dtype=np.int64)
        # bounded by the levels the kernels read (== nlambda for every model checked)
        lambda_idx = check_index_array(lambda_idx, "add_encoded: lambda_idx", (n,),
                                       self.quantizer.lambda_values.size).astype(np.uint8)
        codes = np.ascontiguousarray(check_index_array(
            codes, "add_encoded: codes", (n, self.code_bytes), 256), dtype=np.uint8)
        attributes = check_new_attributes(self.lists, attributes, n, "add_encoded")
        self._refuse_taken_ids(ids, "add_encoded")
        vectors = stored_input(vectors, self.stored_vectors, self.dim, n, "add_encoded")
        self.lists.append(list_ids, lambda_idx, codes, ids,
                          self._terms(list_ids, lambda_idx, codes), vectors, attributes)
        if n:
            self._next_id = max(self._next_id, int(ids.max()) + 1)
        self._changed()

    def _terms(self, list_ids, lam_idx, codes):
        """The per-code ADC terms the scalar scan keeps (8-bit codes only)."""
        if self.pq_bits == 4:
            return None
        return self.quantizer.code_terms(list_ids, lam_idx, codes)

    def _refuse_taken_ids(self, ids: np.ndarray, what: str) -> None:
        """ids must be unique, and new: every stored id is below _next_id, so only ids
        below it are looked up among the stored ones."""
        may_collide = ids.size and self.ntotal and int(ids.min()) < self._next_id
        check_unique_ids(ids, what, self.lists.all_ids() if may_collide else None)

    # -- search --------------------------------------------------------------
    def search(self, q: np.ndarray, k: int = 10, nprobe: int = 32, nlines: int = 256,
               batch_size: int = 4096, *, rerank: int | None = None,
               refine: int | None = None, filter: str | None = None,
               stages: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """k nearest neighbours by exact ADC over the `nlines` nearest lines of the
        `nprobe` nearest centroids. Returns D float32 (nq, k), I int64 (nq, k), equal
        distances in id order; where the scanned lists hold fewer than k codes, the tail
        is (inf, -1).

        The scan ranks codes by an approximate distance (4-bit codes: uint8 tables summed
        with SIMD; 8-bit codes: float tables and an int16 ADC term), and its `rerank` best
        (default DEFAULT_RERANK_FACTOR[pq_bits] * k, at least k) are re-scored with exact
        ADC. `refine=R` (>= k; needs stored vectors) re-ranks the R best (4-bit codes: of
        the scan's approximate order, the exact ADC step skipped) by exact distance to the
        stored vectors and returns the k best with exact distances. For
        ip and cosine, D holds similarities, largest first (empty slots: -inf, -1).
        `filter`, a SQL WHERE clause over the attribute columns (DuckDB): only rows it
        holds for are returned. With a filter that keeps a fraction s of the rows, nprobe
        and nlines are divided by s (the scan meets about as many matching rows as an
        unfiltered one meets rows), unless that would scan more rows than match: then
        every matching row is scored (exact ADC); a query that still has fewer than k hits
        scores every matching row too, so it gets k hits when k rows match.
        `stages`, a dict, receives the wall seconds of each stage (coarse, tables,
        lines+tables, scan, rerank, merge; the scalar scan's line selection and re-rank
        are fused into "scan")."""
        self._require_trained("search")
        qf = check_queries(q, self.dim)
        qf = normalize_rows(qf, "queries") if self.metric == "cosine" else qf
        batch_size = check_positive_int(batch_size, "batch_size")
        if self.ntotal == 0:
            raise ValueError("search: the index is empty; add vectors first")
        k = check_positive_int(k, "k", upper=self.ntotal)
        nprobe = check_positive_int(nprobe, "nprobe", upper=self.nlist)
        nlines = check_positive_int(nlines, "nlines", upper=nprobe * self.nedge)
        rerank = k * DEFAULT_RERANK_FACTOR[self.pq_bits] if rerank is None else \
            check_positive_int(rerank, "rerank")
        refine = None if refine is None else check_refine(refine, k, self.stored_vectors, self.ntotal)
        self.lists.compact()
        plan = search_plan(self, self._row_sets, filter, nprobe, nlines)
        out_d = np.empty((qf.shape[0], k), dtype=np.float32)
        out_i = np.empty((qf.shape[0], k), dtype=np.int64)
        step = max(1, min(batch_size, (1 << 26) // (self.nlist * 4)))
        for s in range(0, qf.shape[0], step):
            out_d[s:s + step], out_i[s:s + step] = self._search_batch(
                qf[s:s + step], k, rerank, s, stages, refine, plan)
        with timed(stages, "merge"):   # the same order however the index is split
            if not larger_is_better(self.metric):
                return order_ties_by_id(out_d, out_i)
            out_d, out_i = order_ties_by_id(-out_d, out_i)
            return -out_d, out_i

    def _search_batch(self, q, k, rerank, row0, stages, refine, plan):
        nprobe, nlines, allowed, n_allowed, exhaustive = plan
        n = k if refine is None else refine
        if exhaustive:      # a filter that few rows pass: score them all
            dist, pos = self._exhaustive(q, n, allowed, stages)
        else:
            # with refinement, the fast scan's approximate best go straight to it
            dist, pos = scan_batch(self, q, n, nprobe, nlines, n if refine else max(rerank, n),
                                   row0, stages, allowed, exact=refine is None)
            if n_allowed is not None and (short := short_rows(pos, n, n_allowed)).size:
                dist[short], pos[short] = self._exhaustive(q[short], n, allowed, stages)
        # a distance that overflowed (inf, or NaN from inf - inf) answers nothing: refuse
        # the row rather than return an arbitrary order
        check_finite_rows(np.where(pos >= 0, dist, 0.0), "queries", row0,
                          "its ADC distances are not finite in float32 (a query, or model "
                          "values, too large for float32)")
        if refine is not None:
            with timed(stages, "refine"):
                dist, pos = refine_candidates(q, pos, self.lists.vectors, self.metric, k)
        elif larger_is_better(self.metric):   # the scans rank by -<q, x_hat>
            dist = np.where(pos >= 0, -dist, -np.inf).astype(np.float32)
        return dist, self.lists.ids_at(pos)

    def _exhaustive(self, q, k, allowed, stages):
        with timed(stages, "exhaustive"):
            return exhaustive_search(self.quantizer, self.lists, self.encoder.encode(q),
                                     allowed, k)

    def _require_trained(self, what: str) -> None:
        if self.quantizer is None:
            raise ValueError(f"{what}: the index is not trained; call train() first")

    # -- persistence ---------------------------------------------------------
    def model_meta(self) -> dict:
        """A model version's metadata: the shape, the training seed, the encoder."""
        return model_meta(self)

    @classmethod
    def from_trained(cls, encoder, quantizer: VLQQuantizer, **kwargs) -> "VLQIndex":
        """An empty index around an encoder and a quantizer trained on its output
        (e.g. by trainers.train_encoder)."""
        return index_from_trained(cls, encoder, quantizer, **kwargs)

    def to_arrays(self) -> IndexArrays:
        """The model, the encoded rows and the stored vectors, as stored (shards/ writes them)."""
        return index_to_arrays(self)

    @classmethod
    def from_arrays(cls, data: IndexArrays, *, backend: Backend = "auto",
                    device: str | None = None, stored_vectors: str | None = None) -> "VLQIndex":
        """An index from a model and encoded rows; the model is checked (`check_model`:
        shapes, ranges, no NaN/inf) and the rows as `add_encoded` checks them. The vector
        store is `stored_vectors`, else that of `data.vectors`."""
        return index_from_arrays(cls, data, backend=backend, device=device,
                                 stored_vectors=stored_vectors)

    @classmethod
    def from_model(cls, store: Store | str, version: str, storage_options: dict | None = None,
                   **kwargs) -> "VLQIndex":
        """An empty index from a model version of a store (written by `snapline train`);
        `storage_options` apply to a store given as a URI string."""
        meta, arrays = load_model(Store.of(store, storage_options), version)
        return cls.from_arrays(IndexArrays.empty(meta, arrays), **kwargs)

    def save_model(self, store: Store | str, storage_options: dict | None = None,
                   extra_meta: dict | None = None) -> str:
        """Write the trained model (encoder + codebooks) as a model version of a store."""
        self._require_trained("save_model")
        return save_model(Store.of(store, storage_options),
                          {**self.model_meta(), **(extra_meta or {})}, self._model_arrays())

    def _model_arrays(self) -> dict[str, np.ndarray]:
        """What a model version holds: the codebooks and the encoder's weights."""
        return {**self.quantizer.arrays(), **self.encoder.to_arrays()}

    def save(self, uri: Store | str, storage_options: dict | None = None,
             rows_per_shard: int = DEFAULT_ROWS_PER_SHARD) -> None:
        """Write a self-contained copy at uri (local path or s3://...): the model,
        Parquet shards and a manifest (written last)."""
        save_copy(Store.of(uri, storage_options), self.to_arrays(), rows_per_shard)

    @classmethod
    def load(cls, uri: IndexRoot | Store | str, storage_options: dict | None = None, *,
             shards: Sequence[int] | None = None, version: str | None = None,
             backend: Backend = "auto", device: str | None = None) -> "VLQIndex":
        """Load a copy written by save(), an index version folder, or an index root
        (`<store>/indexes/<name>` or an IndexRoot: the version CURRENT names, or
        `version`). `shards` picks a subset of the manifest's shards (by position) to
        load into one searchable index."""
        _, data = load_arrays(uri, shards, storage_options, version=version)
        return cls.from_arrays(data, backend=backend, device=device)

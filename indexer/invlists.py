"""Inverted lists in CSR form: codes sorted by list id, with offsets.

Appends go to a pending buffer and are merged (stable sort by list id) before the next
search, so streaming adds cost one sort per search, not one per add.

What is resident per vector, all of it counted by `nbytes` (SPEC 2):
- the code: `code_bytes` bytes, row by row (8-bit sub-codes) or, for 4-bit sub-codes, in
  blocks of 32 rows transposed for the SIMD scan (`packed`, (ceil(n/32), code_bytes, 32):
  byte [b, p, t] is byte p of row 32b+t; blocks ignore list boundaries, so only the last
  block is padded);
- the lambda byte;
- the id: 32 bits above a per-list-set base (`id_base`) when the ids span less than 2**32,
  else 64 bits;
- for 8-bit codes, the ADC term of each code as int16 steps above a float32 base per list
  (`term_base[list] + term_scale * terms`, one scale for all lists: the largest list range
  / 65535); the scalar scan adds it, then re-ranks its best codes with the exact term; the
  fast scan keeps none (it recomputes the terms of the codes it re-ranks);
- the offsets (int64 per list);
- with a vector store (`vector_dtype`, `vector_width`), each row's input vector as the
  store keeps it (`shards.vector_store`: uint8, float16, float32 or sq8), in the same row
  order as the codes, for re-ranking (`refine`).

Rows may carry attributes (a pyarrow Table, one row per row, kept in the same order) for
filters. Removed rows are cleared in the `live` bitset (None: every row is live), so that
the scans skip them; they are dropped from the arrays at the next merge of appends, or as
soon as they are a quarter of the rows.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from indexer.rowsets import bitset_of, rows_of

BLOCK = 32  # rows per block of the fast-scan layout
TERM_CHUNK = 1 << 20        # rows per step of _set_terms' float64 arithmetic


def pack_blocks(codes: np.ndarray) -> np.ndarray:
    """Row codes (n, B) uint8 -> the fast-scan layout (ceil(n/32), B, 32)."""
    n, width = codes.shape
    nblocks = -(-n // BLOCK)
    padded = np.zeros((nblocks * BLOCK, width), dtype=np.uint8)
    padded[:n] = codes
    return np.ascontiguousarray(padded.reshape(nblocks, BLOCK, width).transpose(0, 2, 1))


def unpack_blocks(packed: np.ndarray, n: int) -> np.ndarray:
    """The inverse of pack_blocks: (n, B) row codes."""
    nblocks, width, _ = packed.shape
    return np.ascontiguousarray(packed.transpose(0, 2, 1).reshape(nblocks * BLOCK, width)[:n])


class InvertedLists:
    def __init__(self, nlists: int, code_bytes: int, *, blocked: bool = False,
                 with_terms: bool = True, vector_dtype=None, vector_width: int = 0):
        self.nlists = nlists
        self.code_bytes = code_bytes
        self.blocked = blocked          # codes held in the fast-scan block layout
        self.with_terms = with_terms    # an ADC term kept per code (int16 + per-list scale)
        self.offsets = np.zeros(nlists + 1, dtype=np.int64)
        self._codes = (np.empty((0, code_bytes, BLOCK), dtype=np.uint8) if blocked
                       else np.empty((0, code_bytes), dtype=np.uint8))
        self.lambda_idx = np.empty(0, dtype=np.uint8)
        self.id_base = 0
        self.id_offsets = np.empty(0, dtype=np.uint32)   # ids - id_base (uint32 or int64)
        self.terms = np.empty(0, dtype=np.int16)
        self.term_base = np.zeros(nlists if with_terms else 0, dtype=np.float32)
        self.term_scale = np.float32(1.0)
        self.vector_dtype = None if vector_dtype is None else np.dtype(vector_dtype)
        self.vectors = (None if vector_dtype is None
                        else np.empty((0, vector_width), dtype=self.vector_dtype))
        self.attributes: pa.Table | None = None
        self.live: np.ndarray | None = None   # bitset of the live rows; None: all
        self._ndead = 0
        self._pending: list[tuple] = []
        self._npending = 0

    def __len__(self) -> int:
        """Live rows, compacted and pending."""
        return self.lambda_idx.shape[0] - self._ndead + self._npending

    @property
    def nrows(self) -> int:
        """Rows of the compacted arrays, removed ones included (what the scans index)."""
        return self.lambda_idx.shape[0]

    # -- views ---------------------------------------------------------------
    @property
    def codes(self) -> np.ndarray:
        """Row codes (n, code_bytes) of the compacted part (a copy when blocked)."""
        if self.blocked:
            return unpack_blocks(self._codes, self.lambda_idx.shape[0])
        return self._codes

    @property
    def packed(self) -> np.ndarray:
        """The fast-scan block layout (ceil(n/32), code_bytes, 32)."""
        if not self.blocked:
            raise ValueError("these lists hold row codes, not the fast-scan block layout")
        return self._codes

    @property
    def ids(self) -> np.ndarray:
        """Id of every compacted row, int64 (materialized from the resident offsets)."""
        return self.id_offsets.astype(np.int64) + self.id_base

    def ids_at(self, pos: np.ndarray) -> np.ndarray:
        """Ids of rows at positions pos (-1 where pos < 0), int64."""
        if self.id_offsets.size == 0:
            return np.full(pos.shape, -1, dtype=np.int64)
        ids = self.id_offsets[np.maximum(pos, 0)].astype(np.int64) + self.id_base
        return np.where(pos >= 0, ids, -1)

    @property
    def nbytes(self) -> int:
        """Everything resident for the compacted rows: codes (with block padding), lambda
        bytes, ids, ADC terms, offsets, stored vectors."""
        stored = 0 if self.vectors is None else self.vectors.nbytes
        return int(self._codes.nbytes + self.lambda_idx.nbytes + self.id_offsets.nbytes
                   + self.terms.nbytes + self.term_base.nbytes + self.offsets.nbytes + stored
                   + (0 if self.live is None else self.live.nbytes))

    def codes_at(self, rows: np.ndarray) -> np.ndarray:
        """Row codes (len(rows), code_bytes) of compacted rows."""
        if self.blocked:
            return np.ascontiguousarray(self._codes[rows >> 5, :, rows & 31])
        return self._codes[rows]

    def list_ids_at(self, rows: np.ndarray) -> np.ndarray:
        """List id of compacted rows, int64."""
        return np.searchsorted(self.offsets, rows, side="right").astype(np.int64) - 1

    def float_terms(self) -> np.ndarray:
        """The stored ADC terms of the compacted rows, dequantized (float32)."""
        per_row = np.repeat(np.arange(self.nlists), np.diff(self.offsets))
        return self.term_base[per_row] + self.term_scale * self.terms.astype(np.float32)

    # -- updates -------------------------------------------------------------
    def append(self, list_ids, lambda_idx, codes, ids, terms=None, vectors=None,
               attributes=None) -> None:
        if self.with_terms and terms is None:
            raise ValueError("these lists keep an ADC term per code: pass terms")
        if (self.vectors is None) != (vectors is None):
            raise ValueError("these lists keep a vector per row: pass vectors" if vectors is None
                             else "these lists keep no vectors: pass vectors=None")
        if vectors is not None and (vectors.dtype != self.vector_dtype
                                    or vectors.shape != (ids.shape[0], self.vectors.shape[1])):
            raise ValueError(f"vectors must be {self.vector_dtype} ({ids.shape[0]}, "
                             f"{self.vectors.shape[1]}), got {vectors.dtype} {vectors.shape}")
        self._pending.append((list_ids, lambda_idx, codes, ids,
                              terms if self.with_terms else np.empty(0, np.float32),
                              np.empty((ids.shape[0], 0), np.uint8) if vectors is None
                              else vectors, attributes))
        self._npending += ids.shape[0]

    def all_ids(self) -> np.ndarray:
        """Every live id, compacted and pending (any order), int64."""
        ids = self.ids if self.live is None else self.ids[rows_of(self.live, self.nrows)]
        return np.concatenate([ids, *(part[3] for part in self._pending)])

    def remove_rows(self, rows: np.ndarray) -> int:
        """Remove compacted rows (positions); returns how many were live."""
        live = np.ones(self.nrows, dtype=bool) if self.live is None else rows_of(self.live, self.nrows)
        removed = int(live[rows].sum())
        live[rows] = False
        self._ndead += removed
        self.live = bitset_of(live)
        if self._ndead * 4 >= self.nrows:
            self._keep_rows(live)
        return removed

    def purge(self) -> None:
        """Drop removed rows from the arrays now."""
        if self.live is not None:
            self._keep_rows(rows_of(self.live, self.nrows))

    def _keep_rows(self, keep: np.ndarray) -> None:
        """Drop the compacted rows where keep is False from every array."""
        counts = np.bincount(self.list_ids()[keep], minlength=self.nlists)
        codes = self.codes[keep]
        self._codes = pack_blocks(codes) if self.blocked else codes
        self.lambda_idx = self.lambda_idx[keep]
        self._set_ids(self.ids[keep])
        if self.with_terms:
            self.terms = self.terms[keep]
        if self.attributes is not None:
            self.attributes = self.attributes.filter(pa.array(keep))
        if self.vectors is not None:
            self.vectors = self.vectors[keep]
        self.offsets = np.zeros(self.nlists + 1, dtype=np.int64)
        np.cumsum(counts, out=self.offsets[1:])
        self.live, self._ndead = None, 0

    def list_ids(self) -> np.ndarray:
        """List id of every stored code (compacted part), int64."""
        return np.repeat(np.arange(self.nlists, dtype=np.int64), np.diff(self.offsets))

    def compact(self) -> bool:
        """Merge pending appends into the sorted arrays (dropping removed rows); True if
        anything changed."""
        if not self._pending:
            return False
        self.purge()
        old_terms = self.float_terms() if self.with_terms else self.terms
        old_vectors = (np.empty((self.ids.shape[0], 0), np.uint8) if self.vectors is None
                       else self.vectors)
        parts = [(self.list_ids(), self.lambda_idx, self.codes, self.ids, old_terms,
                  old_vectors)] * (self.nrows > 0)
        parts += [part[:6] for part in self._pending]
        tables = [self.attributes] * (self.nrows > 0) + [part[6] for part in self._pending]
        # one part (a load, a first add): its arrays as they are, not a concatenated copy
        list_ids, lam, codes, ids, terms, vectors = (
            parts[0] if len(parts) == 1 else (np.concatenate(p) for p in zip(*parts)))
        order = np.argsort(list_ids, kind="stable")
        if any(t is not None for t in tables):
            self.attributes = pa.concat_tables(tables).take(pa.array(order))
        codes = codes[order]
        self._codes = pack_blocks(codes) if self.blocked else codes
        self.lambda_idx = lam[order]
        if self.vectors is not None:
            self.vectors = vectors[order]
        self._set_ids(ids[order])
        self.offsets = np.zeros(self.nlists + 1, dtype=np.int64)
        np.cumsum(np.bincount(list_ids, minlength=self.nlists), out=self.offsets[1:])
        if self.with_terms:
            self._set_terms(terms[order].astype(np.float32))
        self._pending.clear()
        self._npending = 0
        return True

    def _set_terms(self, terms: np.ndarray) -> None:
        """int16 steps of one scale (the widest list's range / 65535) above each list's
        minimum."""
        counts = np.diff(self.offsets)
        full = np.flatnonzero(counts)
        low = np.zeros(self.nlists, dtype=np.float32)
        high = np.zeros(self.nlists, dtype=np.float32)
        if full.size:
            low[full] = np.minimum.reduceat(terms, self.offsets[full])
            high[full] = np.maximum.reduceat(terms, self.offsets[full])
        span = float((high.astype(np.float64) - low).max()) if full.size else 0.0
        scale = np.float32(span / 65535.0 if span > 0 else 1.0)
        list_of = np.repeat(np.arange(self.nlists, dtype=np.int32), counts)
        self.terms = np.empty(terms.shape[0], dtype=np.int16)
        for start in range(0, terms.shape[0], TERM_CHUNK):   # float64 temporaries per chunk
            rows = slice(start, start + TERM_CHUNK)
            steps = np.rint((terms[rows] - low[list_of[rows]]) / np.float64(scale)) - 32768.0
            self.terms[rows] = np.clip(steps, -32768, 32767)
        self.term_scale = scale
        self.term_base = (low + 32768.0 * np.float64(scale)).astype(np.float32)

    def _set_ids(self, ids: np.ndarray) -> None:
        """Keep ids as uint32 offsets above their minimum when they span < 2**32."""
        if ids.size == 0:
            self.id_base, self.id_offsets = 0, np.empty(0, dtype=np.uint32)
            return
        low, high = int(ids.min()), int(ids.max())
        if high - low < 1 << 32:
            self.id_base = low
            self.id_offsets = (ids - low).astype(np.uint32)
        else:
            self.id_base = 0
            self.id_offsets = ids.astype(np.int64)

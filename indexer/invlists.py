"""Inverted lists in CSR form: codes sorted by list id, with offsets.

Appends go to a pending buffer and are merged (stable sort by list id) before the next
search, so streaming adds cost one sort per search, not one per add.
"""
from __future__ import annotations

import numpy as np


class InvertedLists:
    def __init__(self, nlists: int, code_bytes: int):
        self.nlists = nlists
        self.code_bytes = code_bytes
        self.offsets = np.zeros(nlists + 1, dtype=np.int64)
        self.codes = np.empty((0, code_bytes), dtype=np.uint8)
        self.lambda_idx = np.empty(0, dtype=np.uint8)
        self.ids = np.empty(0, dtype=np.int64)
        self.terms = np.empty(0, dtype=np.float32)
        self._pending: list[tuple[np.ndarray, ...]] = []
        self._npending = 0

    def __len__(self) -> int:
        return self.ids.shape[0] + self._npending

    def append(self, list_ids, lambda_idx, codes, ids, terms) -> None:
        self._pending.append((list_ids, lambda_idx, codes, ids, terms))
        self._npending += ids.shape[0]

    def all_ids(self) -> np.ndarray:
        """Every stored id, compacted and pending (any order), int64."""
        return np.concatenate([self.ids, *(part[3] for part in self._pending)])

    def list_ids(self) -> np.ndarray:
        """List id of every stored code (compacted part), int64."""
        return np.repeat(np.arange(self.nlists, dtype=np.int64), np.diff(self.offsets))

    def compact(self) -> bool:
        """Merge pending appends into the sorted arrays; True if anything changed."""
        if not self._pending:
            return False
        parts = [(self.list_ids(), self.lambda_idx, self.codes, self.ids, self.terms)]
        parts += self._pending
        list_ids, lam, codes, ids, terms = (np.concatenate(p) for p in zip(*parts))
        order = np.argsort(list_ids, kind="stable")
        self.codes = codes[order]
        self.lambda_idx = lam[order]
        self.ids = ids[order]
        self.terms = terms[order]
        self.offsets = np.zeros(self.nlists + 1, dtype=np.int64)
        np.cumsum(np.bincount(list_ids, minlength=self.nlists), out=self.offsets[1:])
        self._pending.clear()
        self._npending = 0
        return True

"""Row sets as the scans read them: a bitset of uint32 words, bit t of word b = row 32b + t.

The fast scan's blocks are 32 rows, so a word masks one block; the scalar scans test one
bit per row. A scan given a row set returns only rows in it: deleted rows and rows a filter
excludes never take a place among the candidates (SPEC 7).
"""
from __future__ import annotations

import sys

import numpy as np

__all__ = ["bitset_of", "rows_of"]


def bitset_of(mask: np.ndarray) -> np.ndarray:
    """A boolean row mask (n,) -> its bitset, ceil(n/32) uint32 words."""
    mask = np.asarray(mask, dtype=bool)
    packed = np.packbits(mask, bitorder="little")
    words = np.zeros(-(-mask.shape[0] // 32) * 4, dtype=np.uint8)
    words[:packed.shape[0]] = packed
    out = words.view("<u4")
    return out.astype(np.uint32) if sys.byteorder != "little" else out


def rows_of(bits: np.ndarray, n: int) -> np.ndarray:
    """The boolean row mask (n,) of a bitset."""
    as_bytes = np.ascontiguousarray(bits, dtype="<u4").view(np.uint8)
    return np.unpackbits(as_bytes, bitorder="little", count=n).astype(bool)

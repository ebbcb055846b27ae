"""Routing and merging of the serving layer as pure functions (tested without Ray):
which shards a group holds, in which order a group's replicas are tried, and how the
groups' answers become one top-k."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from indexer.merge import merge_topk


def shard_groups(nshards: int, ngroups: int) -> list[tuple[int, ...]]:
    """Contiguous, balanced groups of shard numbers; at most one group per shard."""
    if nshards <= 0 or ngroups <= 0:
        raise ValueError(f"need nshards > 0 and ngroups > 0, got {nshards} and {ngroups}")
    ngroups = min(ngroups, nshards)
    return [tuple(int(s) for s in part) for part in np.array_split(np.arange(nshards), ngroups)]


def replica_order(turn: int, down_until: Sequence[float], now: float) -> list[int]:
    """Replicas to try for the `turn`-th batch: round-robin start, then the others in
    ring order; replicas that failed recently (down_until > now) last."""
    n = len(down_until)
    ring = [(turn + i) % n for i in range(n)]
    return sorted(ring, key=lambda r: down_until[r] > now)


def merge_answers(groups: Sequence[Sequence[int]], answers: Sequence, nq: int,
                  k: int, *, descending: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """The top-k over the groups that answered ((D, I) per group, None for a group
    that did not) and the shards of those that did not, in the index's order (`descending`:
    similarities, largest first; `indexer.merge.ranks_descending`). No answer at all: every
    slot empty (inf, -1), or (-inf, -1) when descending."""
    answered = [a for a in answers if a is not None]
    missing = tuple(s for g, a in zip(groups, answers) if a is None for s in g)
    if answered:
        D, I = merge_topk([a[0] for a in answered], [a[1] for a in answered], k,
                          descending=descending)
    else:
        D = np.full((nq, k), -np.inf if descending else np.inf, np.float32)
        I = np.full((nq, k), -1, np.int64)
    return D, I, missing

"""Production sizing rules: nlist from the data size, and thread control.

One place for the rules that the build (`nlist: auto`), `snapline plan`, the demo, the
serving searchers and the benchmark share:

    nlist = vlq_nlist_for(ivf_nlist_for(n_base, n_learn), n_learn)
    set_threads(2)                                    # faiss, torch, numba alike
    with blas_controller().limit(limits=1, user_api="blas"): ...
"""
from __future__ import annotations

import functools
import logging
import math
import sys

import faiss
from threadpoolctl import ThreadpoolController

__all__ = [
    "MIN_POINTS_PER_CENTROID",
    "blas_controller",
    "ivf_nlist_for",
    "set_threads",
    "vlq_nlist_for",
]

logger = logging.getLogger(__name__)

#: faiss warns when k-means gets fewer than 39 training points per centroid.
MIN_POINTS_PER_CENTROID = 39


def _cap_for_training(nlist: int, n_learn: int) -> int:
    """Halve nlist until every centroid gets >= 39 training points (faiss guidance)."""
    while nlist > 1 and n_learn < MIN_POINTS_PER_CENTROID * nlist:
        nlist //= 2
    return nlist


def ivf_nlist_for(n_base: int, n_learn: int) -> int:
    """Power of two nearest 4 sqrt(n_base), lowered until n_learn / nlist >= 39."""
    if n_base < 1 or n_learn < 1:
        raise ValueError(f"need n_base >= 1 and n_learn >= 1, got {n_base} and {n_learn}")
    nlist = 2 ** max(0, round(math.log2(4 * math.sqrt(n_base))))
    return _cap_for_training(nlist, n_learn)


def vlq_nlist_for(ivf_nlist: int, n_learn: int) -> int:
    """Half the IVF nlist (VLQ has nlist * nedge much finer lists), same >= 39 rule."""
    return _cap_for_training(max(1, ivf_nlist // 2), n_learn)


def set_threads(n: int) -> dict[str, int]:
    """The same thread count for faiss, and for torch and numba when they are loaded."""
    faiss.omp_set_num_threads(n)
    settings = {"faiss": n}
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
        settings["torch"] = n
    numba = sys.modules.get("numba")
    if numba is not None:
        try:
            numba.set_num_threads(n)
            settings["numba"] = n
        except ValueError as exc:  # n above NUMBA_NUM_THREADS fixed at numba import
            logger.warning("numba threads left at %d: %s", numba.get_num_threads(), exc)
            settings["numba"] = numba.get_num_threads()
    return settings


@functools.cache
def blas_controller() -> ThreadpoolController:
    """numpy's pthreads BLAS, found once (scanning libraries costs ~2 ms per call).

    OpenMP-threaded BLAS builds (faiss-cpu bundles one) are left alone: changing their
    thread count resets the OpenMP runtime that numba's parallel loops share, which was
    measured to slow the scan 3x."""
    controller = ThreadpoolController()
    paths = [lib.filepath for lib in controller.select(user_api="blas").lib_controllers
             if lib.info().get("threading_layer") != "openmp"]
    return controller.select(filepath=paths)

"""The native extension indexer._fastscan (indexer/_fastscan.cpp, _prepare.cpp, _refine.cpp;
built by `pip install -e .`) and the SIMD level its kernels run at.

    if native_available(): kernel("scan4")(..., threads, level_index())
    set_level("portable")     # tests and benchmarks; returns the previous level

The level is this CPU's best ("avx512" needs avx512f and avx512bw, then "avx2", else
"portable"), capped by the environment variable SNAPLINE_SIMD=portable|avx2|avx512 (read at
import). Every kernel has a numba twin (the reference), used where the extension is not built.
"""
from __future__ import annotations

import logging
import os
import warnings

import numba
import numpy as np

try:
    from indexer import _fastscan as _extension
except ImportError:  # not built (e.g. a source tree without `pip install -e .`)
    _extension = None

__all__ = ["LEVELS", "cpu_level", "kernel", "level_index", "native_available",
           "resolve_backend", "resolve_threads", "set_level", "simd_level"]

logger = logging.getLogger(__name__)

LEVELS = ("portable", "avx2", "avx512")


def native_available() -> bool:
    """Whether the native extension indexer._fastscan is built and importable."""
    return _extension is not None


def cpu_level() -> str:
    """This CPU's best level ("portable" without the extension)."""
    return LEVELS[_extension.cpu_level()] if _extension is not None else "portable"


def initial_level() -> str:
    """The best level of this CPU, capped by SNAPLINE_SIMD."""
    best = cpu_level()
    raw = os.environ.get("SNAPLINE_SIMD", "").strip()
    if not raw:
        return best
    if raw.lower() not in LEVELS:
        raise ValueError(f"SNAPLINE_SIMD={raw!r}: expected one of {', '.join(LEVELS)}")
    wanted = raw.lower()
    if LEVELS.index(wanted) > LEVELS.index(best):
        warnings.warn(f"SNAPLINE_SIMD={wanted}: this CPU supports only {best}; using {best}",
                      RuntimeWarning, stacklevel=2)
        return best
    return wanted


_level = initial_level()
_auto_logged = False


def simd_level() -> str:
    """What the native kernels run on this machine: "avx512", "avx2" or "portable" (the
    CPU's best level, capped by SNAPLINE_SIMD). Raises RuntimeError if it is not built."""
    if _extension is None:
        raise RuntimeError("indexer._fastscan is not built: run `pip install -e .` in the repository")
    return _level


def level_index() -> int:
    """The level as the kernels take it (0 portable, 1 avx2, 2 avx512)."""
    return LEVELS.index(simd_level())


def set_level(level: str) -> str:
    """Set the native level (for tests and benchmarks); returns the previous one."""
    global _level
    if level not in LEVELS:
        raise ValueError(f"level={level!r}: expected one of {', '.join(LEVELS)}")
    if LEVELS.index(level) > LEVELS.index(cpu_level()):
        raise ValueError(f"level={level!r}: this CPU supports only {cpu_level()}")
    previous, _level = _level, level
    return previous


def kernel(name: str):
    """The extension's function `name` (RuntimeError when it is not built)."""
    if _extension is None:
        raise RuntimeError("indexer._fastscan is not built: run `pip install -e .` in the repository")
    return getattr(_extension, name)


def resolve_backend(backend: str) -> str:
    """"native" or "numba" for a backend argument ("auto": native when built)."""
    global _auto_logged
    if backend not in ("auto", "native", "numba"):
        raise ValueError(f"backend={backend!r}: expected 'auto', 'native' or 'numba'")
    if backend == "native" and _extension is None:
        raise ValueError("backend='native': indexer._fastscan is not built (run `pip install -e .`)")
    if backend != "auto":
        return backend
    chosen = "native" if _extension is not None else "numba"
    if not _auto_logged:
        logger.info("native kernels: %s%s", chosen, f" ({_level})" if _extension is not None else "")
        _auto_logged = True
    return chosen


def resolve_threads(threads) -> int:
    """Threads for a native kernel: None = numba's thread count."""
    if threads is None:
        return numba.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1 or None, got {threads!r}")
    return int(threads)

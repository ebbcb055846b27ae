"""Builds the native kernels (indexer._fastscan: the fast scan and exact re-rank in
indexer/_fastscan.cpp, the refinement in indexer/_refine.cpp, the probes, lines and quantized
tables in indexer/_prepare.cpp) with the setuptools backend of pyproject.toml: `pip install -e .`
compiles it. Plain gcc flags, no -march: the AVX2 and AVX-512 paths are chosen at run time, so
the build runs on any x86-64 (and the portable path on other architectures). -ffp-contract=off
keeps multiplications and additions separate (no FMA), which the bitwise equality with the
numba reference relies on."""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "indexer._fastscan",
            ["indexer/_fastscan.cpp", "indexer/_refine.cpp", "indexer/_prepare.cpp"],
            depends=["indexer/_native.h"],
            extra_compile_args=["-O3", "-ffp-contract=off", "-std=c++17", "-pthread"],
            extra_link_args=["-pthread"],
            language="c++",
        )
    ]
)

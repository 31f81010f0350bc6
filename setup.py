"""Builds the C extension of xtc's low-bit kernels (everything else is in pyproject.toml).

The AVX2 paths are compiled with per-function target attributes and chosen at run
time after a CPU check, so one build runs on any x86-64 CPU (and the portable
reference builds everywhere else).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "xtc.kernels._lowbit",
            sources=[f"src/xtc/kernels/{name}.c" for name in ("gemm", "forward", "threads", "module")],
            depends=["src/xtc/kernels/lowbit.h", "src/xtc/kernels/forward.h"],
            extra_compile_args=["-O3", "-std=c11", "-pthread", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-psabi",  # forward.c's vector types: always inlined, no ABI to keep
                                "-fno-trapping-math",  # lets GELU's and exp's selects vectorize; same bits
                                "-ffp-contract=off"],  # no implicit FMAs (GCC's -std=c11 default; not clang's):
                                # the float order that xtc.quant.runtime_order repeats
            extra_link_args=["-pthread"],
            libraries=["dl"],  # dlopen: finding the process's OpenMP runtime (glibc < 2.34)
        )
    ]
)

"""Low-bit CPU kernels (C, in ``lowbit.c``) behind a small numpy interface.

Shapes: activations ``(M, K)`` (tokens x features), packed weight planes
``(N, ceil(K / 8))`` (output rows x bytes), accumulators ``(M, N)`` int32.
``reference=True`` forces the portable scalar path (tests compare it with the
AVX2 path bit for bit).
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from xtc.kernels import _lowbit

# Kernels release the GIL: tokens (rows of the activations) are split across this many threads.
_threads = 1
_pool: ThreadPoolExecutor | None = None


def set_num_threads(n: int) -> None:
    """Threads for the kernels (like torch.set_num_threads); each takes a slice of the tokens."""
    global _threads, _pool
    if n < 1:
        raise ValueError("threads must be >= 1")
    if _pool is not None:
        _pool.shutdown()
    _threads, _pool = n, (ThreadPoolExecutor(n) if n > 1 else None)


def get_num_threads() -> int:
    return _threads

has_avx2 = _lowbit.has_avx2


def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-token symmetric 8-bit: ``(q int8 (M, K), scale float32 (M,))``, as the fake-quant does it."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    assert x.ndim == 2, x.shape
    q = np.empty(x.shape, np.int8)
    scale = np.empty(x.shape[0], np.float32)
    _lowbit.quantize_rows(x, x.shape[0], x.shape[1], q, scale)
    return q, scale


def gemm_sign(q: np.ndarray, plane: np.ndarray, reference: bool = False) -> np.ndarray:
    """``acc[m, n] = sum_k q[m, k] * bit_k(plane[n])``, exact int32."""
    (m, k), n = q.shape, plane.shape[0]
    assert q.dtype == np.int8 and plane.dtype == np.uint8 and plane.shape[1] == (k + 7) // 8
    q, plane = np.ascontiguousarray(q), np.ascontiguousarray(plane)
    acc = np.empty((m, n), np.int32)
    if _pool is None or m < 2 * _threads:
        _lowbit.gemm_sign(q, plane, m, n, k, acc, reference)
        return acc
    bounds = np.linspace(0, m, _threads + 1).astype(int)  # contiguous token slices
    jobs = [_pool.submit(_lowbit.gemm_sign, q[a:b], plane, b - a, n, k, acc[a:b], reference)
            for a, b in zip(bounds[:-1], bounds[1:])]
    for job in jobs:
        job.result()
    return acc


def binary_matmul(q: np.ndarray, sign_bits: np.ndarray, reference: bool = False) -> np.ndarray:
    """``q @ signs.T`` for ±1 weights packed as sign bits (1 = +1): ``2 * masked_sum - sum(q)``."""
    row_sums = q.sum(axis=1, dtype=np.int32)[:, None]  # (M, 1)
    return 2 * gemm_sign(q, sign_bits, reference) - row_sums


def ternary_planes(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """{-1, 0, +1} codes (N, K) -> (plus, minus) bit planes, each (N, ceil(K / 8))."""
    plus = np.packbits(codes > 0, axis=1, bitorder="little")
    minus = np.packbits(codes < 0, axis=1, bitorder="little")
    return plus, minus


def ternary_matmul(q: np.ndarray, plus: np.ndarray, minus: np.ndarray, reference: bool = False) -> np.ndarray:
    """``q @ codes.T`` for ternary weights given as bit planes: ``masked_sum(plus) - masked_sum(minus)``."""
    return gemm_sign(q, plus, reference) - gemm_sign(q, minus, reference)


__all__ = ["binary_matmul", "gemm_sign", "get_num_threads", "has_avx2", "quantize_rows", "set_num_threads",
           "ternary_matmul", "ternary_planes"]

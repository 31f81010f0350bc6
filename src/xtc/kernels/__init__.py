"""Low-bit CPU kernels (C: ``lowbit.h`` states what they compute) behind a small numpy interface.

Shapes: activations ``(M, K)`` (tokens x features), weight codes ``(N, K)``
(outputs x features) in {-1, +1} or {-1, 0, +1}, results ``(M, N)``.
``prepare`` turns weight codes into the kernels' bit layout once (at load time);
``linear`` then runs ``quantize(x) @ codes.T * scales + bias`` with the per-token
8-bit activation quantization fused in. ``path`` picks a kernel path (``"reference"``,
``"avx2"``, ``"avx512-vnni"``; default: the fastest this CPU runs): every path
gives the same numbers bit for bit (tests compare them).
``prepare_codes`` is the numpy-free half of ``prepare`` (the engine's load imports no numpy).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xtc.kernels import _lowbit

if TYPE_CHECKING:
    import numpy as np

_API_VERSION = 5  # of the C functions this module calls (API_VERSION in module.c)
if getattr(_lowbit, "API_VERSION", 1) != _API_VERSION:
    raise ImportError(f"xtc's C kernels ({_lowbit.__file__}) are an older build than its Python code; rebuild them: "
                      "pip install -e . (or python setup.py build_ext --inplace)")

PATHS: list[str] = _lowbit.available_paths()  # slowest first; "reference" always
_PATH_IDS = {"reference": 1, "avx2": 2, "avx512-vnni": 3}
_MR, _PANEL = 6, 16  # as in lowbit.h: rows per micro-kernel, rows per panel

# Default threads of the kernels called from here (the packed runtime passes torch's count instead).
_threads = 1


def set_num_threads(n: int) -> None:
    """Default threads of ``linear``, ``matmul_codes`` and ``quantize_rows``: each takes a share of the
    output columns (of the tokens, when quantizing); see ``threading`` for what runs them."""
    global _threads
    if n < 1:
        raise ValueError("threads must be >= 1")
    _threads = n


def get_num_threads() -> int:
    return _threads


def threading() -> str:
    """What runs the kernels' threads: ``"openmp (LIB)"``, the process's OpenMP team (torch's,
    once torch is imported; sharing it keeps the two from fighting for cores), else ``"pthreads"``."""
    return _lowbit.threading()


def path_id(path: str | None) -> int:
    if path is None:
        return 0
    if path not in PATHS:
        raise ValueError(f"kernel path {path!r} is not available here; available: {', '.join(PATHS)}")
    return _PATH_IDS[path]


@dataclass(frozen=True)
class LowbitWeights:
    """Weight codes (N, K) in the kernels' layout: panels of 16 rows, 4 inputs per byte lane.

    ``neg``/``nonzero``: uint64 (ceil(N / 16), ceil(K / 4)), bit ``c * 4 + t`` of word ``(p, j)``
    is weight ``(16 p + c, 4 j + t)``; ``nonzero`` is None for binary weights (never 0).
    ``colsum``: int32 (N,), the sum of each padded row (corrects the kernels' +128 activation offset).
    """

    neg: np.ndarray
    nonzero: np.ndarray | None
    colsum: np.ndarray
    out_features: int
    in_features: int

    @property
    def padded_in_features(self) -> int:
        return self.neg.shape[1] * 4

    @property
    def nbytes(self) -> int:
        return self.neg.nbytes + (0 if self.nonzero is None else self.nonzero.nbytes) + self.colsum.nbytes


def prepare_codes(codes, n: int, k: int, bits: int) -> tuple[int, array, array | None, array]:
    """A buffer of ``n * k`` int8 weight codes (rows of ``k``), {-1, +1} for ``bits=1`` or {-1, 0, +1} for
    ``bits=2`` -> the kernels' layout, ``(padded_in_features, neg, nonzero, colsum)`` as flat arrays (uint64,
    uint64 or None, int32; see ``LowbitWeights``). In C: building it in numpy was most of a 3-layer engine's
    start."""
    if bits not in (1, 2):
        raise ValueError(f"bits must be 1 or 2, got {bits}")
    lanes = -(-k // 4)
    words = -(-n // _PANEL) * lanes
    neg, nonzero = array("Q", bytes(8 * words)), None if bits == 1 else array("Q", bytes(8 * words))
    colsum = array("i", bytes(4 * n))
    if not _lowbit.prepare(codes, n, k, lanes * 4, neg, nonzero, colsum):
        raise ValueError("binary codes must all be -1 or +1" if bits == 1 else "ternary codes must all be -1, 0 or +1")
    return lanes * 4, neg, nonzero, colsum


def prepare(codes: np.ndarray, bits: int) -> LowbitWeights:
    """int8 codes (N, K), {-1, +1} for ``bits=1`` or {-1, 0, +1} for ``bits=2`` -> the kernels' layout."""
    import numpy as np

    codes = np.asarray(codes)
    if codes.dtype.kind not in "iu" or (codes.dtype != np.int8 and codes.size and (codes.min() < -1 or codes.max() > 1)):
        raise ValueError(f"weight codes must be integers in -1..1, got {codes.dtype} values")  # before int8 wraps them
    codes = np.ascontiguousarray(codes, np.int8)
    n, k = codes.shape
    kp, neg, nonzero, colsum = prepare_codes(codes, n, k, bits)
    words = (-(-n // _PANEL), kp // 4)
    return LowbitWeights(neg=np.frombuffer(neg, np.uint64).reshape(words),
                         nonzero=None if nonzero is None else np.frombuffer(nonzero, np.uint64).reshape(words),
                         colsum=np.frombuffer(colsum, np.int32), out_features=n, in_features=k)


def quantize_rows(x: np.ndarray, padded_in_features: int | None = None,
                  path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-token symmetric 8-bit codes, as the fake-quant makes them.

    Returns ``(a, scale)``: ``a`` uint8 (M rounded up to 6, padded_in_features) holding
    code + 128 (padding: code 0), ``scale`` float32 (M,).
    """
    import numpy as np

    x = np.ascontiguousarray(x, dtype=np.float32)
    assert x.ndim == 2, x.shape
    m, k = x.shape
    kp = padded_in_features or -(-k // 4) * 4
    a = np.empty((-(-m // _MR) * _MR, kp), np.uint8)
    scale = np.empty(m, np.float32)
    _lowbit.quantize_rows(x, m, k, a, a.shape[0], kp, scale, path_id(path), _threads)
    return a, scale


def matmul_codes(q: np.ndarray, weights: LowbitWeights, path: str | None = None) -> np.ndarray:
    """``q @ codes.T`` for int8 activation codes q (M, K): the exact int32 accumulators."""
    import numpy as np

    m, k = q.shape
    assert q.dtype == np.int8 and k == weights.in_features, (q.dtype, k, weights.in_features)
    a = np.full((-(-m // _MR) * _MR, weights.padded_in_features), 128, np.uint8)
    a[:m, :k] = q.astype(np.int16) + 128
    acc = np.empty((m, weights.out_features), np.int32)
    _lowbit.gemm(a, m, weights.padded_in_features, weights.neg, weights.nonzero, weights.colsum,
                 weights.out_features, acc, path_id(path), _threads)
    return acc


def linear(x: np.ndarray, weights: LowbitWeights, alpha: np.ndarray, bias: np.ndarray | None = None,
           path: str | None = None, threads: int | None = None) -> np.ndarray:
    """W1A8 / W2A8 Linear: x float32 (M, K) -> ``acc * (scale_m * alpha_n) + bias_n``, float32 (M, N).

    One call into C: the per-token quantization (``quantize_rows``) and the product, both split
    across ``threads`` (default: ``get_num_threads()``). ``alpha``: float32, one weight scale
    (size 1) or one per output row (size N).
    """
    import numpy as np

    x = np.ascontiguousarray(x, dtype=np.float32)
    assert x.ndim == 2 and x.shape[1] == weights.in_features, (x.shape, weights.in_features)
    m = x.shape[0]
    y = np.empty((m, weights.out_features), np.float32)
    alpha = np.ascontiguousarray(alpha, np.float32).reshape(-1)
    bias = None if bias is None else np.ascontiguousarray(bias, np.float32).reshape(-1)
    _lowbit.linear(x, m, weights.in_features, weights.padded_in_features, weights.neg, weights.nonzero,
                   weights.colsum, weights.out_features, alpha, bias, y, path_id(path), threads or _threads)
    return y


__all__ = ["PATHS", "LowbitWeights", "get_num_threads", "linear", "matmul_codes", "prepare", "prepare_codes",
           "quantize_rows", "set_num_threads", "threading"]

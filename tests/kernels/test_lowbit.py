"""The C kernels: exact integer accumulators on every path, bit-identical float outputs across paths,
and the fake-quant's activation codes."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from xtc import kernels
from xtc.quant.primitives import symmetric_codes

# (M, N, K): tokens, outputs, features; most are not multiples of the kernels' blocks (6 tokens,
# 16 or 64 outputs, 4 features); every count of rows left after the 6-row blocks (AVX2 has a kernel each)
SHAPES = [(1, 1, 1), (3, 5, 31), (6, 16, 4), (5, 7, 33), (9, 13, 100), (128, 40, 384), (7, 130, 517),
          (13, 64, 1536), (2, 65, 3), (4, 17, 70), (16, 48, 384)]
PATHS = kernels.PATHS


def random_codes(rng, m, k):
    q = rng.integers(-128, 128, (m, k)).astype(np.int8)
    q[0, : min(k, 3)] = [-128, 127, -128][: min(k, 3)]  # the extremes
    return q


def random_weights(rng, bits, n, k):
    return rng.choice([-1, 1] if bits == 1 else [-1, 0, 1], (n, k)).astype(np.int8)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bits", [1, 2])
@pytest.mark.parametrize("path", PATHS)
def test_accumulators_are_exact(shape, bits, path):
    m, n, k = shape
    rng = np.random.default_rng(m * 1000 + n * 10 + k + bits)
    q, codes = random_codes(rng, m, k), random_weights(rng, bits, n, k)
    expected = q.astype(np.int64) @ codes.T.astype(np.int64)
    assert np.array_equal(kernels.matmul_codes(q, kernels.prepare(codes, bits), path), expected)


def test_worst_case_magnitude_does_not_overflow():
    k = 4096
    q = np.full((2, k), -128, np.int8)
    for path in PATHS:
        for bits in (1, 2):
            weights = kernels.prepare(np.ones((3, k), np.int8), bits)
            assert (kernels.matmul_codes(q, weights, path) == -128 * k).all(), (path, bits)


@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 7, 33), (128, 40, 384), (7, 130, 517)])
@pytest.mark.parametrize("bits", [1, 2])
def test_linear_is_bit_identical_on_every_path_and_matches_float_math(shape, bits):
    m, n, k = shape
    rng = np.random.default_rng(n + k)
    x = (rng.standard_normal((m, k)) * rng.uniform(0.01, 10, (m, 1))).astype(np.float32)
    codes = random_weights(rng, bits, n, k)
    weights = kernels.prepare(codes, bits)
    bias = rng.standard_normal(n).astype(np.float32)
    for alpha in (np.float32([0.3]), rng.uniform(0.1, 1, n).astype(np.float32)):
        outputs = [kernels.linear(x, weights, alpha, bias, path) for path in PATHS]
        for path, y in zip(PATHS[1:], outputs[1:]):
            assert np.array_equal(y, outputs[0]), path
        a, scale = kernels.quantize_rows(x)
        q = (a[:m, :k].astype(np.int16) - 128).astype(np.int8)
        expected = (q.astype(np.int64) @ codes.T).astype(np.float32) * (scale[:, None] * alpha) + bias
        np.testing.assert_allclose(outputs[0], expected, rtol=1e-6, atol=1e-6)


def test_linear_without_bias():
    rng = np.random.default_rng(3)
    x, codes = rng.standard_normal((4, 20)).astype(np.float32), random_weights(rng, 1, 3, 20)
    y = kernels.linear(x, kernels.prepare(codes, 1), np.float32([2.0]))
    a, scale = kernels.quantize_rows(x)
    q = a[:4, :20].astype(np.int64) - 128
    np.testing.assert_allclose(y, (q @ codes.T) * scale[:, None] * 2.0, rtol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1), (7, 33), (128, 384), (3, 1536)])
@pytest.mark.parametrize("path", PATHS)
def test_activation_codes_match_the_fake_quant(shape, path):
    rng = np.random.default_rng(shape[1])
    x = (rng.standard_normal(shape) * rng.uniform(0.01, 10, (shape[0], 1))).astype(np.float32)
    x[0, 0] = -np.abs(x[0]).max()  # a value at -max: code -128
    if shape[0] > 2:
        x[2] = 0.0  # an all-zero token
    a, scale = kernels.quantize_rows(x, path=path)
    codes, scales = symmetric_codes(torch.from_numpy(x), 8, "row")
    m, k = shape
    assert np.array_equal(a[:m, :k].astype(np.int16) - 128, codes.numpy())
    assert np.array_equal(scale, scales.numpy().reshape(-1))
    assert (a[m:] == 128).all() and (a[:, k:] == 128).all()  # padding is code 0


@pytest.mark.parametrize("path", PATHS)
def test_activation_codes_at_rounding_ties_and_tiny_scales_match_the_fake_quant(path):
    """The AVX-512 path multiplies by 1 / scale and divides only near a tie: values at and 1-3 ulp
    around every half-integer multiple of the scale, and scales so small that 1 / scale overflows."""
    rows = []
    for s in (np.float32(0.0123457), np.float32(3.3e-3), np.float32(0.7071068)):
        ties = (np.arange(-128, 128, dtype=np.float32) + np.float32(0.5)) * s
        near = [np.nextafter(ties, np.float32(sign * np.inf) * np.ones_like(ties)) for sign in (-1, 1)]
        row = np.concatenate([[128 * s], ties, *near, near[0] - ties * np.float32(2 ** -22)]).astype(np.float32)
        rows.append(row)
    k = len(rows[0])
    tiny = np.random.default_rng(0).standard_normal((2, k)).astype(np.float32)
    tiny[0] *= np.float32(1e-36) / np.abs(tiny[0]).max()  # scale subnormal, its reciprocal finite
    tiny[1] *= np.float32(1e-40) / np.abs(tiny[1]).max()  # scale subnormal, its reciprocal infinite
    x = np.stack([*rows, *tiny]).astype(np.float32)
    a, scale = kernels.quantize_rows(x, path=path)
    codes, scales = symmetric_codes(torch.from_numpy(x), 8, "row")
    assert np.array_equal(scale, scales.numpy().reshape(-1))
    assert np.array_equal(a[: len(x), :k].astype(np.int16) - 128, codes.numpy())


THREAD_SPLIT = """
import sys
import numpy as np
if sys.argv[1] == "torch":
    import torch  # brings its OpenMP runtime, whose team the kernels then share
from xtc import kernels
rng = np.random.default_rng(7)
x, codes = rng.standard_normal((37, 300)).astype(np.float32), rng.choice([-1, 0, 1], (200, 300)).astype(np.int8)
weights, alpha = kernels.prepare(codes, 2), rng.uniform(0.1, 1, 200).astype(np.float32)
single = kernels.linear(x, weights, alpha)
kernels.set_num_threads(3)
assert np.array_equal(kernels.linear(x, weights, alpha), single)
print(kernels.threading())
"""


@pytest.mark.parametrize("runtime, env, expected", [
    ("numpy", {}, "pthreads"),                            # no OpenMP runtime in the process
    ("torch", {}, "openmp ("),  # torch's team runs the shares
    ("torch", {"OMP_THREAD_LIMIT": "1"}, "openmp ("),  # a team of 1 still runs all 3 shares
])
def test_threads_split_columns_and_give_the_same_numbers(runtime, env, expected):
    out = subprocess.run([sys.executable, "-c", THREAD_SPLIT, runtime], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(expected)


@pytest.mark.parametrize("bits", [1, 2])
def test_prepare_writes_the_layout_lowbit_h_defines(bits):
    """Bit c * 4 + t of word (p, j) is weight (16 p + c, 4 j + t); padding: no bits, binary colsum counts +1s."""
    codes = np.random.default_rng(bits).integers(-1, 2, (37, 11)).astype(np.int8)  # 37, 11: not block multiples
    if bits == 1:
        codes[codes == 0] = 1
    w = kernels.prepare(codes, bits)
    padded = np.zeros((48, 12), np.int8)
    padded[:37, :11] = codes
    p, c, j, t = np.meshgrid(*map(np.arange, (3, 16, 3, 4)), indexing="ij")
    for plane, expected in [(w.neg, padded < 0), (w.nonzero, padded != 0)][:bits]:
        assert np.array_equal((plane[p, j] >> (c * 4 + t).astype(np.uint64)) & 1, expected[16 * p + c, 4 * j + t])
    assert np.array_equal(w.colsum, codes.sum(axis=1) + (1 if bits == 1 else 0))


def test_bad_codes_and_paths_are_refused():
    with pytest.raises(ValueError, match="binary codes"):
        kernels.prepare(np.zeros((2, 3), np.int8), 1)
    with pytest.raises(ValueError, match="ternary codes"):
        kernels.prepare(np.full((2, 3), 2, np.int8), 2)
    with pytest.raises(ValueError, match="ternary codes"):
        kernels.prepare(np.full((2, 3), -128, np.int8), 2)
    with pytest.raises(ValueError, match="available"):
        kernels.linear(np.zeros((1, 3), np.float32), kernels.prepare(np.ones((2, 3), np.int8), 1),
                       np.float32([1]), path="neon")


def test_weights_stay_packed_in_memory():
    n, k = 768, 3072
    binary = kernels.prepare(np.ones((n, k), np.int8), 1)
    ternary = kernels.prepare(np.ones((n, k), np.int8), 2)
    assert binary.nbytes <= n * k / 8 + 4 * n and ternary.nbytes <= n * k / 4 + 4 * n

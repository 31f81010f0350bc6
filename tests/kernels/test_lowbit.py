"""The C kernels: exact integer accumulators on both paths, and the fake-quant's activation codes."""

import numpy as np
import pytest
import torch

from xtc import kernels
from xtc.packed import bits as packing
from xtc.quant.primitives import symmetric_codes

# (M, N, K): tokens, output rows, features; many are not multiples of 4 (tokens), 8 or 32 (features)
SHAPES = [(1, 1, 1), (3, 5, 31), (4, 8, 32), (5, 7, 33), (9, 13, 100), (128, 40, 384), (6, 3, 1536), (2, 17, 517)]
PATHS = [True, False] if kernels.has_avx2() else [True]


def random_codes(rng, m, k):
    q = rng.integers(-128, 128, (m, k)).astype(np.int8)
    q[0, : min(k, 3)] = [-128, 127, -128][: min(k, 3)]  # the extremes
    return q


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reference", PATHS)
def test_binary_accumulators_are_exact(shape, reference):
    m, n, k = shape
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    q, signs = random_codes(rng, m, k), rng.choice([-1, 1], (n, k)).astype(np.int8)
    expected = q.astype(np.int64) @ signs.T.astype(np.int64)
    assert np.array_equal(kernels.binary_matmul(q, packing.pack_signs(signs), reference), expected)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reference", PATHS)
def test_ternary_accumulators_are_exact(shape, reference):
    m, n, k = shape
    rng = np.random.default_rng(m + n + k)
    q, codes = random_codes(rng, m, k), rng.choice([-1, 0, 1], (n, k)).astype(np.int8)
    plus, minus = kernels.ternary_planes(codes)
    expected = q.astype(np.int64) @ codes.T.astype(np.int64)
    assert np.array_equal(kernels.ternary_matmul(q, plus, minus, reference), expected)


def test_worst_case_magnitude_does_not_overflow():
    k = 4096
    q = np.full((2, k), -128, np.int8)
    signs = np.ones((3, k), np.int8)
    for reference in PATHS:
        assert (kernels.binary_matmul(q, packing.pack_signs(signs), reference) == -128 * k).all()


@pytest.mark.parametrize("shape", [(1, 1), (7, 33), (128, 384), (3, 1536)])
def test_activation_codes_match_the_fake_quant(shape):
    rng = np.random.default_rng(shape[1])
    x = (rng.standard_normal(shape) * rng.uniform(0.01, 10, (shape[0], 1))).astype(np.float32)
    x[0, 0] = -np.abs(x[0]).max()  # a value at -max: code -128
    if shape[0] > 2:
        x[2] = 0.0  # an all-zero token
    q, scale = kernels.quantize_rows(x)
    codes, scales = symmetric_codes(torch.from_numpy(x), 8, "row")
    assert np.array_equal(q, codes.numpy()) and np.array_equal(scale, scales.numpy().reshape(-1))


def test_threads_split_tokens_and_give_the_same_integers():
    rng = np.random.default_rng(7)
    q, signs = random_codes(rng, 37, 300), rng.choice([-1, 1], (11, 300)).astype(np.int8)
    single = kernels.binary_matmul(q, packing.pack_signs(signs))
    kernels.set_num_threads(2)
    try:
        assert np.array_equal(kernels.binary_matmul(q, packing.pack_signs(signs)), single)
    finally:
        kernels.set_num_threads(1)

"""Bit packing: round trips on shapes that are not multiples of the per-byte counts, and fixed bytes."""

import numpy as np
import pytest

from xtc.packed import bits

SHAPES = [(1, 1), (3, 13), (7, 40), (2, 9), (5, 383)]


@pytest.mark.parametrize("shape", SHAPES)
def test_round_trips(shape):
    rng = np.random.default_rng(sum(shape))
    signs = rng.choice([-1, 1], shape).astype(np.int8)
    trits = rng.choice([-1, 0, 1], shape).astype(np.int8)
    assert np.array_equal(bits.unpack_signs(bits.pack_signs(signs), shape[1]), signs)
    assert np.array_equal(bits.unpack_ternary2(bits.pack_ternary2(trits), shape[1]), trits)
    assert np.array_equal(bits.unpack_trits(bits.pack_trits(trits), shape[1]), trits)
    rows, cols = shape
    assert bits.pack_signs(signs).shape == (rows, -(-cols // 8))
    assert bits.pack_ternary2(trits).shape == (rows, -(-cols // 4))
    assert bits.pack_trits(trits).shape == (rows, -(-cols // 5))


def test_byte_layout_is_little_endian_per_row():
    signs = np.array([[1, -1, -1, 1, 1, 1, 1, 1, -1, 1]], np.int8)
    assert bits.pack_signs(signs).tolist() == [[0b11111001, 0b10]]
    trits = np.array([[1, -1, 0, 1, -1]], np.int8)
    assert bits.pack_ternary2(trits).tolist() == [[0b01_00_10_01, 0b10]]
    # (t + 1) in base 3, least significant first: 2 + 0*3 + 1*9 + 2*27 + 0*81
    assert bits.pack_trits(trits).tolist() == [[2 + 9 + 54]]


def test_invalid_codes_are_refused():
    with pytest.raises(ValueError, match="0b11"):
        bits.unpack_ternary2(np.array([[0b11]], np.uint8), 1)
    with pytest.raises(ValueError, match="above 242"):
        bits.unpack_trits(np.array([[243]], np.uint8), 1)

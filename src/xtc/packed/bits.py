"""Bit packing of quantized weight codes, row by row (SPEC.md, "Encodings").

Every function takes or returns 2-D arrays ``(rows, cols)``; each row is packed
on its own, its last byte padded, so a kernel can start every row on a byte
boundary. Bit and trit order is little-endian: weight ``j`` of a row sits in
byte ``j // per_byte`` at position ``j % per_byte``.
"""

import numpy as np

from xtc.packed.layout import MAX_TRIT_BYTE

TERNARY2_CODE = {0: 0b00, 1: 0b01, -1: 0b10}  # 0b11 is invalid


def pack_signs(signs: np.ndarray) -> np.ndarray:
    """±1 int8 ``(rows, cols)`` -> uint8 ``(rows, ceil(cols / 8))``; bit 1 means +1."""
    assert signs.ndim == 2 and np.isin(signs, (-1, 1)).all()
    return np.packbits(signs > 0, axis=1, bitorder="little")


def unpack_signs(packed: np.ndarray, cols: int) -> np.ndarray:
    bits = np.unpackbits(packed, axis=1, count=cols, bitorder="little")
    return bits.astype(np.int8) * 2 - 1


def pack_ternary2(codes: np.ndarray) -> np.ndarray:
    """{-1, 0, +1} int8 ``(rows, cols)`` -> uint8 ``(rows, ceil(cols / 4))``, 2 bits per weight."""
    assert codes.ndim == 2 and np.isin(codes, (-1, 0, 1)).all()
    rows, cols = codes.shape
    two_bits = np.where(codes < 0, 0b10, codes).astype(np.uint8)
    two_bits = np.pad(two_bits, ((0, 0), (0, -cols % 4))).reshape(rows, -1, 4)
    return (two_bits << np.array([0, 2, 4, 6], dtype=np.uint8)).sum(-1, dtype=np.uint8)


def unpack_ternary2(packed: np.ndarray, cols: int) -> np.ndarray:
    """Inverse of ``pack_ternary2``; raises ValueError on the invalid code 0b11."""
    two_bits = (packed[:, :, None] >> np.array([0, 2, 4, 6], dtype=np.uint8)) & 0b11
    two_bits = two_bits.reshape(packed.shape[0], -1)[:, :cols]
    if (two_bits == 0b11).any():
        raise ValueError("invalid 2-bit ternary code 0b11")
    return np.where(two_bits == 0b10, -1, two_bits).astype(np.int8)


def pack_trits(codes: np.ndarray) -> np.ndarray:
    """{-1, 0, +1} int8 ``(rows, cols)`` -> uint8 ``(rows, ceil(cols / 5))``: 5 weights per byte (1.6 bits).

    byte = sum_i (code_i + 1) * 3**i over the byte's five weights; padding weights are 0.
    """
    assert codes.ndim == 2 and np.isin(codes, (-1, 0, 1)).all()
    rows, cols = codes.shape
    trits = np.pad(codes.astype(np.int16) + 1, ((0, 0), (0, -cols % 5)), constant_values=1)
    return (trits.reshape(rows, -1, 5) * 3 ** np.arange(5)).sum(-1).astype(np.uint8)


def unpack_trits(packed: np.ndarray, cols: int) -> np.ndarray:
    """Inverse of ``pack_trits``; raises ValueError on a byte above 242."""
    if (packed > MAX_TRIT_BYTE).any():
        raise ValueError(f"invalid base-3 byte above {MAX_TRIT_BYTE}")
    trits = (packed[:, :, None].astype(np.int16) // 3 ** np.arange(5)) % 3
    return (trits.reshape(packed.shape[0], -1)[:, :cols] - 1).astype(np.int8)

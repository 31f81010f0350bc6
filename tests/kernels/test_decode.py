"""The C decoders the engine loads a packed file with (no numpy): the same codes and floats as the codecs."""

import numpy as np
import pytest

from xtc.engine import _WORD_KINDS
from xtc.kernels import _lowbit
from xtc.packed.codecs import CODECS, SCALE

ROWS, COLS = 7, 37  # not multiples of 8, 4 or 5: every packing has a partial last byte


def _codes(encoding: str, rng) -> np.ndarray:
    values = (-1, 1) if encoding == "binary" else (-1, 0, 1)
    return rng.choice(np.int8(values), (ROWS, COLS))


@pytest.mark.parametrize("encoding", ["binary", "ternary2", "ternary_base3"])
@pytest.mark.parametrize("scales", [1, ROWS])
def test_packed_rows_decode_to_the_codecs_codes_and_values(encoding, scales):
    rng = np.random.default_rng(scales)
    codec, codes = CODECS[encoding], _codes(encoding, rng)
    scale = rng.uniform(0.1, 2, (scales, 1)).astype(np.float32)
    stored = codec.encode(codes, scale)
    entry = {"encoding": encoding, "shape": [ROWS, COLS], "granularity": "tensor" if scales == 1 else "row"}
    decoded = bytearray(ROWS * COLS)
    _lowbit.decode_codes(_WORD_KINDS[encoding], stored[codec.suffix], ROWS, COLS, decoded)
    assert np.array_equal(np.frombuffer(decoded, np.int8).reshape(ROWS, COLS), codes)
    values = np.empty((ROWS, COLS), np.float32)
    _lowbit.decode(_WORD_KINDS[encoding], stored[codec.suffix], ROWS, COLS, stored[SCALE].reshape(-1), values)
    assert np.array_equal(values, codec.decode(stored, entry))


@pytest.mark.parametrize("encoding", ["fp16", "fp32", "int8_row"])
def test_kept_and_int8_rows_decode_to_the_codecs_values(encoding):
    rng = np.random.default_rng(0)
    values = rng.normal(0, 3, (ROWS, COLS)).astype(np.float32)
    values[0, :3] = [6.1e-5, -5.9e-8, 0.0]  # float16 normal, subnormal and zero
    codec = CODECS[encoding]
    if encoding == "int8_row":
        scale = np.abs(values).max(1, keepdims=True) / 127
        stored = codec.encode(np.round(values / scale), scale)
        data, scale = stored[codec.suffix], stored[SCALE].reshape(-1)
    else:
        stored = codec.encode(values)
        data, scale = stored[""], None
    out = np.empty((ROWS, COLS), np.float32)
    _lowbit.decode(_WORD_KINDS[encoding], data.tobytes(), ROWS, COLS, scale, out)  # the file's bytes
    assert np.array_equal(out, codec.decode(stored, {"encoding": encoding, "shape": [ROWS, COLS]}))


def test_bad_shapes_and_kinds_are_refused():
    with pytest.raises(ValueError, match="bad kind"):
        _lowbit.decode_codes(_WORD_KINDS["fp16"], bytes(8), 2, 2, bytearray(4))
    with pytest.raises(ValueError, match="expected"):  # 3 rows of 37 binary weights need 15 bytes
        _lowbit.decode_codes(_WORD_KINDS["binary"], bytes(14), 3, 37, bytearray(111))
    with pytest.raises(ValueError, match="scale"):
        _lowbit.decode(_WORD_KINDS["int8_row"], bytes(6), 2, 3, np.ones(3, np.float32), np.empty(6, np.float32))

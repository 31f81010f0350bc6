"""The packed format's encodings (SPEC.md, "Encodings"): one codec per encoding.

A codec owns everything about its encoding: the suffixes, dtypes and shapes of the
tensors it stores for one logical tensor, how codes are packed into them and
unpacked, and which stored bytes are invalid. The exporter, the reader, the size
report and the runtime go through ``CODECS``; adding an encoding is adding a codec.

A logical tensor of shape ``shape`` is ``rows = shape[0]`` rows of
``cols = prod(shape[1:])`` values. Scales are float32 ``(1, 1)`` (one per tensor),
``(rows, 1)`` (per row) or ``(rows, ceil(cols / group_size))`` (per group).
"""

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from xtc.packed import bits as packing

if TYPE_CHECKING:  # a type only: the engine reads packed files without loading pydantic's schemas (import time)
    from xtc.quant.config import QuantSpec

SCALE = ".scale"
MAX_SCALE = 65504.0  # the largest float16


def _rows_cols(entry: dict) -> tuple[int, int]:
    shape = entry["shape"]
    return shape[0], math.prod(shape[1:])


def scale_shape(entry: dict) -> tuple[int, int]:
    rows, cols = _rows_cols(entry)
    granularity = entry.get("granularity")
    if granularity == "tensor":
        return (1, 1)
    if granularity == "group":
        return (rows, math.ceil(cols / entry["group_size"]))
    return (rows, 1)  # "row", and int8_row tensors rounded at export (no granularity recorded)


def _expanded(scale: np.ndarray, entry: dict) -> np.ndarray:
    """Scales ``(1|rows, 1|groups)`` broadcastable against ``(rows, cols)``."""
    if entry.get("granularity") != "group":
        return scale
    return np.repeat(scale, entry["group_size"], axis=1)[:, :_rows_cols(entry)[1]]


@dataclass(frozen=True)
class Codec:
    """Stores float tensors as themselves (fp16, fp32)."""

    name: str
    dtype: type = np.float32

    def stored(self, entry: dict) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """Suffix ("" = the logical name) -> (dtype, shape) of each stored tensor."""
        return {"": (np.dtype(self.dtype), tuple(entry["shape"]))}

    def invalid(self, tensors: dict[str, np.ndarray]) -> str | None:
        """Why stored tensors (by suffix, dtypes and shapes already checked) are not valid, or None."""
        values = tensors[""]
        return None if np.isfinite(values).all() else "holds NaN or infinite values"

    def encode(self, values: np.ndarray) -> dict[str, np.ndarray]:
        return {"": values.astype(self.dtype)}

    def decode(self, tensors: dict[str, np.ndarray], entry: dict) -> np.ndarray:
        return tensors[""].astype(np.float32)

    def nbytes(self, entry: dict) -> int:
        return sum(math.prod(shape) * dtype.itemsize for dtype, shape in self.stored(entry).values())


@dataclass(frozen=True)
class ScaledCodec(Codec):
    """Integer codes (rows, cols) times float32 scales: the quantized encodings' common part."""

    suffix: str = ""

    def stored(self, entry: dict) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        return {self.suffix: (np.dtype(self.dtype), self.codes_shape(entry)),
                SCALE: (np.dtype(np.float32), scale_shape(entry))}

    def codes_shape(self, entry: dict) -> tuple[int, int]:
        return _rows_cols(entry)

    def invalid(self, tensors: dict[str, np.ndarray]) -> str | None:
        scale = tensors[SCALE]
        # a scale is a mean or max of |weight|: >= 0, and within float16's range like every kept tensor
        return None if ((scale >= 0) & (scale <= MAX_SCALE)).all() else f"has scales outside [0, {MAX_SCALE}]"

    def encode(self, codes: np.ndarray, scale: np.ndarray) -> dict[str, np.ndarray]:
        """int8 codes ``(rows, cols)`` and float32 scales ``(1|rows, 1|groups)`` -> stored tensors by suffix."""
        return {self.suffix: self.pack(codes), SCALE: np.ascontiguousarray(scale, dtype=np.float32)}

    def pack(self, codes: np.ndarray) -> np.ndarray:
        return codes.astype(np.int8)

    def codes(self, tensors: dict[str, np.ndarray], entry: dict) -> np.ndarray:
        """The int8 codes ``(rows, cols)``."""
        return tensors[self.suffix]

    def decode(self, tensors: dict[str, np.ndarray], entry: dict) -> np.ndarray:
        values = self.codes(tensors, entry).astype(np.float32) * _expanded(tensors[SCALE], entry)
        return values.reshape(entry["shape"])


@dataclass(frozen=True)
class LowBitCodec(ScaledCodec):
    """1- and 2-bit codes packed ``per_byte`` to a byte, each row on its own (``packed.bits``)."""

    per_byte: int = 8
    packer: Callable[[np.ndarray], np.ndarray] | None = None
    unpacker: Callable[[np.ndarray, int], np.ndarray] | None = None
    bad_byte: Callable[[np.ndarray], np.ndarray] | None = None  # uint8 -> bool: bytes no code decodes from
    bad_byte_reason: str = ""

    def codes_shape(self, entry: dict) -> tuple[int, int]:
        rows, cols = _rows_cols(entry)
        return (rows, math.ceil(cols / self.per_byte))

    def invalid(self, tensors: dict[str, np.ndarray]) -> str | None:
        if self.bad_byte is not None and self.bad_byte(tensors[self.suffix]).any():
            return f"{self.suffix.lstrip('.')} holds {self.bad_byte_reason}"
        return super().invalid(tensors)

    def pack(self, codes: np.ndarray) -> np.ndarray:
        return self.packer(codes)

    def packed(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        """The packed code bytes ``(rows, ceil(cols / per_byte))``, as stored."""
        return tensors[self.suffix]

    def codes(self, tensors: dict[str, np.ndarray], entry: dict) -> np.ndarray:
        return self.unpacker(tensors[self.suffix], _rows_cols(entry)[1])


def _has_code_3(packed: np.ndarray) -> np.ndarray:
    return ((packed[..., None] >> np.array([0, 2, 4, 6], np.uint8)) & 3) == 3


CODECS: dict[str, Codec] = {c.name: c for c in (
    LowBitCodec("binary", np.uint8, ".bits", 8, packing.pack_signs, packing.unpack_signs),
    LowBitCodec("ternary2", np.uint8, ".codes2", 4, packing.pack_ternary2, packing.unpack_ternary2,
                _has_code_3, "the invalid ternary code 0b11"),
    LowBitCodec("ternary_base3", np.uint8, ".trits", 5, packing.pack_trits, packing.unpack_trits,
                lambda b: b > packing.MAX_TRIT_BYTE, f"a byte above {packing.MAX_TRIT_BYTE}"),
    ScaledCodec("int8_row", np.int8, ".int8"),
    Codec("fp16", np.float16),
    Codec("fp32", np.float32),
)}
LOW_BIT = tuple(name for name, c in CODECS.items() if isinstance(c, LowBitCodec))
TERNARY_PACKINGS = ("ternary2", "ternary_base3")
KEPT = ("fp16", "fp32")


def weight_encoding(bits: int, granularity: str, act_bits: int | None, ternary_packing: str = "ternary2") -> str | None:
    """The encoding that stores a weight trained with ``bits`` (a rule's weight_bits), or None when the
    format has none: 1 bit binary, 2 bits ternary, 8 bits int8_row (one scale per row, weights only:
    the runtime runs 8-bit weights as the float values they decode to)."""
    if bits == 1:
        return "binary"
    if bits == 2:
        return ternary_packing
    if bits == 8 and granularity == "row" and act_bits is None:
        return "int8_row"
    return None


def unstorable(spec: "QuantSpec", linear: bool) -> str | None:
    """Why a module quantized with ``spec`` cannot be written to a packed file, or None.

    The format stores 1- and 2-bit weights, and 8-bit weights with one scale per row and full-precision
    inputs; a quantized Linear's inputs are 8-bit, one dynamic scale per token (what the runtime runs).
    """
    acts = spec.act_bits if linear else None
    if spec.weight_bits is not None and weight_encoding(spec.weight_bits, spec.granularity, acts) is None:
        return (f"{spec.weight_bits}-bit weights ({spec.granularity}{f', {acts}-bit inputs' if acts else ''}): "
                "the packed format stores 1- and 2-bit weights, and 8-bit weights with one scale per row and "
                "full-precision inputs")
    if acts is not None and spec.weight_bits in (1, 2) and spec.act_mode == "static":
        return ("static activation ranges (act_mode: static): the packed runtime quantizes inputs with one scale "
                "per token; train with act_mode: dynamic")
    if spec.weight_bits in (1, 2) and linear and acts != 8:
        return (f"{acts or 'full-precision'}{'-bit' if acts else ''} inputs: the packed runtime runs 1- and "
                "2-bit Linears on 8-bit inputs; use act_bits: 8")
    if spec.weight_bits is None and acts is not None:
        return f"{acts}-bit inputs to full-precision weights: the packed format has no such layer"
    return None


def stored_bytes(entry: dict) -> int:
    """Bytes the format stores for one logical tensor."""
    return CODECS[entry["encoding"]].nbytes(entry)

"""The packed format's encodings (SPEC.md, "Encodings"): one codec per encoding.

A codec owns everything about its encoding: the suffixes, dtypes and shapes of the
tensors it stores for one logical tensor, how codes are packed into them and
unpacked, and which stored bytes are invalid. The exporter, the reader, the size
report and the runtime go through ``CODECS``; adding an encoding is adding a codec.

A logical tensor of shape ``shape`` is ``rows = shape[0]`` rows of
``cols = prod(shape[1:])`` values. Scales are float32 ``(1, 1)`` (one per tensor),
``(rows, 1)`` (per row) or ``(rows, ceil(cols / group_size))`` (per group).

Reading and checking a file needs no numpy (the engine's start): stored tensors are checked as the raw
bytes the file holds, with byte-table scans (``bytes.translate``, C speed). Encoding and decoding (export,
the torch runtime) work on numpy arrays, imported when used.
"""

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xtc.packed.layout import MAX_TRIT_BYTE

if TYPE_CHECKING:  # types only: the engine reads packed files without numpy or pydantic's schemas (import time)
    import numpy as np

    from xtc.quant.config import QuantSpec

SCALE = ".scale"
MAX_SCALE = 65504.0  # the largest float16
_MAX_SCALE_BITS, _MINUS_ZERO = 0x477FE000, 0x80000000  # of MAX_SCALE and of -0.0 as float32


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


def _expanded(scale: "np.ndarray", entry: dict) -> "np.ndarray":
    """Scales ``(1|rows, 1|groups)`` broadcastable against ``(rows, cols)``."""
    import numpy as np

    if entry.get("granularity") != "group":
        return scale
    return np.repeat(scale, entry["group_size"], axis=1)[:, :_rows_cols(entry)[1]]


def _raw(tensor) -> bytes | bytearray:
    """The bytes of a stored tensor: as read, or of a numpy array about to be written."""
    return tensor if isinstance(tensor, (bytes, bytearray)) else memoryview(tensor).tobytes()


def _deleting_all_but(bad) -> bytes:
    """A ``bytes.translate`` deletion table: what is left of ``data.translate(None, table)`` is its bad bytes."""
    bad = set(bad)
    return bytes(b for b in range(256) if b not in bad)


# float16: exponent bits all set (inf, NaN) <=> the high byte (little-endian: the second) has 0x7c set
_FP16_NOT_FINITE = _deleting_all_but(b for b in range(256) if b & 0x7C == 0x7C)
# float32: exponent all set needs 0x7f in the high byte: a cheap first scan; the rare hit is checked exactly
_FP32_HUGE_OR_NOT_FINITE = _deleting_all_but(b for b in range(256) if b & 0x7F == 0x7F)


def _finite(raw: bytes, dtype: str) -> bool:
    if dtype == "float16":
        return not raw[1::2].translate(None, _FP16_NOT_FINITE)
    return (not raw[3::4].translate(None, _FP32_HUGE_OR_NOT_FINITE)
            or all(math.isfinite(v) for v in memoryview(raw).cast("f")))


@dataclass(frozen=True)
class Codec:
    """Stores float tensors as themselves (fp16, fp32)."""

    name: str
    dtype: str = "float32"  # numpy's name of the stored dtype

    def stored(self, entry: dict) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Suffix ("" = the logical name) -> (dtype, shape) of each stored tensor."""
        return {"": (self.dtype, tuple(entry["shape"]))}

    def invalid(self, tensors: dict) -> str | None:
        """Why stored tensors (by suffix: bytes, or numpy arrays; dtypes and shapes already checked) are not
        valid, or None."""
        return None if _finite(_raw(tensors[""]), self.dtype) else "holds NaN or infinite values"

    def encode(self, values: "np.ndarray") -> dict[str, "np.ndarray"]:
        return {"": values.astype(self.dtype)}

    def decode(self, tensors: dict[str, "np.ndarray"], entry: dict) -> "np.ndarray":
        return tensors[""].astype("float32")

    def nbytes(self, entry: dict) -> int:
        return sum(math.prod(shape) * _ITEMSIZE[dtype] for dtype, shape in self.stored(entry).values())


_ITEMSIZE = {"float32": 4, "float16": 2, "uint8": 1, "int8": 1}


@dataclass(frozen=True)
class ScaledCodec(Codec):
    """Integer codes (rows, cols) times float32 scales: the quantized encodings' common part."""

    suffix: str = ""

    def stored(self, entry: dict) -> dict[str, tuple[str, tuple[int, ...]]]:
        return {self.suffix: (self.dtype, self.codes_shape(entry)), SCALE: ("float32", scale_shape(entry))}

    def codes_shape(self, entry: dict) -> tuple[int, int]:
        return _rows_cols(entry)

    def invalid(self, tensors: dict) -> str | None:
        # a scale is a mean or max of |weight|: >= 0, and within float16's range like every kept tensor. Checked
        # by its bits: a float32 in [0, MAX_SCALE] is one whose bits, read as an integer, are at most
        # _MAX_SCALE_BITS; NaNs and negatives are above (but -0.0, which is >= 0)
        bits = memoryview(_raw(tensors[SCALE])).cast("I")
        if max(bits, default=0) <= _MAX_SCALE_BITS or all(b <= _MAX_SCALE_BITS or b == _MINUS_ZERO for b in bits):
            return None
        return f"has scales outside [0, {MAX_SCALE}]"

    def encode(self, codes: "np.ndarray", scale: "np.ndarray") -> dict[str, "np.ndarray"]:
        """int8 codes ``(rows, cols)`` and float32 scales ``(1|rows, 1|groups)`` -> stored tensors by suffix."""
        import numpy as np

        return {self.suffix: self.pack(codes), SCALE: np.ascontiguousarray(scale, dtype=np.float32)}

    def pack(self, codes: "np.ndarray") -> "np.ndarray":
        return codes.astype("int8")

    def codes(self, tensors: dict[str, "np.ndarray"], entry: dict) -> "np.ndarray":
        """The int8 codes ``(rows, cols)``."""
        return tensors[self.suffix]

    def decode(self, tensors: dict[str, "np.ndarray"], entry: dict) -> "np.ndarray":
        values = self.codes(tensors, entry).astype("float32") * _expanded(tensors[SCALE], entry)
        return values.reshape(entry["shape"])


@dataclass(frozen=True)
class LowBitCodec(ScaledCodec):
    """1- and 2-bit codes packed ``per_byte`` to a byte, each row on its own (``packed.bits``)."""

    per_byte: int = 8
    packing: str = ""  # packed.bits' pack_{packing} and unpack_{packing}
    bad_bytes: bytes = b""  # byte values no code decodes from, as a bytes.translate deletion table of the others
    bad_byte_reason: str = ""

    def codes_shape(self, entry: dict) -> tuple[int, int]:
        rows, cols = _rows_cols(entry)
        return (rows, math.ceil(cols / self.per_byte))

    def invalid(self, tensors: dict) -> str | None:
        if self.bad_bytes and _raw(tensors[self.suffix]).translate(None, self.bad_bytes):
            return f"{self.suffix.lstrip('.')} holds {self.bad_byte_reason}"
        return super().invalid(tensors)

    def pack(self, codes: "np.ndarray") -> "np.ndarray":
        from xtc.packed import bits

        return getattr(bits, f"pack_{self.packing}")(codes)

    def packed(self, tensors: dict[str, "np.ndarray"]) -> "np.ndarray":
        """The packed code bytes ``(rows, ceil(cols / per_byte))``, as stored."""
        return tensors[self.suffix]

    def unpack(self, packed: "np.ndarray", cols: int) -> "np.ndarray":
        """Packed code bytes ``(rows, ceil(cols / per_byte))`` -> int8 codes ``(rows, cols)``."""
        from xtc.packed import bits

        return getattr(bits, f"unpack_{self.packing}")(packed, cols)

    def codes(self, tensors: dict[str, "np.ndarray"], entry: dict) -> "np.ndarray":
        return self.unpack(tensors[self.suffix], _rows_cols(entry)[1])


CODECS: dict[str, Codec] = {c.name: c for c in (
    LowBitCodec("binary", "uint8", ".bits", 8, "signs"),
    LowBitCodec("ternary2", "uint8", ".codes2", 4, "ternary2",
                _deleting_all_but(b for b in range(256) if any((b >> s) & 3 == 3 for s in (0, 2, 4, 6))),
                "the invalid ternary code 0b11"),
    LowBitCodec("ternary_base3", "uint8", ".trits", 5, "trits", _deleting_all_but(range(MAX_TRIT_BYTE + 1, 256)),
                f"a byte above {MAX_TRIT_BYTE}"),
    ScaledCodec("int8_row", "int8", ".int8"),
    Codec("fp16", "float16"),
    Codec("fp32", "float32"),
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

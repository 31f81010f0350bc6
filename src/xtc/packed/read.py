"""Read a packed model folder (SPEC.md), validating everything before it is used.

Only the safetensors parser touches the file; nothing is unpickled or executed.
Every problem is one ``XtcError`` naming the file and what is wrong.
"""

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from xtc.errors import XtcError
from xtc.packed import bits as packing
from xtc.packed.layout import (FORMAT, FORMAT_VERSION, META_FORMAT, META_HEADER, META_VERSION, QUANTIZED_ENCODINGS,
                               STORED, WEIGHTS_FILE, scale_shape, stored_shape)

_DTYPES = {"bits": np.uint8, "codes2": np.uint8, "trits": np.uint8, "int8": np.int8, "scale": np.float32}
# a 1-/2-bit encoding's decoder: packed rows uint8 (rows, bytes), cols -> int8 codes (rows, cols)
DECODERS = {"binary": packing.unpack_signs, "ternary2": packing.unpack_ternary2, "ternary_base3": packing.unpack_trits}


@dataclass
class PackedModel:
    folder: Path
    header: dict
    stored: dict[str, np.ndarray]  # stored tensors by their on-disk name

    def packed_codes(self, name: str) -> np.ndarray:
        """The stored code bytes (rows, bytes) of a 1-/2-bit logical tensor."""
        return self.stored[name + STORED[self.header["tensors"][name]["encoding"]][0]]

    def codes(self, name: str) -> np.ndarray:
        """The int8 codes (rows, cols) of a 1-/2-bit logical tensor: {-1, +1} or {-1, 0, +1}."""
        entry = self.header["tensors"][name]
        return DECODERS[entry["encoding"]](self.packed_codes(name), math.prod(entry["shape"][1:]))

    def dequantized(self, name: str) -> np.ndarray:
        """The float32 values of one logical tensor (for checks and the reference path)."""
        entry = self.header["tensors"][name]
        encoding, shape = entry["encoding"], entry["shape"]
        if encoding in ("fp16", "fp32"):
            return self.stored[name].astype(np.float32)
        cols = math.prod(shape[1:])
        scale = self.stored[f"{name}.scale"]  # (1, 1), (rows, 1) or (rows, groups)
        if encoding == "int8_row":
            return (self.stored[f"{name}.int8"].astype(np.float32) * scale).reshape(shape)
        codes = self.codes(name).astype(np.float32)
        if entry["granularity"] == "group":
            scale = np.repeat(scale, entry["group_size"], axis=1)[:, :cols]
        values = codes * scale
        return values.reshape(shape).astype(np.float32)


def read_packed(folder: str | Path) -> PackedModel:
    folder = Path(folder)
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise XtcError(f"{folder}: not a packed model folder (no {WEIGHTS_FILE}); export one with xtc export")
    try:
        with safe_open(path, "np") as f:
            metadata = f.metadata() or {}
            stored = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise XtcError(f"{path}: not a readable safetensors file (truncated or corrupted?): {e}") from None
    if metadata.get(META_FORMAT) != FORMAT:
        raise XtcError(f"{path}: not an xtc packed model (metadata {META_FORMAT} is {metadata.get(META_FORMAT)!r})")
    if metadata.get(META_VERSION) != FORMAT_VERSION:
        raise XtcError(f"{path}: format version {metadata.get(META_VERSION)!r} is not supported "
                       f"(this xtc reads version {FORMAT_VERSION}; upgrade xtc or re-export)")
    try:
        header = json.loads(metadata.get(META_HEADER, ""))
        entries = header["tensors"]
        assert isinstance(entries, dict) and isinstance(header["architecture"], dict)
    except (json.JSONDecodeError, KeyError, TypeError, AssertionError):
        raise XtcError(f"{path}: the {META_HEADER} metadata is not a valid header") from None
    for name, entry in entries.items():
        try:
            encoding = entry["encoding"]
            suffixes = STORED[encoding]
            for suffix in suffixes:
                key = name + suffix
                if key not in stored:
                    raise XtcError(f"{path}: tensor {key} is missing")
                want_dtype = _DTYPES.get(suffix.lstrip("."), np.float16 if encoding == "fp16" else np.float32)
                want_shape = (tuple(entry["shape"]) if suffix == "" else
                              scale_shape(entry) if suffix == ".scale" else stored_shape(entry))
                if stored[key].dtype != want_dtype or stored[key].shape != want_shape:
                    raise XtcError(f"{path}: tensor {key} is {stored[key].dtype}{list(stored[key].shape)}, "
                                   f"expected {np.dtype(want_dtype)}{list(want_shape)}")
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            raise XtcError(f"{path}: header entry of {name} is malformed") from None
        if encoding == "ternary2" and (((stored[f"{name}.codes2"][..., None] >> np.array([0, 2, 4, 6], np.uint8)) & 3) == 3).any():
            raise XtcError(f"{path}: tensor {name}.codes2 holds the invalid ternary code 0b11")
        if encoding == "ternary_base3" and (stored[f"{name}.trits"] > packing.MAX_TRIT_BYTE).any():
            raise XtcError(f"{path}: tensor {name}.trits holds a byte above {packing.MAX_TRIT_BYTE}")
    for file, digest in (header.get("tokenizer_sha256") or {}).items():
        tok = folder / file
        if not tok.is_file():
            raise XtcError(f"{folder}: tokenizer file {file} is missing")
        if hashlib.sha256(tok.read_bytes()).hexdigest() != digest:
            raise XtcError(f"{folder}: tokenizer file {file} does not match the model it was exported with")
    assert all(e["encoding"] in STORED for e in entries.values())
    return PackedModel(folder, header, stored)


def is_quantized(entry: dict) -> bool:
    return entry["encoding"] in QUANTIZED_ENCODINGS

"""Read a packed model folder (SPEC.md), validating everything before it is used.

Only the safetensors parser touches the file; nothing is unpickled or executed.
Every problem is one ``XtcError`` naming the file and what is wrong. The header is
validated against its schema (``packed.header``), every stored tensor through its
encoding's codec (names, dtypes, shapes, invalid codes, NaN), and its bytes against
the header's SHA-256 (version 2 files). Reading needs no numpy (the engine's start);
``PackedModel.stored`` gives the tensors as numpy arrays to the code that computes with them.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, deserialize

from xtc.errors import XtcError
from xtc.packed.codecs import CODECS, LOW_BIT, Codec
from xtc.packed.header import HeaderError, validate_header
if TYPE_CHECKING:
    import numpy as np

from xtc.packed.layout import FORMAT, FORMAT_VERSION, META_FORMAT, META_HEADER, META_VERSION, READABLE_VERSIONS, WEIGHTS_FILE


# safetensors' dtype names -> numpy's (the codecs'): those an xtc file stores, and others to name in errors
_DTYPES = {"F32": "float32", "F16": "float16", "U8": "uint8", "I8": "int8", "BF16": "bfloat16", "F64": "float64",
           "I16": "int16", "I32": "int32", "I64": "int64", "U16": "uint16", "U32": "uint32", "U64": "uint64",
           "BOOL": "bool"}


@dataclass
class PackedModel:
    folder: Path
    header: dict  # validated (packed.header): every tensor entry has every field
    raw: dict[str, bytearray]  # stored tensors by their on-disk name: the file's bytes (dtypes, shapes: the codecs')
    version: str = FORMAT_VERSION

    def entry(self, name: str) -> dict:
        return self.header["tensors"][name]

    def codec(self, name: str) -> Codec:
        return CODECS[self.entry(name)["encoding"]]

    def raw_of(self, name: str) -> dict[str, bytearray]:
        """The bytes of one logical tensor's stored tensors, by suffix."""
        return {suffix: self.raw[name + suffix] for suffix in self.codec(name).stored(self.entry(name))}

    @cached_property
    def stored(self) -> dict[str, np.ndarray]:
        """The stored tensors as numpy arrays (views of ``raw``), by on-disk name."""
        import numpy as np

        return {name + suffix: np.frombuffer(self.raw[name + suffix], dtype).reshape(shape)
                for name, entry in self.header["tensors"].items()
                for suffix, (dtype, shape) in CODECS[entry["encoding"]].stored(entry).items()}

    def tensors_of(self, name: str) -> dict[str, np.ndarray]:
        """The stored tensors of one logical tensor, by suffix."""
        return {suffix: self.stored[name + suffix] for suffix in self.codec(name).stored(self.entry(name))}

    def packed_codes(self, name: str) -> np.ndarray:
        """The stored code bytes (rows, bytes) of a 1-/2-bit logical tensor."""
        return self.codec(name).packed(self.tensors_of(name))

    def codes(self, name: str) -> np.ndarray:
        """The int8 codes (rows, cols) of a quantized logical tensor: {-1, +1}, {-1, 0, +1} or int8."""
        return self.codec(name).codes(self.tensors_of(name), self.entry(name))

    def scale(self, name: str) -> np.ndarray:
        """The float32 scales of a quantized logical tensor: (1, 1), (rows, 1) or (rows, groups)."""
        return self.tensors_of(name)[".scale"]

    def layer_count(self, layers: str) -> int:
        """How many transformer layers the file holds: the distinct indices ``i`` of ``{layers}.{i}.*`` tensors."""
        return len({n[len(layers) + 1:].split(".")[0] for n in self.header["tensors"] if n.startswith(layers + ".")})

    def dequantized(self, name: str) -> np.ndarray:
        """The float32 values of one logical tensor (for checks and the reference path)."""
        return self.codec(name).decode(self.tensors_of(name), self.entry(name))


def read_packed(folder: str | Path) -> PackedModel:
    folder = Path(folder)
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise XtcError(f"{folder}: not a packed model folder (no {WEIGHTS_FILE}); export one with xtc export")
    try:
        data = path.read_bytes()
        stored = {name: (_DTYPES.get(t["dtype"], t["dtype"]), tuple(t["shape"]), t["data"])
                  for name, t in deserialize(data)}
        # the safetensors header (its layout checked by deserialize): 8 bytes of length, then JSON
        metadata = json.loads(data[8:8 + int.from_bytes(data[:8], "little")]).get("__metadata__") or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise XtcError(f"{path}: not a readable safetensors file (truncated or corrupted?): {e}") from None
    del data
    if metadata.get(META_FORMAT) != FORMAT:
        raise XtcError(f"{path}: not an xtc packed model (metadata {META_FORMAT} is {metadata.get(META_FORMAT)!r})")
    version = metadata.get(META_VERSION)
    if version not in READABLE_VERSIONS:
        raise XtcError(f"{path}: format version {version!r} is not supported "
                       f"(this xtc reads versions {', '.join(READABLE_VERSIONS)}; upgrade xtc or re-export)")
    header = _validated_header(path, metadata.get(META_HEADER, ""), version)
    _check_tensors(path, header, stored)
    _check_tokenizer(folder, header)
    if version == "1":
        warnings.warn(f"{path}: a version 1 file: its tensors carry no checksums (re-export it to add them)",
                      stacklevel=2)
    return PackedModel(folder, header, {name: data for name, (_, _, data) in stored.items()}, version)


def _validated_header(path: Path, text: str, version: str) -> dict:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        raise XtcError(f"{path}: the {META_HEADER} metadata is not valid JSON") from None
    if version == "1" and isinstance(raw, dict) and isinstance(raw.get("tensors"), dict):
        raw = {**raw, "tensors": _v1_entries(path, raw)}
    try:
        header = validate_header(raw)
    except HeaderError as e:
        raise XtcError(f"{path}: invalid header: {e}") from None
    if version != "1" and not header["tensor_sha256"]:
        raise XtcError(f"{path}: the header has no tensor_sha256 (every version {version} file has)")
    return header


def _v1_entries(path: Path, raw: dict) -> dict:
    """Version 1 entries did not record activation settings: they are those of the module's quantization rule
    (so only a version 1 file needs its ``quantization`` record validated, and pydantic imported)."""
    from xtc.quant.config import recorded_quant_config

    recorded = raw.get("quantization")
    try:
        quant = recorded_quant_config(recorded if isinstance(recorded, dict) else {})
    except XtcError as e:
        raise XtcError(f"{path}: header field quantization: {e}") from None
    return {name: _v1_entry(name, entry, quant) for name, entry in raw["tensors"].items()}


def _v1_entry(name: str, entry, quant) -> dict:
    if not isinstance(entry, dict) or entry.get("encoding") not in LOW_BIT:
        return entry
    rule = quant.rule_for(name.removesuffix(".weight"))
    act_bits = rule.act_bits if rule is not None else None
    return {**entry, "act_bits": act_bits, "act_mode": rule.act_mode if act_bits else None}


def _check_tensors(path: Path, header: dict, stored: dict[str, tuple[str, tuple, bytearray]]) -> None:
    """``stored``: on-disk name -> (dtype, shape, bytes), as the file holds it."""
    owned, digests = set(), header["tensor_sha256"]  # no digests: a version 1 file
    for name, entry in header["tensors"].items():
        codec = CODECS[entry["encoding"]]
        tensors = {}
        for suffix, (dtype, shape) in codec.stored(entry).items():
            key = name + suffix
            if key not in stored:
                raise XtcError(f"{path}: tensor {key} is missing")
            if stored[key][:2] != (dtype, shape):
                raise XtcError(f"{path}: tensor {key} is {stored[key][0]}{list(stored[key][1])}, "
                               f"expected {dtype}{list(shape)}")
            tensors[suffix] = stored[key][2]
            owned.add(key)
        for suffix, array in tensors.items():
            if digests and digests.get(name + suffix) != _sha256(array):
                raise XtcError(f"{path}: tensor {name + suffix} does not match its checksum (the file is corrupted)")
        problem = codec.invalid(tensors)
        if problem:
            raise XtcError(f"{path}: tensor {name} {problem}")
    extra = sorted(set(stored) - owned)
    if extra:
        raise XtcError(f"{path}: tensor {extra[0]} belongs to no header entry")


def _sha256(tensor) -> str:
    """Of a stored tensor's bytes: as read (bytes), or a numpy array about to be written (in C order)."""
    view = memoryview(tensor)
    return hashlib.sha256(view if view.c_contiguous else view.tobytes()).hexdigest()


def tensor_digests(tensors: dict[str, np.ndarray]) -> dict[str, str]:
    """The header's ``tensor_sha256`` of stored tensors (the exporter's half of the check above)."""
    return {key: _sha256(array) for key, array in sorted(tensors.items())}


def _check_tokenizer(folder: Path, header: dict) -> None:
    for file, digest in header["tokenizer_sha256"].items():
        tok = folder / file
        if not tok.is_file():
            raise XtcError(f"{folder}: tokenizer file {file} is missing")
        if hashlib.sha256(tok.read_bytes()).hexdigest() != digest:
            raise XtcError(f"{folder}: tokenizer file {file} does not match the model it was exported with")

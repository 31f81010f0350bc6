"""Every on-disk name, constant and shape rule of the packed format in one place (SPEC.md)."""

import math

FORMAT = "xtc-packed"
FORMAT_VERSION = "1"
WEIGHTS_FILE = "packed.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")

META_FORMAT = "xtc_format"
META_VERSION = "xtc_format_version"
META_HEADER = "xtc_header"

# encoding -> suffixes of its stored tensors ("" = the logical name itself)
STORED = {
    "binary": (".bits", ".scale"),
    "ternary2": (".codes2", ".scale"),
    "ternary_base3": (".trits", ".scale"),
    "int8_row": (".int8", ".scale"),
    "fp16": ("",),
    "fp32": ("",),
}
QUANTIZED_ENCODINGS = ("binary", "ternary2", "ternary_base3")
TERNARY_PACKINGS = ("ternary2", "ternary_base3")


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


_PER_BYTE = {"binary": 8, "ternary2": 4, "ternary_base3": 5}
SCALE_BYTES = 4  # float32 scales


def scale_shape(entry: dict) -> tuple[int, int]:
    """Shape of a quantized or int8 tensor's scales: (1, 1), (rows, 1) or (rows, groups)."""
    rows, cols = entry["shape"][0], math.prod(entry["shape"][1:])
    if entry["encoding"] == "int8_row" or entry.get("granularity") == "row":
        return (rows, 1)
    if entry.get("granularity") == "tensor":
        return (1, 1)
    return (rows, math.ceil(cols / entry["group_size"]))


def stored_shape(entry: dict) -> tuple[int, ...]:
    """Shape of the packed values of a logical tensor (the first suffix of its encoding)."""
    rows, cols = entry["shape"][0], math.prod(entry["shape"][1:])
    encoding = entry["encoding"]
    if encoding in _PER_BYTE:
        return (rows, math.ceil(cols / _PER_BYTE[encoding]))
    if encoding == "int8_row":
        return (rows, cols)
    return tuple(entry["shape"])


def stored_bytes(entry: dict) -> int:
    """Bytes the format stores for one logical tensor."""
    values = math.prod(stored_shape(entry)) * {"fp16": 2, "fp32": 4}.get(entry["encoding"], 1)
    scales = math.prod(scale_shape(entry)) * SCALE_BYTES if len(STORED[entry["encoding"]]) > 1 else 0
    return values + scales

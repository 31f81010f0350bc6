"""Every on-disk name and constant of the packed format in one place (SPEC.md)."""

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

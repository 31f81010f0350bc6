"""The packed format's file and metadata names and its versions (SPEC.md); each encoding's stored
tensors are its codec's (``packed.codecs``)."""

FORMAT = "xtc-packed"
FORMAT_VERSION = "2"  # what this xtc writes
READABLE_VERSIONS = ("1", "2")  # 1: no tensor checksums, no activation settings in tensor entries
WEIGHTS_FILE = "packed.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")

META_FORMAT = "xtc_format"
META_VERSION = "xtc_format_version"
META_HEADER = "xtc_header"

MAX_TRIT_BYTE = 3**5 - 1  # 242: five trits, the largest byte of the ternary_base3 encoding

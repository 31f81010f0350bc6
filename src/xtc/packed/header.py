"""The schema of the ``xtc_header`` metadata (SPEC.md, "Metadata"): every field validated on read,
so a foreign or corrupted value is one clear error instead of a failure deep in the runtime.

Plain Python rather than pydantic: the torch-free engine reads a packed file in a fresh process, and
importing pydantic and building these schemas was about 100 ms of its 350 ms start.
"""

import math

from xtc.packed.codecs import CODECS, LOW_BIT
from xtc.packed.layout import TOKENIZER_FILES

MAX_DIM = 2**31 - 1
MAX_ELEMENTS = 2**34  # 16 G values: far above any encoder, below sizes whose products overflow

# one logical tensor (its name in the Hugging Face state dict): field -> allowed values (None: absent/null)
_ENTRY_CHOICES = {
    "encoding": tuple(CODECS),
    "bits": (1, 2, 8, None),
    "granularity": ("tensor", "row", "group", None),
    "act_bits": (8, None),  # a quantized Linear's input activations (8-bit per token); None: an embedding
    "act_mode": ("dynamic", None),
}
_ENTRY_FIELDS = ("encoding", "shape", "bits", "granularity", "group_size", "act_bits", "act_mode")


class HeaderError(ValueError):
    """One invalid field: ``str(error)`` names its dotted path, its value and what it should be."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _choice(where: str, value, choices: tuple) -> None:
    # 1 == True and 1.0 == 1 in Python: compare types too, as JSON tells them apart
    if not any(value == c and type(value) is type(c) for c in choices):
        raise HeaderError(f"invalid value {value!r} for {where}: expected one of "
                          f"{', '.join('null' if c is None else repr(c) for c in choices)}")


def _shape(where: str, shape) -> None:
    if not isinstance(shape, list) or not 1 <= len(shape) <= 4 or not all(_is_int(d) for d in shape):
        raise HeaderError(f"invalid value {shape!r} for {where}: expected a list of 1 to 4 integers")
    if not all(1 <= d <= MAX_DIM for d in shape):
        raise HeaderError(f"invalid value {shape!r} for {where}: dimensions must be 1..{MAX_DIM}")
    if math.prod(shape) > MAX_ELEMENTS:
        raise HeaderError(f"invalid value {shape!r} for {where}: more than {MAX_ELEMENTS} values")


def _tensor_entry(where: str, raw) -> dict:
    """A tensor entry with every field of ``_ENTRY_FIELDS`` (absent optional fields as None)."""
    if not isinstance(raw, dict):
        raise HeaderError(f"invalid value {raw!r} for {where}: expected an object")
    unknown = sorted(set(raw) - set(_ENTRY_FIELDS))
    if unknown:
        raise HeaderError(f"unknown setting {where + '.' + unknown[0]!r}")
    for required in ("encoding", "shape"):
        if required not in raw:
            raise HeaderError(f"missing required setting {where}.{required}")
    entry = {field: raw.get(field) for field in _ENTRY_FIELDS}
    for field, choices in _ENTRY_CHOICES.items():
        _choice(f"{where}.{field}", entry[field], choices)
    _shape(f"{where}.shape", entry["shape"])
    size = entry["group_size"]
    if size is not None and not (_is_int(size) and 1 <= size <= MAX_DIM):
        raise HeaderError(f"invalid value {size!r} for {where}.group_size: expected null or an integer 1..{MAX_DIM}")
    encoding = entry["encoding"]
    if encoding in LOW_BIT:
        if entry["bits"] is None or entry["granularity"] is None:
            raise HeaderError(f"{where}: a {encoding} tensor records bits and granularity")
        if (encoding == "binary") != (entry["bits"] == 1):
            raise HeaderError(f"{where}: {entry['bits']}-bit weights are not stored as {encoding}")
    if (entry["granularity"] == "group") != (size is not None):
        raise HeaderError(f"{where}: group_size goes with granularity 'group', and only with it")
    if encoding not in LOW_BIT and (entry["act_bits"] is not None or entry["granularity"] == "group"):
        raise HeaderError(f"{where}: a {encoding} tensor has no activation bits or groups")
    return entry


def _digests(where: str, raw, names: tuple[str, ...] | None = None) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise HeaderError(f"invalid value {raw!r:.80} for {where}: expected an object of name -> hex digest strings")
    foreign = sorted(set(raw) - set(names)) if names is not None else []
    if foreign:
        raise HeaderError(f"invalid value for {where}: {foreign[0]!r} is not a tokenizer file ({', '.join(names)})")
    return raw


def validate_header(raw) -> dict:
    """The parsed ``xtc_header`` JSON -> the header with every tensor entry complete; HeaderError if invalid.

    ``architecture`` and ``quantization`` are objects here; the engine checks the architecture's sizes
    against the tensors, and a version 1 reader validates the quantization rules its entries come from.
    """
    if not isinstance(raw, dict):
        raise HeaderError("expected a JSON object")
    unknown = sorted(set(raw) - {"architecture", "quantization", "tensors", "tokenizer_sha256", "tensor_sha256"})
    if unknown:
        raise HeaderError(f"unknown setting {unknown[0]!r}")
    for section in ("architecture", "quantization", "tensors"):
        if section not in raw:
            raise HeaderError(f"missing required setting {section}")
        if not isinstance(raw[section], dict):
            raise HeaderError(f"invalid value {raw[section]!r} for {section}: expected an object")
    return {"architecture": raw["architecture"], "quantization": raw["quantization"],
            "tensors": {name: _tensor_entry(f"tensors.{name}", entry) for name, entry in raw["tensors"].items()},
            "tokenizer_sha256": _digests("tokenizer_sha256", raw.get("tokenizer_sha256", {}), TOKENIZER_FILES),
            "tensor_sha256": _digests("tensor_sha256", raw.get("tensor_sha256", {}))}

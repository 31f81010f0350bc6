"""Model size as xtc stores it, computed from a model folder's tensor shapes (no weights loaded).

Full-precision models count as stored (FP32). In a quantized model, each
quantized weight counts at its bit width (1-bit signs; 2-bit codes for ternary)
plus one FP32 scale per group, and every other tensor (embeddings kept,
LayerNorm, biases, pooler, classifier) at 16 bits: the layout the packed format
(issue 4) stores.
"""

import json
import math
import re
from pathlib import Path

from safetensors import safe_open

SCALE_BYTES = 4
KEPT_BYTES_QUANTIZED = 2


def _groups(shape: list[int], rule: dict) -> int:
    rows, cols = shape[0], math.prod(shape[1:])
    granularity = rule.get("granularity", "tensor")
    if granularity == "tensor":
        return 1
    if granularity == "row":
        return rows
    return rows * math.ceil(cols / rule["group_size"])


def packed_size_bytes(model_dir: Path) -> int:
    config = json.loads((Path(model_dir) / "config.json").read_text())
    rules = (config.get("xtc_quantization") or {}).get("rules", [])
    patterns = [(re.compile(r["pattern"]), r) for r in rules]
    total = 0
    with safe_open(Path(model_dir) / "model.safetensors", "pt") as f:
        for name in f.keys():
            tensor = f.get_slice(name)
            shape, numel = tensor.get_shape(), math.prod(tensor.get_shape())
            module = name.removesuffix(".weight")
            rule = next((r for p, r in patterns if name.endswith(".weight") and p.fullmatch(module)), None)
            if rule is not None and rule.get("weight_bits"):
                total += math.ceil(numel * rule["weight_bits"] / 8) + SCALE_BYTES * _groups(shape, rule)
            elif rules:
                total += numel * KEPT_BYTES_QUANTIZED
            else:
                total += numel * {"F32": 4, "F16": 2, "BF16": 2}.get(tensor.get_dtype(), 4)
    return total

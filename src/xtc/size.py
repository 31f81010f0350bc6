"""Model sizes by tensor group, in the packed format's accounting (packed/SPEC.md).

For a packed folder the sizes are those of its header. For a model folder
(a stage of ``xtc run``) they are what ``xtc export`` would write: the quantized
weights in their codes plus FP32 scales and every other tensor as the config's
``kept`` says; a full-precision model as stored (FP32). A quantized model that
xtc export cannot write is refused with the export's reason.
"""

import json
import math
from pathlib import Path

from safetensors import safe_open

from xtc.arch import architecture
from xtc.errors import XtcError
from xtc.packed.codecs import stored_bytes, unstorable, weight_encoding
from xtc.packed.layout import WEIGHTS_FILE
from xtc.quant.config import recorded_quant_config

GROUPS = ("word embeddings", "other embeddings", "encoder weights", "head", "norms and biases")


def planned_entries(model_dir: Path) -> tuple[dict, dict]:
    """(architecture config, {tensor: header entry}) of a model folder, without loading weights."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    recorded = config.get("xtc_quantization")
    quant = recorded_quant_config(recorded) if recorded else None
    embeddings = _embedding_modules(config)
    entries = {}
    with safe_open(Path(model_dir) / "model.safetensors", "pt") as f:
        for name in f.keys():
            shape = f.get_slice(name).get_shape()
            if f.get_slice(name).get_dtype() not in ("F32", "F16", "BF16"):
                continue  # integer buffers are not stored
            module = name.removesuffix(".weight")
            rule = quant.rule_for(module) if quant is not None and name.endswith(".weight") else None
            if rule is not None and rule.weight_bits:
                problem = unstorable(rule, linear=module not in embeddings)
                if problem:
                    raise XtcError(f"{model_dir}: xtc export cannot write {module}: {problem}")
                acts = None if module in embeddings else rule.act_bits
                entries[name] = {"encoding": weight_encoding(rule.weight_bits, rule.granularity, acts),
                                 "shape": shape, "granularity": rule.granularity, "group_size": rule.group_size}
            else:
                entries[name] = {"encoding": quant.kept if quant else "fp32", "shape": shape}
    return config, entries


def _embedding_modules(config: dict) -> set[str]:
    """The embedding tables of an architecture (their rules' act_bits do not apply)."""
    arch = architecture(config["model_type"])
    return {arch.word_embeddings, arch.position_embeddings, f"{arch.embeddings}.token_type_embeddings"}


def size_report(model_dir: Path) -> dict:
    """Bytes per tensor group, the total, and the FP32 size of the same tensors."""
    folder = Path(model_dir)
    if (folder / WEIGHTS_FILE).is_file():
        from xtc.packed.read import read_packed

        header = read_packed(folder).header
        config, entries = header["architecture"], header["tensors"]
    else:
        config, entries = planned_entries(folder)
    arch = architecture(config["model_type"])
    groups = dict.fromkeys(GROUPS, 0)
    for name, entry in entries.items():
        if name.startswith(arch.word_embeddings):
            group = "word embeddings"
        elif name.startswith(arch.embeddings) and len(entry["shape"]) == 2:
            group = "other embeddings"
        elif name.startswith(arch.layers) and len(entry["shape"]) == 2:
            group = "encoder weights"
        elif name.startswith(arch.head):
            group = "head"
        else:
            group = "norms and biases"
        groups[group] += stored_bytes(entry)
    fp32 = sum(4 * math.prod(e["shape"]) for e in entries.values())
    return {"groups": groups, "total": sum(groups.values()), "fp32": fp32}


def packed_size_bytes(model_dir: Path) -> int:
    return size_report(model_dir)["total"]

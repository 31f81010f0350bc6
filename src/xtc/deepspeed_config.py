"""Read the ``compression_training`` section of a DeepSpeed config into an xtc recipe.

DeepSpeed's compression library (removed from DeepSpeed since) ran XTC from JSON
configs. This maps what xtc can do exactly and refuses, naming them, the settings
it cannot honour:

- ``layer_reduction`` -> a distill stage keeping ``teacher_layer`` (``keep_number_layer``
  must be its length; ``module_name_prefix`` must be the model's layer list).
- ``weight_quantization`` -> quantization rules: each of ``different_groups`` gives its
  ``modules`` (DeepSpeed matches them anywhere in a module name) ``target_bits``;
  one scale per matrix (``quantize_groups`` 1) for Linear layers and one per row for
  embeddings, as DeepSpeed does; symmetric, nearest rounding, from step 0.
- ``activation_quantization`` -> 8-bit inputs of the same modules, ``dynamic``
  (per token) or ``static`` (EMA range) calibration.
- ``train_batch_size`` and ``gradient_clipping`` -> every stage's batch size and clipping.

The budgets and learning rates (which DeepSpeed configs do not hold) come from the
base recipe (``--recipe``). Pruning sections must be disabled.
"""

import json
import re
from pathlib import Path

from xtc.errors import XtcError
from xtc.arch import architecture
from xtc.recipe import Recipe

_PRUNING = ("sparse_pruning", "row_pruning", "head_pruning", "channel_pruning")


def _enabled(section: dict) -> bool:
    return bool(section.get("enabled", section.get("shared_parameters", {}).get("enabled", False)))


def _refuse(problems: list[str], where: str, value, why: str) -> None:
    """Note a setting xtc cannot honour; they are all reported together at the end."""
    problems.append(f"{where} = {json.dumps(value)}: {why}")


def _weight_rules(section: dict, problems: list[str]) -> dict[str, int]:
    """DeepSpeed module pattern -> weight bits."""
    shared = section.get("shared_parameters", {})
    checks = {"schedule_offset": (0, "xtc quantizes from the first step"),
              "quantize_groups": (1, "xtc uses one scale per matrix for Linear layers (and per row for embeddings)"),
              "quantization_type": ("symmetric", "1-/2-bit weights are symmetric"),
              "rounding": ("nearest", "xtc rounds to nearest")}
    for key, (wanted, why) in checks.items():
        if key in shared and shared[key] != wanted:
            _refuse(problems, f"weight_quantization.shared_parameters.{key}", shared[key], why)
    if shared.get("fp16_mixed_quantize", {}).get("enabled"):
        _refuse(problems, "weight_quantization.shared_parameters.fp16_mixed_quantize.enabled", True,
                "mixed FP16/quantized training is not supported")
    bits = {}
    for name, group in section.get("different_groups", {}).items():
        params = group.get("params", {})
        where = f"weight_quantization.different_groups.{name}.params"
        if params.get("start_bits", params.get("target_bits")) != params.get("target_bits"):
            _refuse(problems, f"{where}.start_bits", params.get("start_bits"),
                    "progressive bit reduction is not supported: start_bits must equal target_bits")
        target = params.get("target_bits")
        if target not in (1, 2, 3, 4, 5, 6, 7, 8):
            _refuse(problems, f"{where}.target_bits", target, "valid bits are 1 (binary), 2 (ternary), 3 to 8")
        for module in group.get("modules", []):
            bits[module] = target
    if not bits:
        _refuse(problems, "weight_quantization.different_groups", section.get("different_groups"), "no module is quantized")
    return bits


def _activation_bits(section: dict, problems: list[str]) -> tuple[dict[str, int], str]:
    shared = section.get("shared_parameters", {})
    calibration = shared.get("range_calibration", "dynamic")
    if calibration not in ("dynamic", "static"):
        _refuse(problems, "activation_quantization.shared_parameters.range_calibration", calibration,
                "valid: dynamic, static")
    if shared.get("quantization_type", "symmetric") != "symmetric":
        _refuse(problems, "activation_quantization.shared_parameters.quantization_type", shared["quantization_type"],
                "xtc quantizes activations symmetrically")
    if shared.get("schedule_offset", 0) != 0:
        _refuse(problems, "activation_quantization.shared_parameters.schedule_offset", shared["schedule_offset"],
                "xtc quantizes from the first step")
    bits = {}
    for name, group in section.get("different_groups", {}).items():
        value = group.get("params", {}).get("bits")
        if value not in (2, 3, 4, 5, 6, 7, 8):
            _refuse(problems, f"activation_quantization.different_groups.{name}.params.bits", value, "valid bits are 2 to 8")
        for module in group.get("modules", []):
            bits[module] = value
    return bits, calibration


def _quant_config(compression: dict, problems: list[str]) -> dict | None:
    weights = compression.get("weight_quantization", {})
    if not _enabled(weights):
        return None
    weight_bits = _weight_rules(weights, problems)
    activations = compression.get("activation_quantization", {})
    act_bits, mode = _activation_bits(activations, problems) if _enabled(activations) else ({}, "dynamic")
    unknown = set(act_bits) - set(weight_bits)
    if unknown:
        _refuse(problems, "activation_quantization.different_groups modules", sorted(unknown),
                "xtc quantizes the inputs of quantized Linear layers only: list them under weight_quantization too")
    rules = []
    for module, bits in weight_bits.items():
        found = f".*{re.escape(module)}.*"
        # Embeddings: one scale per row; Linear layers: one per matrix, with their input activations.
        rules.append({"pattern": f"(?=.*embeddings){found}", "weight_bits": bits, "granularity": "row"})
        rules.append({"pattern": found, "weight_bits": bits, "granularity": "tensor",
                      "act_bits": act_bits.get(module), "act_mode": mode if act_bits.get(module) else "dynamic"})
    return {"rules": rules}


def recipe_from_deepspeed(path: str | Path, base: Recipe, model_type: str) -> Recipe:
    """``base``'s teacher stage and budgets, with the layers and quantization of a DeepSpeed config."""
    path = Path(path)
    if not path.is_file():
        raise XtcError(f"DeepSpeed config {str(path)!r} does not exist")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise XtcError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    compression = config.get("compression_training")
    if not isinstance(compression, dict):
        raise XtcError(f"{path}: no compression_training section")
    problems: list[str] = []
    for name in _PRUNING:
        if name in compression and _enabled(compression[name]):
            _refuse(problems, f"compression_training.{name}.shared_parameters.enabled", True, "pruning is not supported by xtc")
    unknown = set(compression) - {"layer_reduction", "weight_quantization", "activation_quantization", *_PRUNING}
    if unknown:
        _refuse(problems, "compression_training keys", sorted(unknown), "not a compression method xtc knows")
    if config.get("fp16", {}).get("enabled"):
        _refuse(problems, "fp16.enabled", True, "xtc trains in FP32: set it to false")

    layers = None
    reduction = compression.get("layer_reduction", {})
    if reduction.get("enabled"):
        layers = list(reduction.get("teacher_layer", []))
        if reduction.get("keep_number_layer") != len(layers):
            _refuse(problems, "layer_reduction.keep_number_layer", reduction.get("keep_number_layer"),
                    f"must equal the length of teacher_layer ({len(layers)})")
        prefix = architecture(model_type).layers
        if reduction.get("module_name_prefix", prefix) != prefix:
            _refuse(problems, "layer_reduction.module_name_prefix", reduction["module_name_prefix"],
                    f"the {model_type} model's layers are {prefix}")
    quant = _quant_config(compression, problems)
    if problems:
        raise XtcError(f"DeepSpeed config {path}: {len(problems)} setting{'s' * (len(problems) > 1)} xtc cannot honour:"
                       "\n  " + "\n  ".join(problems))
    if layers is None and quant is None:
        raise XtcError(f"{path}: compression_training enables neither layer_reduction nor weight_quantization")

    train = {}
    if "train_batch_size" in config:
        train["batch_size"] = int(config["train_batch_size"])
    if "gradient_clipping" in config:
        train["max_grad_norm"] = float(config["gradient_clipping"])
    teacher = base.stages[0]
    if len(base.stages) < 2:
        raise XtcError("the base recipe has no distill stage to take budgets from")
    last = base.stages[-1]  # the quantization stage's budget, the longest
    # (the DeepSpeed config says nothing of trimming the vocabulary: the compressed model keeps the teacher's)
    stage = last.model_copy(update={"name": "compress", "layers": layers, "quant": quant, "init": "teacher",
                                    "trim_vocabulary": False, **train})
    stages = [teacher.model_copy(update=train), stage]
    described = f"from DeepSpeed config {path.name}: layers {layers or 'all'}, quantization {'on' if quant else 'off'}"
    return Recipe.model_validate({"description": described,
                                  "stages": [s.model_dump(mode="json") for s in stages]})

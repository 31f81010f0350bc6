"""Quantization-aware training: 1-/2-bit (and k-bit symmetric) weights, 8-bit activations, chosen by name pattern.

    config.py      QuantSpec / QuantRule / QuantConfig, the w1a8 / w2a8 / w1a8-word2 presets (no torch)
    primitives.py  quantizers on tensors: integer codes + scales, fake quantization (STE)
    modules.py     QuantLinear, QuantEmbedding
    apply.py       quantize_(model, config), quantized_modules(model)

Names are imported lazily, so that ``xtc.quant.config`` can be used without torch.
"""

from importlib import import_module

# public name -> module that defines it
_EXPORTS = {
    **dict.fromkeys(
        ["Granularity", "ActMode", "LINEAR_ROLES", "QuantSpec", "QuantRule", "QuantConfig", "PRESETS",
         "get_quant_config"],
        "xtc.quant.config",
    ),
    **dict.fromkeys(
        ["binary_codes", "ternary_codes", "symmetric_codes", "weight_codes", "dequantize",
         "binarize", "ternarize", "quantize_symmetric", "quantize_weight",
         "quantize_activation_per_token", "StaticRange"],
        "xtc.quant.primitives",
    ),
    **dict.fromkeys(["QuantLinear", "QuantEmbedding"], "xtc.quant.modules"),
    **dict.fromkeys(["quantize_", "quantized_modules"], "xtc.quant.apply"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'xtc.quant' has no attribute {name!r}")

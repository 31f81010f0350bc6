"""Turning a full-precision model into a quantization-aware one, in place."""

from torch import nn

from xtc.errors import XtcError
from xtc.quant.config import QuantConfig, get_quant_config
from xtc.quant.modules import FP16_KEPT, PLAIN_OF_FP16, QuantEmbedding, QuantLinear


def quantized_modules(model: nn.Module) -> list[tuple[str, QuantLinear | QuantEmbedding]]:
    """The (full name, module) of every quantized module, in model order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (QuantLinear, QuantEmbedding))]


def quantize_(model: nn.Module, config: str | dict | QuantConfig) -> nn.Module:
    """Replace, in place, each nn.Linear / nn.Embedding whose full name a rule matches by its quantized wrapper.

    The first matching rule (``re.fullmatch``) decides; a rule with no bits
    (weight_bits and, for a Linear, act_bits None) keeps the module as it is.
    The wrappers adopt the modules' Parameters, so an optimizer built before
    still trains them. The config is recorded as ``model.config.xtc_quantization``
    (Hugging Face models), which ``save_pretrained`` writes to config.json;
    ``quantize_(model, model.config.xtc_quantization)`` rebuilds a reloaded model.
    Fails on a model already quantized, and when no module matches any rule.
    """
    config = get_quant_config(config)
    if quantized_modules(model):
        raise XtcError("the model is already quantized: quantize a full-precision model")
    matched = []  # (name, module, rule)
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            rule = config.rule_for(name)
            if rule is not None:
                matched.append((name, module, rule))
    if not matched:
        raise XtcError(
            f"no nn.Linear or nn.Embedding module matches a quantization rule "
            f"(patterns: {', '.join(repr(r.pattern) for r in config.rules)})"
        )
    for name, module, rule in matched:
        if isinstance(module, nn.Linear) and (rule.weight_bits is not None or rule.act_bits is not None):
            model.set_submodule(name, QuantLinear.from_float(module, rule))
        elif isinstance(module, nn.Embedding) and rule.weight_bits is not None:
            model.set_submodule(name, QuantEmbedding.from_float(module, rule))
    if config.kept == "fp16":
        _round_kept_to_fp16(model)
    if hasattr(model, "config"):
        model.config.xtc_quantization = config.model_dump(mode="json")
    return model


def _round_kept_to_fp16(model: nn.Module) -> None:
    """Every floating tensor that no rule quantizes computes rounded to float16 (what the file stores)."""
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear):
            module.round_kept = True
        elif type(module) in FP16_KEPT:
            module.__class__ = FP16_KEPT[type(module)]
        elif isinstance(module, QuantEmbedding):
            continue
        elif any(p.is_floating_point() for p in module.parameters(recurse=False)):
            raise XtcError(f"kept: fp16: module {name} ({type(module).__name__}) holds its own parameters and "
                           "is not a Linear, Embedding or LayerNorm; use kept: fp32 for this model")


def unquantize_(model: nn.Module) -> nn.Module:
    """The inverse of ``quantize_``, in place: every wrapper becomes the plain module again, around the same
    latent full-precision Parameters (static activation ranges are dropped). A student quantized one way can
    so start another quantization from its trained latent weights (e.g. 1-bit from a trained 2-bit model)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, QuantLinear):
            plain = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                              device="meta")
            plain.weight, plain.bias = module.weight, module.bias
            model.set_submodule(name, plain)
        elif isinstance(module, QuantEmbedding):
            plain = nn.Embedding(module.num_embeddings, module.embedding_dim, module.padding_idx,
                                 scale_grad_by_freq=module.scale_grad_by_freq, sparse=module.sparse, device="meta")
            plain.weight = module.weight
            model.set_submodule(name, plain)
        elif type(module) in PLAIN_OF_FP16:
            module.__class__ = PLAIN_OF_FP16[type(module)]
    if hasattr(model, "config") and hasattr(model.config, "xtc_quantization"):
        del model.config.xtc_quantization
    return model

"""Export a quantized model as a plain, dequantized Hugging Face checkpoint.

Every quantized weight is replaced by its dequantized values (``alpha * sign``,
``alpha * ternary code``), so ``AutoModelForSequenceClassification.from_pretrained``
loads it with no xtc code. What a plain checkpoint cannot express is the 8-bit
quantization of activations: the exported model computes on full-precision
activations, so its logits differ slightly from the fake-quant model's (its
predictions agree except near ties; measured in the tests).
"""

import copy
from pathlib import Path

import torch
from torch import nn

from xtc.errors import XtcError
from xtc.quant.apply import quantized_modules
from xtc.quant.modules import PLAIN_OF_FP16, QuantEmbedding, QuantLinear
from xtc.quant.primitives import round_fp16


def export_hf(model, out_dir: str | Path, tokenizer=None) -> Path:
    """Write ``model`` (in memory, or a stage folder) dequantized to ``out_dir``."""
    from xtc.models import model_and_tokenizer, quiet_transformers

    model, tokenizer = model_and_tokenizer(model, tokenizer)
    if not quantized_modules(model):
        raise XtcError("the model is not quantized: quantize it (xtc.quantize_ or an xtc run stage) first")
    model = copy.deepcopy(model)  # the caller's model stays quantized
    with torch.no_grad():
        for name, module in list(model.named_modules()):
            if isinstance(module, QuantLinear):
                plain = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
                plain.weight.copy_(module.quantized_weight())
                if module.bias is not None:
                    plain.bias.copy_(module.kept_bias())
                model.set_submodule(name, plain)
            elif isinstance(module, QuantEmbedding):
                table = module(torch.arange(module.weight.shape[0]))  # (vocab, hidden), dequantized rows
                plain = nn.Embedding(*table.shape, padding_idx=module.padding_idx)
                plain.weight.copy_(table)
                model.set_submodule(name, plain)
            elif type(module) in PLAIN_OF_FP16:  # kept: fp16: the values it computes with, in a plain module
                for param in module.parameters(recurse=False):
                    param.copy_(round_fp16(param))
                module.__class__ = PLAIN_OF_FP16[type(module)]
    del model.config.xtc_quantization
    out = Path(out_dir)
    with quiet_transformers():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return out


def export_onnx(model, out_dir: str | Path, tokenizer=None) -> Path:
    """The dequantized model as ``OUT/model.onnx`` (inputs input_ids, attention_mask, token_type_ids;
    output logits; batch and sequence dynamic) with its tokenizer, for ONNX Runtime."""
    from xtc.models import quiet_transformers

    out = export_hf(model, Path(out_dir), tokenizer)
    from transformers import AutoModelForSequenceClassification

    with quiet_transformers():
        plain = AutoModelForSequenceClassification.from_pretrained(out).eval()
    ids = torch.ones(1, 8, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dynamic = {name: {0: "batch", 1: "sequence"} for name in names}
    torch.onnx.export(plain, (ids, torch.ones_like(ids), torch.zeros_like(ids)), out / "model.onnx", dynamo=False,
                      input_names=names, output_names=["logits"], dynamic_axes={**dynamic, "logits": {0: "batch"}})
    for weights in out.glob("model.safetensors*"):
        weights.unlink()  # the ONNX graph holds the weights
    return out

"""Inference over packed weights (packed/SPEC.md) with the low-bit C kernels.

``load(PACKED_DIR)`` builds the Hugging Face model on the ``meta`` device (no
weights allocated), swaps every quantized Linear / Embedding for a packed module
that keeps its bits packed, and fills the kept tensors (embeddings kept,
LayerNorms, biases, pooler, classifier) from the file. Attention, softmax,
LayerNorm and GELU run in torch, in FP32, as in training.

A packed Linear computes ``y = acc * s_token * alpha + bias`` where ``acc`` is
the exact int32 product of the 8-bit per-token activation codes with the 1-bit
(or ternary) weight codes: what a fake-quant QuantLinear computes in inference,
bit for bit. The codes are unpacked once at load into the kernels' bit
layout (kernels.prepare), still one bit per binary weight and two per ternary one.
"""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from xtc import kernels
from xtc.arch import architecture
from xtc.errors import XtcError
from xtc.packed.layout import QUANTIZED_ENCODINGS
from xtc.packed.read import DECODERS, PackedModel, read_packed
from xtc.quant.config import recorded_quant_config


class PackedLinear(nn.Module):
    """A W1A8 / W2A8 Linear over packed weights. x: (..., in_features) -> (..., out_features).

    ``weights``: the codes in the kernels' bit layout (kernels.prepare: one bit per weight
    for binary, two for ternary); ``alpha``: float32 (1,) or (out_features,).
    """

    def __init__(self, bits: int, weights: kernels.LowbitWeights, alpha: np.ndarray, bias: np.ndarray | None):
        super().__init__()
        self.bits, self.weights, self.alpha, self.bias = bits, weights, alpha.reshape(-1), bias
        self.out_features, self.in_features = weights.out_features, weights.in_features

    @classmethod
    def from_packed(cls, packed: PackedModel, name: str, act_bits: int | None) -> "PackedLinear":
        entry = packed.header["tensors"][f"{name}.weight"]
        if entry["granularity"] == "group":
            raise XtcError(f"{name}: the runtime runs one scale per matrix or per row, not per group (yet)")
        if act_bits != 8:
            raise XtcError(f"{name}: the runtime needs 8-bit activations, the model has {act_bits}")
        codes = packed.codes(f"{name}.weight")
        alpha = packed.stored[f"{name}.weight.scale"]
        bias = packed.dequantized(f"{name}.bias") if f"{name}.bias" in packed.header["tensors"] else None
        return cls(entry["bits"], kernels.prepare(codes, entry["bits"]), alpha, bias)

    @classmethod
    def from_quant_linear(cls, layer) -> "PackedLinear":
        """Pack a QuantLinear (1-/2-bit weights, 8-bit activations) in memory."""
        from xtc.quant.primitives import weight_codes

        spec = layer.spec
        assert layer.runs_packed(), spec
        codes, scale = weight_codes(layer.weight.detach(), spec.weight_bits, spec.granularity)
        bias = None if layer.bias is None else layer.kept_bias().detach().numpy()
        return cls(spec.weight_bits, kernels.prepare(codes.numpy(), spec.weight_bits), scale.numpy(), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.detach().reshape(-1, self.in_features).float().numpy()
        # as many threads as torch's intra-op pool, whose OpenMP team runs them (torch.set_num_threads)
        y = kernels.linear(rows, self.weights, self.alpha, self.bias, threads=torch.get_num_threads())
        return torch.from_numpy(y).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight_bits={self.bits}, act_bits=8"


class PackedEmbedding(nn.Module):
    """Word embeddings with 1-/2-bit rows: only the looked-up rows are unpacked."""

    def __init__(self, packed: PackedModel, name: str, padding_idx: int | None):
        super().__init__()
        entry = packed.header["tensors"][f"{name}.weight"]
        self.num_embeddings, self.embedding_dim = entry["shape"]
        if entry["granularity"] == "group":
            raise XtcError(f"{name}: the runtime runs one scale per table or per row, not per group (yet)")
        self.decode = DECODERS[entry["encoding"]]
        self.stored = packed.packed_codes(f"{name}.weight")
        self.scale = packed.stored[f"{name}.weight.scale"]  # (1, 1) or (rows, 1)
        self.padding_idx = padding_idx

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1).numpy()
        rows = self.stored[flat]
        scale = self.scale if self.scale.shape[0] == 1 else self.scale[flat]
        values = self.decode(rows, self.embedding_dim).astype(np.float32) * scale
        return torch.from_numpy(values).reshape(*ids.shape, self.embedding_dim)


def load(folder: str | Path):
    """A packed model folder -> an inference-only Hugging Face model whose quantized layers stay packed."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from xtc.models import quiet_transformers

    packed = read_packed(folder)
    config_dict = dict(packed.header["architecture"])
    architecture(config_dict.get("model_type", "?"))
    config = AutoConfig.for_model(**config_dict)
    with torch.device("meta"), quiet_transformers():
        model = AutoModelForSequenceClassification.from_config(config)
    quant = recorded_quant_config(packed.header["quantization"])
    quantized = {name.removesuffix(".weight") for name, e in packed.header["tensors"].items()
                 if e["encoding"] in QUANTIZED_ENCODINGS}
    for name in sorted(quantized):
        module = model.get_submodule(name)
        if isinstance(module, nn.Linear):
            rule = quant.rule_for(name)
            model.set_submodule(name, PackedLinear.from_packed(packed, name, rule.act_bits if rule else None))
        elif isinstance(module, nn.Embedding):
            model.set_submodule(name, PackedEmbedding(packed, name, module.padding_idx))
        else:
            raise XtcError(f"{folder}: quantized tensor {name} is neither a Linear nor an Embedding")
    kept = {name: torch.from_numpy(packed.dequantized(name)) for name, e in packed.header["tensors"].items()
            if name.removesuffix(".weight") not in quantized and not _is_packed_bias(name, quantized)}
    _, unexpected = model.load_state_dict(kept, strict=False, assign=True)
    if unexpected:
        raise XtcError(f"{folder}: tensors {unexpected[:3]} do not belong to a {config.model_type} model")
    _rebuild_buffers(model, config)
    still_meta = [n for n, p in [*model.named_parameters(), *model.named_buffers()] if p.is_meta]
    if still_meta:
        raise XtcError(f"{folder}: the file lacks tensors {still_meta[:3]}")
    return model.eval()


def _is_packed_bias(name: str, quantized: set[str]) -> bool:
    return name.endswith(".bias") and name.removesuffix(".bias") in quantized


def _rebuild_buffers(model: nn.Module, config) -> None:
    """Integer buffers (position ids, token type ids) are not stored: make them as the model does."""
    for module in model.modules():
        for buffer_name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.is_meta and buffer_name == "position_ids":
                module.register_buffer(buffer_name, torch.arange(buffer.shape[-1]).expand(1, -1), persistent=False)
            elif buffer.is_meta and buffer_name == "token_type_ids":
                module.register_buffer(buffer_name, torch.zeros(buffer.shape, dtype=torch.long), persistent=False)

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

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xtc import kernels
from xtc.arch import architecture
from xtc.errors import XtcError
from xtc.packed.codecs import LOW_BIT
from xtc.packed.read import PackedModel, read_packed


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
    def from_packed(cls, packed: PackedModel, name: str) -> "PackedLinear":
        entry = packed.entry(f"{name}.weight")
        if entry["granularity"] == "group":
            raise XtcError(f"{name}: the runtime runs one scale per matrix or per row, not per group (yet)")
        if entry["act_bits"] != 8 or entry["act_mode"] != "dynamic":
            raise XtcError(f"{name}: the runtime runs 8-bit dynamic activations, the file records "
                           f"{entry['act_bits']} ({entry['act_mode']})")
        codes = packed.codes(f"{name}.weight")
        alpha = packed.scale(f"{name}.weight")
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
        entry = packed.entry(f"{name}.weight")
        self.num_embeddings, self.embedding_dim = entry["shape"]
        if entry["granularity"] == "group":
            raise XtcError(f"{name}: the runtime runs one scale per table or per row, not per group (yet)")
        self.decode = packed.codec(f"{name}.weight").unpack
        self.stored = packed.packed_codes(f"{name}.weight")
        self.scale = packed.scale(f"{name}.weight")  # (1, 1) or (rows, 1)
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
    config_dict = _checked_architecture(packed, AutoConfig)
    try:
        config = AutoConfig.for_model(**config_dict)
        with torch.device("meta"), quiet_transformers():
            model = AutoModelForSequenceClassification.from_config(config)
    except Exception as e:  # noqa: BLE001 - transformers' config checks raise several types of their own
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise XtcError(f"{folder}: the header's architecture is not a valid model config: {detail}") from None
    _check_shapes(packed, model)
    quantized = {name.removesuffix(".weight") for name, e in packed.header["tensors"].items()
                 if e["encoding"] in LOW_BIT}
    for name in sorted(quantized):
        module = model.get_submodule(name)
        if isinstance(module, nn.Linear):
            model.set_submodule(name, PackedLinear.from_packed(packed, name))
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
    model.register_forward_hook(_finite_logits(folder))
    return model.eval()


def _finite_logits(folder):
    """A forward hook: logits that overflowed (a file whose values are valid but absurd) are an error,
    never a NaN prediction."""
    def check(module, inputs, output):
        logits = output.logits if hasattr(output, "logits") else output[0]  # return_dict=False: a tuple
        if not torch.isfinite(logits).all():
            raise XtcError(f"{folder}: the model computed non-finite logits (its stored values overflow)")
    return check


# config fields that change what a forward pass returns or how it runs, not the model: a file does not set them
_RUN_SETTINGS = {"return_dict": True, "output_hidden_states": False, "output_attentions": False, "torchscript": False,
                 "chunk_size_feed_forward": 0, "is_decoder": False, "add_cross_attention": False}


def _checked_architecture(packed: PackedModel, auto_config) -> dict:
    """The header's architecture, each field of the type transformers' default config gives it, its layer
    count that of the tensors, and the forward's run settings xtc's own."""
    config = dict(packed.header["architecture"])
    arch = architecture(str(config.get("model_type")))
    defaults = auto_config.for_model(config["model_type"]).to_dict()
    for key, value in config.items():
        default = defaults.get(key)
        if default is not None and value is not None and not _same_kind(value, default):
            raise XtcError(f"{packed.folder}: header field architecture.{key} is {value!r}, expected "
                           f"{type(default).__name__}")
    held = packed.layer_count(arch.layers)
    if config.get(arch.num_layers_key) != held:
        raise XtcError(f"{packed.folder}: header field architecture.{arch.num_layers_key} is "
                       f"{config.get(arch.num_layers_key)!r}, but the file holds {held} layers")
    return {**config, **_RUN_SETTINGS}


def _same_kind(value, default) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, type(default))


def _check_shapes(packed: PackedModel, model: nn.Module) -> None:
    """The header's architecture against its tensors: every tensor is one of the model's, of its shape."""
    expected = {n: tuple(t.shape) for n, t in [*model.named_parameters(), *model.named_buffers()]}
    for name, entry in packed.header["tensors"].items():
        if name not in expected:
            raise XtcError(f"{packed.folder}: tensor {name} does not belong to a {model.config.model_type} model "
                           "of the header's architecture")
        if tuple(entry["shape"]) != expected[name]:
            raise XtcError(f"{packed.folder}: tensor {name} is {entry['shape']}, but the header's architecture "
                           f"makes it {list(expected[name])}")


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

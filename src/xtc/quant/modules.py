"""Quantization-aware drop-in replacements for nn.Linear and nn.Embedding, and float16 kept modules.

Both keep the latent full-precision ``weight`` (and ``bias``) Parameters under
the names nn.Linear / nn.Embedding use (``from_float`` adopts the very same
Parameter objects), so state dicts, checkpoints and optimizers see no change.
Every forward pass re-quantizes the latent weights (straight-through gradients,
see ``primitives``). The only extra state is the ``act_range.max_abs`` buffer of
a QuantLinear in static activation mode.

With a config's ``kept: fp16`` every other floating tensor is rounded to float16 in the
forward pass: a QuantLinear's bias (``round_kept``), and the plain nn.Linear / nn.Embedding /
nn.LayerNorm modules, whose class becomes the ``Fp16*`` subclass below (the same Parameters
and names, so state dicts and HF saving see no change).
"""

import torch
import torch.nn.functional as F
from torch import nn

from xtc.errors import XtcError
from xtc.quant.config import QuantSpec
from xtc.quant.primitives import (StaticRange, quantize_activation_per_token, quantize_symmetric, quantize_weight,
                                  round_fp16, symmetric_codes, weight_codes)


def _spec_repr(spec: QuantSpec, activations: bool) -> str:
    parts = [f"weight_bits={spec.weight_bits}", f"granularity={spec.granularity}"]
    if spec.granularity == "group":
        parts.append(f"group_size={spec.group_size}")
    if activations:
        parts.append(f"act_bits={spec.act_bits}")
        if spec.act_bits is not None:
            parts.append(f"act_mode={spec.act_mode}")
    return ", ".join(parts)


class QuantLinear(nn.Module):
    """``F.linear(quantized input, quantized weight, bias)``; weight_bits / act_bits None keep that side FP."""

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None, spec: QuantSpec):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight = weight  # (out_features, in_features), latent full precision
        self.bias = bias  # (out_features,) or None
        self.spec = spec
        self.act_range = StaticRange(device=weight.device) if spec.act_bits and spec.act_mode == "static" else None
        self.round_kept = False  # the bias rounded to float16 (a config's kept: fp16)

    @classmethod
    def from_float(cls, module: nn.Linear, spec: QuantSpec) -> "QuantLinear":
        return cls(module.weight, module.bias, spec)

    def quantized_weight(self) -> torch.Tensor:  # (out_features, in_features)
        s = self.spec
        return self.weight if s.weight_bits is None else quantize_weight(
            self.weight, s.weight_bits, s.granularity, s.group_size
        )

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:  # (..., in_features)
        s = self.spec
        if s.act_bits is None:
            return x
        if self.act_range is None:
            return quantize_activation_per_token(x, s.act_bits)
        return quantize_symmetric(x, s.act_bits, "tensor", max_abs=self.act_range(x))

    def kept_bias(self) -> torch.Tensor | None:
        return round_fp16(self.bias) if self.round_kept and self.bias is not None else self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in_features) -> (..., out_features)
        if not self.training and not torch.is_grad_enabled() and self.runs_packed():
            return self._integer_forward(x)
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.kept_bias())

    def runs_packed(self) -> bool:
        """The layers the packed runtime runs: 1-/2-bit weights, one scale per matrix or row, 8-bit per-token inputs."""
        s = self.spec
        return s.weight_bits in (1, 2) and s.granularity in ("tensor", "row") and s.act_bits == 8 \
            and self.act_range is None

    def _integer_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inference as the packed kernels compute it: the exact integer product of the codes, then
        ``acc * (s_token * alpha) + bias``. Codes and scales are the fake-quant's, so this is the same
        function as F.linear of the dequantized tensors, without its float rounding of the sums
        (which can flip a borderline 8-bit code in the next layer): fake-quant eval and packed
        runtime then agree bit for bit. The sums are exact in float32: |sum| <= 128 * K < 2^24."""
        codes_w, alpha = weight_codes(self.weight, self.spec.weight_bits, self.spec.granularity)  # (N, K), (N|1,1,1)
        rows = x.reshape(-1, self.in_features).float()  # (M, K)
        codes_x, scale = symmetric_codes(rows, 8, "row")  # (M, K), (M, 1, 1)
        assert self.in_features * 128 < 2**24, self.in_features
        acc = F.linear(codes_x.float(), codes_w.float())  # (M, N), integers
        y = acc * (scale.reshape(-1, 1) * alpha.reshape(1, -1))
        if self.bias is not None:
            y = y + self.kept_bias()
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"{_spec_repr(self.spec, activations=True)}")


class QuantEmbedding(nn.Module):
    """An embedding lookup in the quantized table (weights only: the inputs are token ids).

    With "row" / "group" granularity each row's codes depend on that row only, so
    the looked-up rows are quantized after the lookup: the same values, at the
    cost of the batch's tokens instead of the whole vocabulary.
    """

    def __init__(self, weight: nn.Parameter, spec: QuantSpec, padding_idx: int | None = None,
                 scale_grad_by_freq: bool = False, sparse: bool = False):
        super().__init__()
        self.num_embeddings, self.embedding_dim = weight.shape
        self.weight = weight  # (num_embeddings, embedding_dim), latent full precision
        self.spec = spec
        self.padding_idx = padding_idx
        self.scale_grad_by_freq = scale_grad_by_freq
        self.sparse = sparse

    @classmethod
    def from_float(cls, module: nn.Embedding, spec: QuantSpec) -> "QuantEmbedding":
        if module.max_norm is not None:
            raise XtcError("embeddings with max_norm (renormalised in place at lookup) cannot be quantized")
        return cls(module.weight, spec, module.padding_idx, module.scale_grad_by_freq, module.sparse)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (...) -> (..., embedding_dim)
        s = self.spec
        whole_table = s.weight_bits is not None and s.granularity == "tensor"  # one scale from the whole table
        table = quantize_weight(self.weight, s.weight_bits, "tensor") if whole_table else self.weight
        rows = F.embedding(ids, table, self.padding_idx, None, 2.0, self.scale_grad_by_freq, self.sparse)
        if s.weight_bits is None or whole_table:
            return rows
        return quantize_weight(rows, s.weight_bits, s.granularity, s.group_size)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, {_spec_repr(self.spec, activations=False)}"


class Fp16Linear(nn.Linear):
    """An nn.Linear computing with its weight and bias rounded to float16 (``round_fp16``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, round_fp16(self.weight), None if self.bias is None else round_fp16(self.bias))


class Fp16Embedding(nn.Embedding):
    """An nn.Embedding looking up its table rounded to float16 (``round_fp16``: only the looked-up rows)."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)
        return round_fp16(rows)


class Fp16LayerNorm(nn.LayerNorm):
    """An nn.LayerNorm with its weight and bias rounded to float16 (``round_fp16``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else round_fp16(self.weight)
        bias = None if self.bias is None else round_fp16(self.bias)
        return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)


FP16_KEPT = {nn.Linear: Fp16Linear, nn.Embedding: Fp16Embedding, nn.LayerNorm: Fp16LayerNorm}
PLAIN_OF_FP16 = {fp16: plain for plain, fp16 in FP16_KEPT.items()}

"""Quantizers on tensors: integer codes with their scales, and fake quantization.

Each quantizer comes in two forms built on the same math:

- ``*_codes(x, ...) -> (codes, scale)``: the integer codes and the scales, what a
  packed exporter stores;
- ``binarize`` / ``ternarize`` / ``quantize_*``: the fake-quantized tensor (same
  shape and dtype as ``x``), defined as ``dequantize(*codes)`` so the trained and
  the exported values cannot drift apart.

Fake quantization uses a straight-through estimator (``_StraightThrough``): the
forward pass returns the dequantized tensor, the backward pass is the identity to
``x`` (no gradient to the scales, none clipped away), as in the XTC reference.

Granularity (how ``x`` is split into groups that share one scale), with ``x`` of
shape ``(*lead, n)``; "rows" are the ``prod(lead)`` vectors along the last dim:

- ``"tensor"``: one group for the whole tensor;
- ``"row"``: one group per row (a Linear output row, an embedding row, a token);
- ``"group"``: contiguous groups of ``group_size`` along each row; the last group
  of a row is shorter when ``n`` is not a multiple of ``group_size``.

Statistics and scales are float32 whatever ``x``'s dtype. Scales are returned
grouped, shape ``(R, G, 1)``: ``R`` = 1 ("tensor") or the
number of rows, ``G`` = groups per row (1 unless "group"). ``dequantize`` expands
them back to ``x``'s shape.
"""

import math

import torch
from torch import nn

from xtc.errors import XtcError
from xtc.quant.config import Granularity


# ---- groups -------------------------------------------------------------------------------------

def _grouped(x: torch.Tensor, granularity: Granularity, group_size: int | None) -> torch.Tensor:
    """``x`` as ``(R, G, N)``, the ragged last group of each row padded with zeros.

    Zero padding changes no statistic used here (sums of |x|, max |x|, counts of
    |x| above a non-negative threshold); means divide by ``_group_counts``.
    """
    if granularity == "tensor":
        return x.reshape(1, 1, -1)
    rows = x.reshape(-1, x.shape[-1])  # (R, n)
    if granularity == "row":
        return rows.unsqueeze(1)
    assert granularity == "group" and group_size, (granularity, group_size)
    pad = -rows.shape[1] % group_size
    return nn.functional.pad(rows, (0, pad)).reshape(rows.shape[0], -1, group_size)


def _group_counts(x: torch.Tensor, granularity: Granularity, group_size: int | None) -> torch.Tensor:
    """Real (unpadded) element count of each group, float32, shape ``(1, G, 1)``."""
    if granularity == "tensor":
        return torch.full((1, 1, 1), x.numel(), dtype=torch.float32, device=x.device)
    n = x.shape[-1]
    if granularity == "row":
        return torch.full((1, 1, 1), n, dtype=torch.float32, device=x.device)
    starts = torch.arange(0, n, group_size, device=x.device)
    return (n - starts).clamp(max=group_size).float().reshape(1, -1, 1)


def _ungrouped(g: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of ``_grouped``: ``(R, G, N)`` -> ``shape``, padding dropped."""
    rows = g.reshape(g.shape[0], -1)  # (R, G * N)
    return rows[:, : math.prod(shape) // g.shape[0]].reshape(shape)


def dequantize(
    codes: torch.Tensor,
    scale: torch.Tensor,
    granularity: Granularity = "tensor",
    group_size: int | None = None,
) -> torch.Tensor:
    """``codes * scale`` in ``scale``'s dtype (float32 from ``*_codes``), shape of ``codes``.

    ``scale`` is grouped ``(R, G, 1)``, as the ``*_codes`` functions return it.
    """
    g = _grouped(codes, granularity, group_size).to(scale.dtype)  # (R, G, N)
    return _ungrouped(g * scale, codes.shape)


# ---- codes --------------------------------------------------------------------------------------

def _binary_alpha(g: torch.Tensor, w: torch.Tensor, granularity: Granularity, group_size: int | None) -> torch.Tensor:
    """Mean |w| of each group of ``g`` (``w`` grouped, ``(R, G, N)``) -> ``(R, G, 1)``."""
    return g.abs().sum(-1, keepdim=True) / _group_counts(w, granularity, group_size)


def binary_codes(
    w: torch.Tensor, granularity: Granularity = "tensor", group_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """BWN: signs int8 in {-1, +1} (sign(0) = +1), alpha = mean |w| per group."""
    g = _grouped(w.detach().float(), granularity, group_size)  # (R, G, N)
    signs = (w >= 0).to(torch.int8).mul_(2).sub_(1)  # not torch.where(w >= 0, 1, -1): 6x slower on CPU
    return signs, _binary_alpha(g, w, granularity, group_size)


def ternary_codes(
    w: torch.Tensor, granularity: Granularity = "tensor", group_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """TWN: codes int8 in {-1, 0, +1} with threshold delta = 0.7 mean |w|; alpha = mean |w| above delta."""
    g = _grouped(w.detach().float(), granularity, group_size)  # (R, G, N)
    delta = 0.7 * g.abs().sum(-1, keepdim=True) / _group_counts(w, granularity, group_size)  # (R, G, 1)
    mask = g.abs() > delta  # padding (0) is never above delta >= 0
    # sum(mask) = 0 only for an all-zero group, where alpha = 0 is right.
    alpha = (g.abs() * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)
    codes = (g > delta).to(torch.int8) - (g < -delta).to(torch.int8)
    return _ungrouped(codes, w.shape), alpha


def symmetric_codes(
    x: torch.Tensor,
    bits: int,
    granularity: Granularity = "tensor",
    group_size: int | None = None,
    max_abs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-bit symmetric: codes int8 in [-2^(k-1), 2^(k-1) - 1], scale = max |x| / 2^(k-1) per group.

    ``max_abs`` replaces the observed range (a static activation range); it must
    broadcast against the grouped ``(R, G, 1)`` scales (a scalar does).
    """
    g = _grouped(x.detach().float(), granularity, group_size)  # (R, G, N)
    scale = _symmetric_scale(g, bits, max_abs)
    levels = 2 ** (bits - 1)
    codes = torch.clamp(torch.round(g / scale), -levels, levels - 1).to(torch.int8)
    return _ungrouped(codes, x.shape), scale


def _symmetric_scale(g: torch.Tensor, bits: int, max_abs: torch.Tensor | None) -> torch.Tensor:
    """The scales of ``symmetric_codes`` for grouped ``g`` ``(R, G, N)`` -> ``(R, G, 1)``."""
    assert 2 <= bits <= 8, bits
    if max_abs is None:
        max_abs = g.abs().amax(-1, keepdim=True)  # (R, G, 1)
    scale = max_abs.float().expand(g.shape[0], g.shape[1], 1) / 2 ** (bits - 1)
    return torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero group: any scale is exact


def weight_codes(
    w: torch.Tensor, bits: int, granularity: Granularity = "tensor", group_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight quantizer for ``bits``: 1 = binary, 2 = ternary, 3..8 = symmetric."""
    if bits == 1:
        return binary_codes(w, granularity, group_size)
    if bits == 2:
        return ternary_codes(w, granularity, group_size)
    return symmetric_codes(w, bits, granularity, group_size)


# ---- fake quantization (straight-through) -------------------------------------------------------

class _StraightThrough(torch.autograd.Function):
    """Forward: ``fn(x)`` in ``x``'s dtype (computed without a graph); backward: the identity to ``x``."""

    @staticmethod
    def forward(ctx, x, fn):
        return fn(x).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


# The two fake quantizers of W1A8 training, which run on every weight and every Linear input at
# every step, skip the int8 codes: they compute ``dequantize(*codes)`` directly, equal to it bit
# for bit (tests/quant/test_primitives.py), several times faster (torch.where over a broadcast
# scale was most of the step's quantization time on CPU).

def _binary_values(t: torch.Tensor, granularity: Granularity, group_size: int | None) -> torch.Tensor:
    """``dequantize(*binary_codes(t))``: alpha with the sign of t, +alpha at 0 and -0 (``t + 0.0`` is +0).
    Equal for every weight but NaN, whose sign is then NaN's sign bit instead of -1."""
    g = _grouped(t.detach().float(), granularity, group_size)  # (R, G, N)
    alpha = _binary_alpha(g, t, granularity, group_size)  # (R, G, 1)
    return _ungrouped(alpha.expand_as(g).copysign(g + 0.0), t.shape)


def _symmetric_values(t: torch.Tensor, bits: int, granularity: Granularity, group_size: int | None,
                      max_abs: torch.Tensor | None) -> torch.Tensor:
    """``dequantize(*symmetric_codes(t))``: the codes stay integer-valued floats (exact) instead of int8."""
    g = _grouped(t.detach().float(), granularity, group_size)  # (R, G, N)
    scale = _symmetric_scale(g, bits, max_abs)  # (R, G, 1)
    levels = 2 ** (bits - 1)
    return _ungrouped(torch.div(g, scale).round_().clamp_(-levels, levels - 1).mul_(scale), t.shape)


def binarize(w: torch.Tensor, granularity: Granularity = "tensor", group_size: int | None = None) -> torch.Tensor:
    """BWN: ``alpha * sign(w)`` per group, alpha = mean |w|."""
    return _StraightThrough.apply(w, lambda t: _binary_values(t, granularity, group_size))


def ternarize(w: torch.Tensor, granularity: Granularity = "tensor", group_size: int | None = None) -> torch.Tensor:
    """TWN: ``alpha * (1[w > delta] - 1[w < -delta])`` per group."""
    return _StraightThrough.apply(
        w, lambda t: dequantize(*ternary_codes(t, granularity, group_size), granularity, group_size)
    )


def quantize_symmetric(
    x: torch.Tensor,
    bits: int,
    granularity: Granularity = "tensor",
    group_size: int | None = None,
    max_abs: torch.Tensor | None = None,
) -> torch.Tensor:
    """k-bit symmetric fake quantization (see ``symmetric_codes``)."""
    return _StraightThrough.apply(x, lambda t: _symmetric_values(t, bits, granularity, group_size, max_abs))


def quantize_weight(
    w: torch.Tensor, bits: int, granularity: Granularity = "tensor", group_size: int | None = None
) -> torch.Tensor:
    """Fake quantization by ``weight_codes``: 1 = binary, 2 = ternary, 3..8 = symmetric."""
    if bits == 1:
        return binarize(w, granularity, group_size)
    if bits == 2:
        return ternarize(w, granularity, group_size)
    return quantize_symmetric(w, bits, granularity, group_size)


def round_fp16(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to the nearest float16 value (kept in ``x``'s dtype), straight-through: the forward
    value is exactly what a float16 file stores (``x + (r - x)`` is exact: ``r - x`` is), the gradient
    is the identity."""
    return x + (x.detach().half().to(x.dtype) - x.detach())


def quantize_activation_per_token(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Dynamic symmetric quantization, one scale per token: x (..., hidden), scale = max |x| over hidden."""
    return quantize_symmetric(x, bits, "row")


class StaticRange(nn.Module):
    """A static activation range: running max |x| of the batches seen in training mode.

    Training mode: the first batch sets the range, later ones update it as an EMA
    (``momentum`` of the old value). Eval mode: the range is frozen. ``max_abs`` = 0
    means "not calibrated yet"; using it then in eval mode raises ``XtcError``.
    """

    def __init__(self, momentum: float = 0.95, device=None):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("max_abs", torch.zeros((), device=device))  # scalar, saved in the state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The range to quantize ``x`` with (a scalar tensor), after updating it in training mode."""
        if self.training:
            batch = x.detach().abs().amax().to(self.max_abs.dtype)
            ema = self.momentum * self.max_abs + (1 - self.momentum) * batch
            self.max_abs.copy_(torch.where(self.max_abs > 0, ema, batch))
        else:
            if not bool(self.max_abs > 0):
                raise XtcError(
                    "a static activation range is used in eval mode before calibration: "
                    "run forward passes in training mode first (or use act_mode 'dynamic')"
                )
        return self.max_abs

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}"

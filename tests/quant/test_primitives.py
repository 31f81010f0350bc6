"""Quantizers on tensors: their defining properties, on shapes that are not multiples of the group size."""

import pytest
import torch

from xtc.errors import XtcError
from xtc.quant.primitives import (StaticRange, binarize, binary_codes, quantize_activation_per_token,
                                  quantize_symmetric, quantize_weight, symmetric_codes, ternarize,
                                  ternary_codes, weight_codes)

SHAPE = (37, 53)  # 53 = 3 * 16 + 5: every row ends with a short group
GRANULARITIES = [("tensor", None), ("row", None), ("group", 16)]


@pytest.fixture
def w():
    torch.manual_seed(0)
    w = torch.randn(SHAPE)
    w[0, 0] = 0.0  # sign(0) must give +alpha
    w[1, 0] = -0.0  # and so must sign(-0), as in binary_codes (-0.0 >= 0)
    return w


def groups(t, granularity, group_size):
    """The groups of a 2-D tensor as flat tensors, by plain slicing (independent of the implementation)."""
    if granularity == "tensor":
        return [t.flatten()]
    if granularity == "row":
        return list(t)
    return [row[i:i + group_size] for row in t for i in range(0, t.shape[1], group_size)]


def per_element(scale, granularity, group_size):
    """Grouped scales (R, G, 1) expanded to SHAPE by hand."""
    if granularity == "group":
        return scale.reshape(SHAPE[0], -1).repeat_interleave(group_size, dim=1)[:, :SHAPE[1]]
    return scale.reshape(-1, 1)


@pytest.mark.parametrize("granularity,group_size", GRANULARITIES)
def test_binary_is_plus_minus_mean_abs_per_group(w, granularity, group_size):
    q = binarize(w, granularity, group_size)
    assert q.shape == w.shape and q.dtype == w.dtype
    assert q[0, 0] > 0
    for wg, qg in zip(groups(w, granularity, group_size), groups(q, granularity, group_size)):
        alpha = wg.abs().mean()
        torch.testing.assert_close(qg.abs(), alpha.expand_as(qg))
        assert torch.equal(qg > 0, wg >= 0)
        assert qg.unique().numel() <= 2
    if granularity == "tensor":
        assert q.unique().numel() == 2


@pytest.mark.parametrize("granularity,group_size", GRANULARITIES)
def test_ternary_has_zero_and_plus_minus_alpha_per_group(w, granularity, group_size):
    q = ternarize(w, granularity, group_size)
    for wg, qg in zip(groups(w, granularity, group_size), groups(q, granularity, group_size)):
        delta = 0.7 * wg.abs().mean()
        mask = wg.abs() > delta
        alpha = wg.abs()[mask].mean()
        expected = alpha * ((wg > delta).float() - (wg < -delta).float())
        torch.testing.assert_close(qg, expected)
        assert qg.unique().numel() <= 3
    if granularity == "tensor":
        assert q.unique().numel() == 3


def test_all_zero_groups_quantize_to_zero():
    w = torch.zeros(SHAPE)
    w[1:] = torch.randn(SHAPE[0] - 1, SHAPE[1])
    for fn in (binarize, ternarize, lambda t, g: quantize_symmetric(t, 4, g)):
        q = fn(w, "row")
        assert torch.equal(q[0], torch.zeros(SHAPE[1])) and torch.isfinite(q).all()


QUANTIZERS = {
    "binary": binarize,
    "ternary": ternarize,
    "sym4": lambda t, g, n: quantize_symmetric(t, 4, g, n),
    "weight3": lambda t, g, n: quantize_weight(t, 3, g, n),
}


@pytest.mark.parametrize("name", list(QUANTIZERS))
@pytest.mark.parametrize("granularity,group_size", GRANULARITIES)
def test_straight_through_gradient_is_the_identity(w, name, granularity, group_size):
    w = w.clone().requires_grad_()
    g = torch.randn(SHAPE)
    (QUANTIZERS[name](w, granularity, group_size) * g).sum().backward()
    assert torch.equal(w.grad, g)


@pytest.mark.parametrize("bits", [3, 4, 8])
@pytest.mark.parametrize("granularity,group_size", GRANULARITIES)
def test_symmetric_error_is_at_most_half_a_step_inside_the_range(w, bits, granularity, group_size):
    q = quantize_symmetric(w, bits, granularity, group_size)
    levels = 2 ** (bits - 1)
    for wg, qg in zip(groups(w, granularity, group_size), groups(q, granularity, group_size)):
        step = wg.abs().max() / levels
        top = (levels - 1) * step
        inside = wg <= top + step / 2
        assert ((qg - wg).abs()[inside] <= step / 2 * (1 + 1e-5)).all()
        torch.testing.assert_close(qg[~inside], top.expand(int((~inside).sum())))  # clipped to the top code
        assert (qg >= -levels * step * (1 + 1e-6)).all()
        assert qg.unique().numel() <= 2**bits


def test_per_token_activations_use_each_tokens_own_max_abs():
    torch.manual_seed(1)
    x = torch.randn(3, 7, 53) * torch.logspace(-3, 3, 7).reshape(1, 7, 1)  # tokens of very different sizes
    q = quantize_activation_per_token(x)
    assert q.shape == x.shape
    for token, q_token in zip(x.reshape(-1, 53), q.reshape(-1, 53)):
        step = token.abs().max() / 128
        assert torch.equal(q_token, quantize_symmetric(token, 8))  # the token alone, one scale
        torch.testing.assert_close(q_token / step, torch.round(q_token / step))
        assert q_token.unique().numel() <= 2**8
        assert (q_token - token).abs().max() <= step * (1 + 1e-5)  # half a step, one step at the clipped +max


@pytest.mark.parametrize("granularity,group_size", GRANULARITIES)
def test_codes_times_scales_are_exactly_the_fake_quantized_values(w, granularity, group_size):
    cases = {
        "binary": (binary_codes(w, granularity, group_size), binarize(w, granularity, group_size), {-1, 1}),
        "ternary": (ternary_codes(w, granularity, group_size), ternarize(w, granularity, group_size), {-1, 0, 1}),
        "sym5": (symmetric_codes(w, 5, granularity, group_size), quantize_symmetric(w, 5, granularity, group_size),
                 set(range(-16, 16))),
        "sym8, a static range": (symmetric_codes(w, 8, granularity, group_size, torch.tensor(1.5)),
                                 quantize_symmetric(w, 8, granularity, group_size, torch.tensor(1.5)),
                                 set(range(-128, 128))),
        "binary weights": (binary_codes(w, granularity, group_size), quantize_weight(w, 1, granularity, group_size),
                           {-1, 1}),
        "ternary weights": (ternary_codes(w, granularity, group_size), quantize_weight(w, 2, granularity, group_size),
                            {-1, 0, 1}),
        "4-bit weights": (symmetric_codes(w, 4, granularity, group_size), quantize_weight(w, 4, granularity, group_size),
                          set(range(-8, 8))),
    }
    for name, ((codes, scale), fake, allowed) in cases.items():
        assert codes.dtype == torch.int8 and codes.shape == w.shape, name
        assert set(codes.unique().tolist()) <= allowed, name
        assert torch.equal(codes.float() * per_element(scale, granularity, group_size), fake), name
    for bits, codes_fn in ((1, binary_codes), (2, ternary_codes)):
        assert all(torch.equal(a, b) for a, b in zip(weight_codes(w, bits), codes_fn(w)))


def test_static_range_is_an_ema_in_training_and_frozen_in_eval():
    r = StaticRange()
    with pytest.raises(XtcError, match="before calibration"):
        r.eval()(torch.ones(3))
    r.train()
    assert float(r(torch.tensor([1.0, -4.0]))) == 4.0  # the first batch sets the range
    assert float(r(torch.tensor([2.0]))) == pytest.approx(0.95 * 4.0 + 0.05 * 2.0)
    r.eval()
    frozen = float(r.max_abs)
    assert float(r(torch.tensor([100.0]))) == frozen == float(r.max_abs)
    x = torch.tensor([0.5, -100.0])
    q = quantize_symmetric(x, 8, max_abs=r.max_abs)
    assert float(q[1]) == pytest.approx(-frozen)  # clipped to the static range

"""QuantLinear and QuantEmbedding: drop-in for nn.Linear / nn.Embedding, same parameters, quantized math."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xtc.errors import XtcError
from xtc.quant.config import QuantSpec
from xtc.quant.apply import quantize_
from xtc.quant.modules import QuantEmbedding, QuantLinear
from xtc.quant.primitives import binarize, quantize_activation_per_token, quantize_symmetric, quantize_weight

IN, OUT = 53, 37
SPECS = {
    "w1a8": QuantSpec(weight_bits=1, act_bits=8),
    "w2a8-group": QuantSpec(weight_bits=2, granularity="group", group_size=16, act_bits=8),
    "w4-row": QuantSpec(weight_bits=4, granularity="row"),
    "a8-static": QuantSpec(act_bits=8, act_mode="static"),
}


@pytest.fixture
def linear():
    torch.manual_seed(0)
    return nn.Linear(IN, OUT)


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.randn(2, 7, IN)


def test_without_bits_it_is_exactly_the_linear(linear, x):
    q = QuantLinear.from_float(linear, QuantSpec())
    assert torch.equal(q(x), linear(x))
    assert (q.in_features, q.out_features) == (IN, OUT)


@pytest.mark.parametrize("name", [n for n in SPECS if n != "a8-static"])
def test_output_is_the_linear_map_of_quantized_input_and_weight(linear, x, name):
    spec = SPECS[name]
    q = QuantLinear.from_float(linear, spec)
    xq = x if spec.act_bits is None else quantize_activation_per_token(x, spec.act_bits)
    wq = quantize_weight(linear.weight, spec.weight_bits, spec.granularity, spec.group_size)
    assert torch.equal(q(x), F.linear(xq, wq, linear.bias))


def test_parameters_and_state_dict_keys_are_the_linears(linear):
    for name, spec in SPECS.items():
        q = QuantLinear.from_float(linear, spec)
        assert q.weight is linear.weight and q.bias is linear.bias  # an optimizer built before keeps training them
        extra = ["act_range.max_abs"] if spec.act_mode == "static" else []
        assert list(q.state_dict()) == list(linear.state_dict()) + extra, name
    no_bias = QuantLinear.from_float(nn.Linear(IN, OUT, bias=False), SPECS["w1a8"])
    assert list(no_bias.state_dict()) == ["weight"] and no_bias.bias is None


def test_gradients_reach_the_latent_weight_straight_through(linear, x):
    q = QuantLinear.from_float(linear, SPECS["w1a8"])
    g = torch.randn(2, 7, OUT)
    (q(x) * g).sum().backward()
    wq = binarize(linear.weight.detach()).requires_grad_()
    (F.linear(quantize_activation_per_token(x), wq, linear.bias.detach()) * g).sum().backward()
    torch.testing.assert_close(linear.weight.grad, wq.grad)
    torch.testing.assert_close(linear.bias.grad, g.sum((0, 1)))


def test_static_range_updates_in_training_and_is_frozen_in_eval(linear, x):
    q = QuantLinear.from_float(linear, SPECS["a8-static"]).train()
    q(x)
    first = float(q.act_range.max_abs)
    assert first == float(x.abs().max())
    q(2 * x)
    assert float(q.act_range.max_abs) == pytest.approx(0.95 * first + 0.05 * 2 * first)
    q.eval()
    frozen = q.act_range.max_abs.clone()
    out = q(3 * x)
    assert torch.equal(q.act_range.max_abs, frozen)
    assert torch.equal(out, F.linear(quantize_symmetric(3 * x, 8, max_abs=frozen), linear.weight, linear.bias))


def test_static_range_must_be_calibrated_before_eval(linear, x):
    with pytest.raises(XtcError, match="before calibration"):
        QuantLinear.from_float(linear, SPECS["a8-static"]).eval()(x)


def test_repr_names_the_settings(linear):
    text = repr(QuantLinear.from_float(linear, SPECS["w2a8-group"]))
    assert "in_features=53, out_features=37" in text and "weight_bits=2" in text and "group_size=16" in text
    assert "act_bits=8, act_mode=dynamic" in text
    assert "weight_bits=1, granularity=row" in repr(QuantEmbedding.from_float(nn.Embedding(5, 3), QuantSpec(weight_bits=1, granularity="row")))


@pytest.mark.parametrize("spec", [QuantSpec(weight_bits=1, granularity="row"),
                                  QuantSpec(weight_bits=2, granularity="group", group_size=16),
                                  QuantSpec(weight_bits=1)], ids=["row", "group", "tensor"])
def test_embedding_looks_up_rows_of_the_quantized_table(spec):
    torch.manual_seed(0)
    emb = nn.Embedding(97, IN, padding_idx=0)
    q = QuantEmbedding.from_float(emb, spec)
    assert q.weight is emb.weight and list(q.state_dict()) == ["weight"]
    ids = torch.tensor([[0, 5, 96, 5], [3, 3, 1, 0]])
    table = quantize_weight(emb.weight, spec.weight_bits, spec.granularity, spec.group_size)
    out = q(ids)
    torch.testing.assert_close(out, F.embedding(ids, table), rtol=0, atol=1e-6)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    reference = emb.weight.detach().clone().requires_grad_()
    (F.embedding(ids, reference, padding_idx=0) * g).sum().backward()
    assert torch.equal(emb.weight.grad, reference.grad)  # straight through, none to the padding row


def test_embedding_with_max_norm_is_refused():
    with pytest.raises(XtcError, match="max_norm"):
        QuantEmbedding.from_float(nn.Embedding(5, 3, max_norm=1.0), QuantSpec(weight_bits=1))


@pytest.mark.parametrize("preset", ["w1a8", "w2a8"])
@pytest.mark.parametrize("granularity", ["tensor", "row"])
def test_eval_forward_is_the_packed_kernels_bit_for_bit(preset, granularity):
    """In inference (eval, no grad) a QuantLinear computes what the packed runtime's kernel computes."""
    from xtc.quant.config import QuantConfig, QuantRule
    from xtc.runtime import PackedLinear

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(517, 70))
    config = QuantConfig(rules=[QuantRule(pattern="0", weight_bits=int(preset[1]), act_bits=8, granularity=granularity)])
    quantize_(model, config)
    x = torch.randn(2, 9, 517) * 3
    with torch.no_grad():
        expected = model.eval()(x)
        fake = F.linear(model[0].quantized_input(x), model[0].quantized_weight(), model[0].bias)
    assert torch.equal(PackedLinear.from_quant_linear(model[0])(x), expected)
    torch.testing.assert_close(expected, fake, rtol=1e-5, atol=1e-4)  # the same function, up to float rounding

"""Quantization configs: validation messages, presets for every architecture, resolution by name."""

import re

import pytest
from pydantic import ValidationError

from xtc.errors import XtcError
from xtc.arch import ARCHITECTURES
from xtc.quant.config import LINEAR_ROLES, PRESETS, QuantConfig, QuantRule, QuantSpec, get_quant_config


def error_text(**kwargs) -> str:
    with pytest.raises(ValidationError) as info:
        QuantRule(**{"pattern": "x", **kwargs})
    return str(info.value)


def test_unknown_key_is_named():
    assert "bits" in error_text(bits=1) and "Extra inputs are not permitted" in error_text(bits=1)
    with pytest.raises(ValidationError, match="layers"):
        QuantConfig(rules=[], layers=2)


@pytest.mark.parametrize("value", [0, 9, -1])
def test_bad_weight_bits_names_field_value_and_choices(value):
    text = error_text(weight_bits=value)
    assert "weight_bits" in text and f"input_value={value}" in text
    assert "1 (binary), 2 (ternary), 3..8 (symmetric) or None" in text


def test_bad_act_bits_and_mode():
    text = error_text(act_bits=16)
    assert "act_bits" in text and "input_value=16" in text and "2..8 or None" in text
    assert "act_mode" in error_text(act_mode="static") and "needs act_bits" in error_text(act_mode="static")
    text = error_text(act_bits=8, act_mode="always")
    assert "act_mode" in text and "'dynamic' or 'static'" in text


def test_bad_granularity_names_the_choices():
    text = error_text(granularity="column")
    assert "granularity" in text and "'column'" in text and "'tensor', 'row' or 'group'" in text


def test_group_size_goes_with_granularity_group():
    assert "group_size is required with granularity 'group'" in error_text(granularity="group")
    assert "only used with granularity 'group'" in error_text(granularity="row", group_size=16)
    assert "greater than 0" in error_text(granularity="group", group_size=0)
    assert QuantRule(pattern="x", weight_bits=1, granularity="group", group_size=16).group_size == 16


def test_pattern_must_compile():
    text = error_text(pattern="layer.(")
    assert "pattern" in text and "'layer.('" in text and "not a valid regular expression" in text


def test_configs_are_frozen_and_need_a_rule():
    with pytest.raises(ValidationError):
        QuantSpec().weight_bits = 1
    with pytest.raises(ValidationError, match="at least 1"):
        QuantConfig(rules=[])


def test_presets_resolve_by_name_and_unknown_names_list_the_valid_ones():
    assert get_quant_config("W1A8") is PRESETS["w1a8"]
    config = PRESETS["w2a8"]
    assert get_quant_config(config) is config
    assert get_quant_config(config.model_dump(mode="json")) == config  # what a saved model records
    with pytest.raises(XtcError, match=r"unknown quantization preset 'w3a8'; valid presets: w1a8, w2a8, w1a8-word2"):
        get_quant_config("w3a8")
    with pytest.raises(XtcError, match=r"invalid value 0 for rules\.0\.weight_bits: must be one of 1"):
        get_quant_config({"rules": [{"pattern": "x", "weight_bits": 0}]})


@pytest.mark.parametrize("bits", [1, 2])
def test_reference_presets_match_the_method_table(bits):
    linears, embeddings, positions, pooler = PRESETS[f"w{bits}a8"].rules
    assert (linears.weight_bits, linears.granularity, linears.act_bits, linears.act_mode) == (bits, "tensor", 8, "dynamic")
    assert (embeddings.weight_bits, embeddings.granularity, embeddings.act_bits) == (bits, "row", None)
    # beyond the paper: the next two largest tensors as 8-bit rows (weights only), the rest float16
    for rule in (positions, pooler):
        assert (rule.weight_bits, rule.granularity, rule.act_bits) == (8, "row", None)
    assert PRESETS[f"w{bits}a8"].kept == "fp16"


def test_w1a8_word2_is_w1a8_with_a_two_bit_word_table():
    one, word2 = PRESETS["w1a8"].rules, PRESETS["w1a8-word2"].rules
    assert word2[1].weight_bits == 2 and word2[1].granularity == "row"
    assert [r for i, r in enumerate(word2) if i != 1] == [r for i, r in enumerate(one) if i != 1]


@pytest.mark.parametrize("model_type", list(ARCHITECTURES))
def test_preset_patterns_select_the_layer_linears_and_word_embeddings_of_every_architecture(model_type):
    arch = ARCHITECTURES[model_type]
    linears, embeddings, positions, pooler = (re.compile(r.pattern) for r in PRESETS["w1a8"].rules)
    for i in (0, 11):
        for role in LINEAR_ROLES:
            name = f"{arch.layers}.{i}.{getattr(arch, role)}"
            assert linears.fullmatch(name) and not embeddings.fullmatch(name), name
            assert not linears.fullmatch(name + ".weight")
    assert embeddings.fullmatch(arch.word_embeddings) and not linears.fullmatch(arch.word_embeddings)
    assert positions.fullmatch(arch.position_embeddings) and pooler.fullmatch(arch.pooler)
    assert PRESETS["w1a8"].rule_for(arch.pooler).weight_bits == 8
    kept = [*(h for h in arch.head if h != arch.pooler), "classifier.out_proj", f"{arch.embeddings}.token_type_embeddings",
            f"{arch.layers}.0.attention.output.LayerNorm", f"{arch.layers}.x.{arch.query}"]
    for name in kept:
        assert PRESETS["w1a8"].rule_for(name) is None, name

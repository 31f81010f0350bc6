"""quantize_ on the real bert-tiny and on tiny models of every supported architecture."""

import copy

import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from tests.test_models import CONFIGS, tiny_config
from xtc.data.tasks import get_task
from xtc.errors import XtcError
from xtc.arch import architecture
from xtc.models import load_model
from xtc.quant.apply import quantize_, quantized_modules, unquantize_
from xtc.quant.config import LINEAR_ROLES, PRESETS, QuantConfig, QuantRule
from xtc.quant.modules import Fp16Embedding, Fp16LayerNorm, Fp16Linear, QuantEmbedding, QuantLinear

BATCH = dict(input_ids=torch.tensor([[101, 7592, 2088, 102, 0], [101, 2023, 2003, 1037, 102]]),
             attention_mask=torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]))


@pytest.fixture(scope="module")
def bert_tiny_fp():
    model, _ = load_model("bert-tiny", get_task("RTE"))
    return model


@pytest.fixture
def bert_tiny(bert_tiny_fp):
    return copy.deepcopy(bert_tiny_fp)


def expected_linears(arch, num_layers):
    return {f"{arch.layers}.{i}.{getattr(arch, role)}" for i in range(num_layers) for role in LINEAR_ROLES}


def test_w1a8_on_bert_tiny_quantizes_the_reference_modules(bert_tiny):
    arch = architecture("bert")
    params_before = [id(p) for p in bert_tiny.parameters()]
    assert quantize_(bert_tiny, "w1a8") is bert_tiny
    found = dict(quantized_modules(bert_tiny))
    linears = {n for n, m in found.items() if isinstance(m, QuantLinear) and m.spec.weight_bits == 1}
    assert linears == expected_linears(arch, 2) and len(linears) == 12
    assert all(found[n].spec.act_bits == 8 for n in linears)
    assert set(found) - linears == {arch.word_embeddings, arch.position_embeddings, arch.pooler}
    assert isinstance(found[arch.word_embeddings], QuantEmbedding) and found[arch.word_embeddings].spec.granularity == "row"
    for name in (arch.position_embeddings, arch.pooler):  # beyond the paper: 8-bit rows, weights only
        assert (found[name].spec.weight_bits, found[name].spec.granularity, found[name].spec.act_bits) == (8, "row", None)
    # everything else computes in float16 (kept: fp16), as the packed file stores it
    assert type(bert_tiny.get_submodule("classifier")) is Fp16Linear
    assert type(bert_tiny.get_submodule(f"{arch.embeddings}.token_type_embeddings")) is Fp16Embedding
    assert type(bert_tiny.get_submodule(f"{arch.embeddings}.LayerNorm")) is Fp16LayerNorm
    assert all(m.round_kept for m in found.values() if isinstance(m, QuantLinear))
    assert [id(p) for p in bert_tiny.parameters()] == params_before  # same parameters, same order
    assert bert_tiny.config.xtc_quantization == PRESETS["w1a8"].model_dump(mode="json")


def test_quantized_bert_tiny_runs_forward_and_backward(bert_tiny, bert_tiny_fp):
    quantize_(bert_tiny, "w2a8").train()
    out = bert_tiny(**BATCH, labels=torch.tensor([0, 1]))
    assert out.logits.shape == (2, 2) and torch.isfinite(out.loss)
    assert not torch.allclose(out.logits, bert_tiny_fp.train()(**BATCH).logits)
    out.loss.backward()
    for name, module in quantized_modules(bert_tiny):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0, name


def test_saved_model_records_the_config_and_rebuilds(bert_tiny, tmp_path):
    quantize_(bert_tiny, "w1a8").eval()
    bert_tiny.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    quantize_(reloaded, reloaded.config.xtc_quantization)
    assert torch.equal(reloaded(**BATCH).logits, bert_tiny(**BATCH).logits)


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_presets_quantize_six_linears_per_layer_on_every_architecture(model_type):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_config(model_type))
    arch = architecture(model_type)
    num_layers = getattr(model.config, arch.num_layers_key)
    quantize_(model, "w2a8")
    found = dict(quantized_modules(model))
    low_bit = {n for n, m in found.items() if m.spec.weight_bits == 2}
    assert low_bit - {arch.word_embeddings} == expected_linears(arch, num_layers)
    assert set(found) - low_bit == {arch.position_embeddings, arch.pooler}  # 8-bit rows
    in_head = {n for n in found if any(n == h or n.startswith(h + ".") for h in arch.head)}
    assert in_head <= {arch.pooler}  # of the head, only the pooler's dense layer
    model(input_ids=torch.tensor([[1, 5, 7, 2]])).logits.sum().backward()


def test_first_matching_rule_wins_and_a_rule_without_bits_keeps_the_module(bert_tiny):
    config = QuantConfig(rules=[QuantRule(pattern="classifier"),
                                QuantRule(pattern=r".*\.value", act_bits=8),
                                QuantRule(pattern=".*", weight_bits=4, granularity="group", group_size=16)])
    quantize_(bert_tiny, config)
    assert type(bert_tiny.classifier) is Fp16Linear  # kept (in float16, the config's default)
    value = bert_tiny.get_submodule("bert.encoder.layer.0.attention.self.value")
    assert value.spec.weight_bits is None and value.spec.act_bits == 8
    assert bert_tiny.bert.pooler.dense.spec.weight_bits == 4
    assert isinstance(bert_tiny.bert.embeddings.position_embeddings, QuantEmbedding)


def test_no_match_and_requantization_are_refused(bert_tiny):
    with pytest.raises(XtcError, match=r"no nn.Linear or nn.Embedding module matches .*'encoder\\\\.nothing'"):
        quantize_(bert_tiny, QuantConfig(rules=[QuantRule(pattern=r"encoder\.nothing", weight_bits=1)]))
    assert not quantized_modules(bert_tiny)
    quantize_(bert_tiny, "w1a8")
    with pytest.raises(XtcError, match="already quantized"):
        quantize_(bert_tiny, "w2a8")


@pytest.mark.parametrize("preset,values", [("w1a8", 2), ("w2a8", 3)])
def test_every_quantized_weight_group_of_bert_tiny_takes_exactly_2_or_3_values(bert_tiny, preset, values):
    quantize_(bert_tiny, preset)
    for name, module in quantized_modules(bert_tiny):
        if module.spec.weight_bits == 8:
            continue  # the position embeddings and pooler: 8-bit rows
        if isinstance(module, QuantLinear):
            groups = module.quantized_weight().detach().reshape(1, -1)  # one scale per matrix
        else:
            groups = module(torch.arange(module.weight.shape[0])).detach()  # one scale per row: (vocab, hidden)
        counts = {len(torch.unique(g)) for g in groups}
        assert counts == {values}, (name, counts)


def test_unquantize_restores_the_plain_model_so_another_quantization_starts_from_its_latent_weights(bert_tiny,
                                                                                                    bert_tiny_fp):
    direct = quantize_(copy.deepcopy(bert_tiny_fp), "w1a8").eval()
    params = [id(p) for p in bert_tiny.parameters()]
    quantize_(bert_tiny, "w2a8")
    unquantize_(bert_tiny)
    assert not quantized_modules(bert_tiny) and not hasattr(bert_tiny.config, "xtc_quantization")
    assert {type(m) for m in bert_tiny.modules()} >= {nn.Linear, nn.Embedding, nn.LayerNorm}
    assert [id(p) for p in bert_tiny.parameters()] == params  # the same latent Parameters
    assert torch.equal(bert_tiny.eval()(**BATCH).logits, bert_tiny_fp.eval()(**BATCH).logits)
    requantized = quantize_(bert_tiny, "w1a8").eval()
    assert torch.equal(requantized(**BATCH).logits, direct(**BATCH).logits)

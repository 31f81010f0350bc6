"""Model loading: short names, local folders of every supported family, and bad folders."""

import copy
import json

import pytest
import torch
from transformers import (AutoModel, BertConfig, DistilBertConfig, ElectraConfig, RobertaConfig,
                          XLMRobertaConfig)

from xtc.data.tasks import get_task
from xtc.errors import XtcError
from xtc.arch import ARCHITECTURES, architecture
from xtc.models import load_model, load_tokenizer, resolve_model

TINY = dict(vocab_size=99, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32)
CONFIGS = {
    "bert": BertConfig(**TINY),
    "roberta": RobertaConfig(**TINY),
    "xlm-roberta": XLMRobertaConfig(**TINY),
    "electra": ElectraConfig(**TINY, embedding_size=8),
    "distilbert": DistilBertConfig(vocab_size=99, dim=16, n_layers=3, n_heads=2, hidden_dim=32),
}


def tiny_config(model_type: str):
    """A fresh copy: quantize_ and reduce_layers record settings on a model's config object."""
    return copy.deepcopy(CONFIGS[model_type])


def test_table_covers_the_tested_families():
    assert set(CONFIGS) == set(ARCHITECTURES)


@pytest.fixture(params=list(CONFIGS))
def encoder_dir(request, tmp_path):
    """A pre-trained-style encoder folder (no task head) of one family, random weights."""
    torch.manual_seed(0)
    AutoModel.from_config(tiny_config(request.param)).save_pretrained(tmp_path)
    return request.param, tmp_path


def test_every_family_loads_for_a_task_and_its_parts_are_where_the_table_says(encoder_dir):
    model_type, path = encoder_dir
    model, new_head = load_model(path, get_task("MNLI"))
    assert new_head and model.config.num_labels == 3 and model.config.finetuning_task == "MNLI"
    arch = architecture(model_type)
    layers = model.get_submodule(arch.layers)
    assert len(layers) == 3 == getattr(model.config, arch.num_layers_key)
    for role in ("query", "key", "value", "attention_output", "ffn_in", "ffn_out"):
        assert isinstance(layers[0].get_submodule(getattr(arch, role)), torch.nn.Linear), role
    assert isinstance(model.get_submodule(arch.word_embeddings), torch.nn.Embedding)
    for name in (arch.embeddings, *arch.head):
        model.get_submodule(name)
    ids = torch.tensor([[1, 5, 7, 2]])
    assert model(input_ids=ids).logits.shape == (1, 3)


def test_regression_head(encoder_dir):
    _, path = encoder_dir
    model, _ = load_model(path, get_task("STS-B"))
    assert model.config.num_labels == 1 and model.config.problem_type == "regression"


def test_short_names_resolve_to_shipped_models():
    for name in ("minilm-l6", "bert-tiny"):
        folder = resolve_model(name)
        assert json.loads(open(f"{folder}/config.json").read())["model_type"] == "bert"
    tok = load_tokenizer("bert-tiny")
    assert tok("hello world")["input_ids"] == [101, 7592, 2088, 102]


def test_minilm_geometry():
    model, _ = load_model("minilm-l6", get_task("RTE"))
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384


# ---- bad input ---------------------------------------------------------------------------------

def test_missing_folder(tmp_path):
    with pytest.raises(XtcError, match="model folder '.*nope' does not exist"):
        load_model(tmp_path / "nope", get_task("RTE"))


def test_folder_without_config(tmp_path):
    with pytest.raises(XtcError, match="is not a model folder: it has no config.json"):
        load_model(tmp_path, get_task("RTE"))


def test_unsupported_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(XtcError, match="model type 'gpt2' is not a supported encoder; supported: bert, roberta"):
        load_model(tmp_path, get_task("RTE"))


def test_malformed_config_and_pickled_weights(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(XtcError, match="not a valid JSON model config"):
        resolve_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(XtcError, match="has no model.safetensors"):
        resolve_model(tmp_path)


def test_head_size_mismatch(tmp_path):
    model, _ = load_model("bert-tiny", get_task("MNLI"))
    model.save_pretrained(tmp_path)
    with pytest.raises(XtcError, match="has a 3-way head, but RTE needs 2"):
        load_model(tmp_path, get_task("RTE"))

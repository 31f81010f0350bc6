"""Vocabulary trimming on the real bert-tiny and real GLUE rows: the same model on the tokens kept."""

import copy
import json

import pytest
import torch

from xtc.data.glue import load_examples
from xtc.data.tasks import get_task
from xtc.errors import XtcError
from xtc.models import load_model, load_tokenizer
from xtc.quant.apply import quantize_
from xtc.vocab import trim_problem, trim_vocabulary

TASK = get_task("MRPC")


def saved(tmp_path, quant=None):
    torch.manual_seed(0)
    model, _ = load_model("bert-tiny", TASK)
    if quant is not None:
        model = quantize_(copy.deepcopy(model), quant)
    model.eval().save_pretrained(tmp_path / "full")
    load_tokenizer("bert-tiny").save_pretrained(tmp_path / "full")
    return tmp_path / "full"


def logits_and_tokens(folder, rows):
    model, _ = load_model(folder, TASK)
    tokenizer = load_tokenizer(folder)
    batch = tokenizer([r.texts[0] for r in rows], [r.texts[1] for r in rows], padding=True, truncation=True,
                      max_length=128, return_tensors="pt")
    with torch.no_grad():
        logits = model.eval()(**batch).logits
    return logits, [tokenizer.convert_ids_to_tokens(ids) for ids in batch["input_ids"]]


@pytest.mark.parametrize("quant", [None, "w1a8", "w2a8"])  # word tables: fp32, 1 bit per row, 2 bits per row
def test_a_trimmed_model_computes_the_same_on_the_tokens_it_keeps(tmp_path, glue_dir, quant):
    full = saved(tmp_path, quant)
    train = load_examples(TASK, "train", glue_dir, max_samples=40)
    tokenizer = load_tokenizer(full)
    used = {i for r in train for i in tokenizer(*r.texts)["input_ids"]}
    info = trim_vocabulary(full, tmp_path / "trimmed", used)
    assert info["of"] == 30522 and len(used) < info["kept"] < 4000  # + special tokens and single characters
    config = json.loads((tmp_path / "trimmed" / "config.json").read_text())
    assert config["vocab_size"] == info["kept"] and config["pad_token_id"] == 0
    before, tokens_before = logits_and_tokens(full, train)
    after, tokens_after = logits_and_tokens(tmp_path / "trimmed", train)
    assert tokens_after == tokens_before
    assert torch.equal(after, before)


def test_other_text_is_split_into_the_pieces_kept(tmp_path, glue_dir):
    full = saved(tmp_path)
    tokenizer = load_tokenizer(full)
    used = set(tokenizer("the cat sat")["input_ids"])
    trim_vocabulary(full, tmp_path / "trimmed", used)
    trimmed = load_tokenizer(tmp_path / "trimmed")
    tokens = trimmed.tokenize("the dog sat")
    assert tokens == ["the", "d", "##o", "##g", "sat"]  # no [UNK]: every character is kept
    assert trimmed("the dog")["input_ids"][0] == trimmed.cls_token_id == trimmed.convert_tokens_to_ids("[CLS]")


def test_one_scale_for_the_whole_word_table_is_refused(tmp_path):
    quant = {"rules": [{"pattern": r"bert\.embeddings\.word_embeddings", "weight_bits": 1, "granularity": "tensor"}]}
    full = saved(tmp_path, quant)
    with pytest.raises(XtcError, match="one scale for the whole matrix"):
        trim_vocabulary(full, tmp_path / "trimmed", {1000})


def test_a_bpe_tokenizer_is_refused():
    assert "needs a WordPiece tokenizer" in trim_problem({"model": {"type": "BPE", "vocab": {}, "merges": []}}, None)


def test_a_row_budget_fills_the_table_with_the_most_frequent_tokens(tmp_path, glue_dir):
    """vocabulary_rows: the training data's tokens, then the lowest other ids (WordPiece lists tokens by
    frequency), never the [unused...] placeholders; text made of the added tokens is no longer split."""
    full = saved(tmp_path)
    tokenizer = load_tokenizer(full)
    used = set(tokenizer("the cat sat")["input_ids"])
    trimmed_only = trim_vocabulary(full, tmp_path / "only", used)["kept"]
    info = trim_vocabulary(full, tmp_path / "filled", used, rows=trimmed_only + 500)
    assert info["kept"] == trimmed_only + 500
    filled = load_tokenizer(tmp_path / "filled")
    assert load_tokenizer(tmp_path / "only").tokenize("the first cat") == ["the", "f", "##i", "##r", "##s", "##t", "cat"]
    assert filled.tokenize("the first cat") == ["the", "first", "cat"]  # "first" (id 2034) is among the 500 most frequent
    vocab = filled.get_vocab()
    assert "of" in vocab and "and" in vocab and not any(t.startswith("[unused") for t in vocab)
    added = set(vocab) - set(load_tokenizer(tmp_path / "only").get_vocab())
    assert max(tokenizer.convert_tokens_to_ids(sorted(added))) < 2600  # the lowest ids ("the" is 1996), not any 500
    # the training data's tokens stay even when they alone pass the budget
    assert trim_vocabulary(full, tmp_path / "small", used, rows=10)["kept"] == trimmed_only

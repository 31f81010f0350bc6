"""The ONNX importer: the converted paraphrase-MiniLM-L3 computes what ONNX Runtime computes."""

import numpy as np
import pytest
import torch

from xtc.data.glue import load_examples
from xtc.data.tasks import get_task
from xtc.errors import XtcError
from xtc.models import ONNX_SHORT_NAMES, load_model, load_tokenizer, resolve_model
from xtc.onnx_import import import_onnx_bert

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def onnx_file():
    import importlib.metadata
    from pathlib import Path

    requirement, inner = ONNX_SHORT_NAMES["paraphrase-minilm-l3"]
    return Path(importlib.metadata.distribution(requirement.split("==")[0]).locate_file(inner))


@pytest.fixture(scope="module")
def converted(tmp_path_factory, onnx_file):
    return import_onnx_bert(onnx_file, tmp_path_factory.mktemp("pml3"), load_tokenizer("minilm-l6"))


def test_hidden_states_match_onnx_runtime_on_real_rows(converted, onnx_file, glue_dir):
    from transformers import BertModel

    model = BertModel.from_pretrained(converted).eval()
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.num_attention_heads) == (3, 384, 12)
    rows = load_examples(get_task("RTE"), "dev", glue_dir, max_samples=8)
    batch = load_tokenizer(converted)([e.texts[0] for e in rows], [e.texts[1] for e in rows], padding=True,
                                      truncation=True, max_length=128, return_tensors="np")
    session = ort.InferenceSession(str(onnx_file))
    outputs = session.run(None, {"input_ids": batch["input_ids"].astype(np.int64),
                                 "attention_mask": batch["attention_mask"].astype(np.int64)})
    expected = next(o for o in outputs if o.ndim == 3)  # (batch, tokens, hidden): the last hidden state
    with torch.no_grad():
        ours = model(input_ids=torch.from_numpy(batch["input_ids"]),
                     attention_mask=torch.from_numpy(batch["attention_mask"])).last_hidden_state.numpy()
    real = batch["attention_mask"].astype(bool)
    assert np.abs(ours[real] - expected[real]).max() < 1e-4


def test_short_name_converts_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XTC_CACHE", str(tmp_path))
    folder = resolve_model("paraphrase-minilm-l3")
    assert folder == str(tmp_path / "paraphrase-minilm-l3")
    stamp = (tmp_path / "paraphrase-minilm-l3" / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("paraphrase-minilm-l3") == folder
    assert (tmp_path / "paraphrase-minilm-l3" / "model.safetensors").stat().st_mtime_ns == stamp
    model, new_head = load_model("paraphrase-minilm-l3", get_task("MRPC"))
    assert new_head and model.config.num_hidden_layers == 3


def test_bad_onnx_file(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not onnx at all")
    with pytest.raises(XtcError, match="not a readable ONNX model"):
        import_onnx_bert(tmp_path / "bad.onnx", tmp_path / "out", load_tokenizer("minilm-l6"))
    with pytest.raises(XtcError, match="does not exist"):
        import_onnx_bert(tmp_path / "none.onnx", tmp_path / "out", load_tokenizer("minilm-l6"))

"""Plain transformers checkpoints of quantized models: dequantized weights, no xtc needed to load."""

import copy
import json

import torch
from click.testing import CliRunner
from transformers import AutoModelForSequenceClassification

from xtc.cli import main
from xtc.data.glue import load_examples
from xtc.data.tasks import get_task
from xtc.models import load_model, load_tokenizer
from xtc.quant.apply import quantize_, quantized_modules
from xtc.quant.modules import QuantLinear


def test_plain_checkpoint_holds_the_dequantized_weights(tmp_path, glue_dir):
    torch.manual_seed(0)
    model, _ = load_model("bert-tiny", get_task("MRPC"))
    fake = quantize_(copy.deepcopy(model), "w2a8").eval()
    fake.save_pretrained(tmp_path / "stage")
    load_tokenizer("bert-tiny").save_pretrained(tmp_path / "stage")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "stage"), "--out", str(tmp_path / "hf"),
                                       "--format", "hf"])
    assert result.exit_code == 0, result.output
    assert "xtc_quantization" not in json.loads((tmp_path / "hf" / "config.json").read_text())
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    state = plain.state_dict()
    for name, module in quantized_modules(fake):
        expected = module.quantized_weight() if isinstance(module, QuantLinear) else module(
            torch.arange(module.weight.shape[0]))
        assert torch.equal(state[f"{name}.weight"], expected.detach()), name
        if isinstance(module, QuantLinear) and module.spec.weight_bits == 2:  # one scale per matrix: {-alpha, 0, alpha}
            assert len(torch.unique(state[f"{name}.weight"])) == 3
    rows = load_examples(get_task("MRPC"), "dev", glue_dir, max_samples=64)
    batch = load_tokenizer(tmp_path / "hf")([r.texts[0] for r in rows], [r.texts[1] for r in rows], padding=True,
                                             truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        ours, theirs = fake(**batch).logits, plain(**batch).logits
    # Only the 8-bit activations differ (a plain checkpoint cannot express them).
    assert (ours - theirs).abs().max() < 0.05 * ours.abs().max()
    agreement = (ours.argmax(-1) == theirs.argmax(-1)).float().mean().item()
    assert agreement >= 0.95, agreement


def test_onnx_graph_runs_in_onnx_runtime_with_matching_outputs(tmp_path, glue_dir):
    import numpy as np
    import pytest

    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model, _ = load_model("bert-tiny", get_task("MRPC"))
    fake = quantize_(model, "w1a8").eval()
    fake.save_pretrained(tmp_path / "stage")
    load_tokenizer("bert-tiny").save_pretrained(tmp_path / "stage")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "stage"), "--out", str(tmp_path / "onnx"),
                                       "--format", "onnx"])
    assert result.exit_code == 0, result.output
    rows = load_examples(get_task("MRPC"), "dev", glue_dir, max_samples=16)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "onnx")  # the tokenizer ships beside the graph
    batch = tokenizer([r.texts[0] for r in rows], [r.texts[1] for r in rows], padding=True, truncation=True,
                      max_length=128, return_tensors="np")
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    (logits,) = session.run(None, {k: v.astype(np.int64) for k, v in batch.items()})
    from xtc.hf_export import export_hf

    export_hf(tmp_path / "stage", tmp_path / "hf")
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        expected = plain(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
    assert np.allclose(logits, expected, atol=1e-4)

"""Golden files of the packed format (SPEC.md): files written once per format version and committed.

Every encoding is in one of the two golden folders, made from a tiny BERT whose weights are
multiples of 1/128: the quantizers' sums are exact in float32 whatever the summation order, so
the expected values do not depend on the CPU or the torch build. Two promises are tested:

- today's reader decodes the committed files of every version to the model's quantized values (old
  files stay readable: version 1 to the same header entries as today's), and the runtime runs them;
- today's exporter writes the same tensors and header fields (a byte change must bump
  ``xtc_format_version``, update SPEC.md and regenerate these files:
  ``python tests/packed/test_golden.py``, which writes ``golden/v<version>``; older folders stay).
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from xtc.compression import export
from xtc.packed.layout import FORMAT_VERSION, META_HEADER, META_VERSION, WEIGHTS_FILE
from xtc.packed.read import read_packed
from xtc.quant.apply import quantize_, quantized_modules
from xtc.quant.config import QuantConfig, QuantRule
from xtc.quant.modules import QuantLinear
from xtc.runtime import load

GOLDEN_DIR = Path(__file__).parent / "golden"
GOLDEN = GOLDEN_DIR / f"v{FORMAT_VERSION}"  # what today's exporter writes
VERSIONS = sorted(p.name for p in GOLDEN_DIR.iterdir())  # v1, v2, ...
LAYER = r"bert\.encoder\.layer\.\d+\."
# name -> (rules, export options). Sizes are not multiples of 8, 4 or 5 (padded last bytes); groups
# of 5 and 7 do not divide the rows (shorter last groups).
FILES = {
    "ternary2-fp16-int8": (  # what the runtime runs: tensor / row scales, 8-bit inputs
        [QuantRule(pattern=LAYER + r"attention\.self\.(query|key)", weight_bits=1, act_bits=8),
         QuantRule(pattern=LAYER + r"attention\.self\.value", weight_bits=2, granularity="row", act_bits=8),
         QuantRule(pattern=LAYER + r"(attention\.output|output)\.dense", weight_bits=2, act_bits=8),
         QuantRule(pattern=LAYER + r"intermediate\.dense", weight_bits=1, granularity="row", act_bits=8),
         QuantRule(pattern=r"bert\.embeddings\.word_embeddings", weight_bits=2, granularity="row")],
        {"ternary": "ternary2", "kept": "fp16", "int8_tensors": ("classifier.weight",)}),
    "base3-fp32-groups": (
        [QuantRule(pattern=LAYER + r"attention\.self\.(query|key|value)", weight_bits=2, granularity="group",
                   group_size=5, act_bits=8),
         QuantRule(pattern=LAYER + r"(attention\.output|intermediate|output)\.dense", weight_bits=1,
                   granularity="group", group_size=7, act_bits=8),
         QuantRule(pattern=r"bert\.embeddings\.word_embeddings", weight_bits=1, granularity="row")],
        {"ternary": "ternary_base3", "kept": "fp32"}),
}
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(34)]  # 39 rows


def exact_model() -> BertForSequenceClassification:
    """A 1-layer BERT (hidden 12, FFN 22, vocabulary 39) with weights k/128, |k| <= 125."""
    config = BertConfig(vocab_size=len(WORDS), hidden_size=12, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=22, max_position_embeddings=16, num_labels=3)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        for i, (_, param) in enumerate(sorted(model.named_parameters())):
            k = (torch.arange(param.numel(), dtype=torch.int64) * 7919 + 31 * i) % 251 - 125
            param.copy_((k.to(torch.float32) / 128).reshape(param.shape))
    return model


def tokenizer() -> BertTokenizerFast:
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(WORDS)})


def quantized_model(name: str):
    rules, _ = FILES[name]
    # kept fp32: the version 1 files were written before the config recorded `kept` (the model then kept
    # float32 tensors; the fp16 file rounds them at export)
    return quantize_(exact_model(), QuantConfig(rules=rules, kept="fp32"))


def write(name: str, out: Path) -> Path:
    _, options = FILES[name]
    return export(quantized_model(name), out, tokenizer(), **options)


def header(folder: Path) -> tuple[dict, dict]:
    with safe_open(folder / WEIGHTS_FILE, "np") as f:
        metadata = f.metadata()
    return metadata, json.loads(metadata[META_HEADER])


def assert_same_tensors(a: Path, b: Path) -> None:
    """Every stored tensor of two packed folders: the same names, dtypes and bytes."""
    a_tensors, b_tensors = load_file(a / WEIGHTS_FILE), load_file(b / WEIGHTS_FILE)
    assert sorted(a_tensors) == sorted(b_tensors)
    for key, array in a_tensors.items():
        assert b_tensors[key].dtype == array.dtype and b_tensors[key].tobytes() == array.tobytes(), key


@pytest.mark.filterwarnings("ignore:.*a version 1 file")
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", FILES)
def test_golden_file_decodes_to_the_model_values(name, version):
    model, packed = quantized_model(name), read_packed(GOLDEN_DIR / version / name)
    entries = packed.header["tensors"]
    for module_name, module in quantized_modules(model):
        expected = (module.quantized_weight() if isinstance(module, QuantLinear)
                    else module(torch.arange(module.weight.shape[0]))).detach().numpy()
        assert np.array_equal(packed.dequantized(f"{module_name}.weight"), expected), module_name
    for tensor_name, tensor in model.state_dict().items():
        encoding = entries.get(tensor_name, {}).get("encoding")
        if encoding == "fp32":
            assert np.array_equal(packed.dequantized(tensor_name), tensor.numpy()), tensor_name
        elif encoding == "fp16":
            assert np.array_equal(packed.dequantized(tensor_name), tensor.half().float().numpy()), tensor_name
        elif encoding == "int8_row":  # k/128 values: the int8 codes round max |row| to 127
            values = tensor.numpy()
            error = np.abs(packed.dequantized(tensor_name) - values).max(axis=1)
            assert (error <= np.abs(values).max(axis=1) / 127 / 2 + 1e-7).all()
    assert {e["encoding"] for e in entries.values()} == (
        {"binary", "ternary2", "fp16", "int8_row"} if name.startswith("ternary2") else
        {"binary", "ternary_base3", "fp32"})


@pytest.mark.filterwarnings("ignore:.*a version 1 file")
@pytest.mark.parametrize("version", VERSIONS)
def test_the_runtime_runs_the_golden_file(version):
    name = "ternary2-fp16-int8"
    packed, runtime = read_packed(GOLDEN_DIR / version / name), load(GOLDEN_DIR / version / name)
    model = quantized_model(name)
    kept = {n: torch.from_numpy(packed.dequantized(n)) for n, e in packed.header["tensors"].items()
            if e["encoding"] in ("fp16", "int8_row")}
    model.load_state_dict(kept, strict=False)  # the fake-quant model with the file's fp16 / int8 kept tensors
    ids = torch.tensor([[2, 7, 30, 11, 38, 3, 9, 3], [2, 5, 6, 3, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        got = runtime(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got, expected)


@pytest.mark.parametrize("name", FILES)
def test_export_writes_the_golden_tensors_and_header(name, tmp_path):
    new = write(name, tmp_path / name)
    golden_meta, golden_header = header(GOLDEN / name)
    new_meta, new_header = header(new)
    assert golden_meta[META_VERSION] == new_meta[META_VERSION] == FORMAT_VERSION
    assert new_header["tensors"] == golden_header["tensors"]
    assert new_header["tensor_sha256"] == golden_header["tensor_sha256"]
    assert new_header["quantization"] == golden_header["quantization"]
    # the architecture is transformers' config dict, whose keys follow the transformers version
    for key in ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "id2label"):
        assert new_header["architecture"][key] == golden_header["architecture"][key], key
    assert "_name_or_path" not in new_header["architecture"]
    assert_same_tensors(GOLDEN / name, new)


@pytest.mark.parametrize("name", FILES)
def test_a_version_1_file_reads_as_todays_with_its_missing_checks_named(name):
    with pytest.warns(UserWarning, match="a version 1 file: its tensors carry no checksums"):
        old = read_packed(GOLDEN_DIR / "v1" / name)
    new = read_packed(GOLDEN / name)
    assert old.header["tensors"] == new.header["tensors"]  # activation settings filled in from the rules
    assert old.header["tensor_sha256"] == {}
    assert {k: v.tobytes() for k, v in old.stored.items()} == {k: v.tobytes() for k, v in new.stored.items()}


def test_two_exports_of_one_model_are_the_same_file(tmp_path):
    """A packed file depends on the model only, not on the folder it was exported from. (Not byte for byte:
    safetensors writes the metadata keys in a random order, safetensors#584; SPEC.md says so.)"""
    name = "base3-fp32-groups"
    model = quantized_model(name)
    model.save_pretrained(tmp_path / "a" / "stage")
    tokenizer().save_pretrained(tmp_path / "a" / "stage")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    folders = [export(tmp_path / d / "stage", tmp_path / d / "packed", **FILES[name][1]) for d in "ab"]
    assert header(folders[0]) == header(folders[1])
    assert_same_tensors(*folders)


if __name__ == "__main__":  # regenerate the golden folders (only with a format version bump)
    for golden_name in FILES:
        shutil.rmtree(GOLDEN / golden_name, ignore_errors=True)
        write(golden_name, GOLDEN / golden_name)
        print(f"wrote {GOLDEN / golden_name}", file=sys.stderr)

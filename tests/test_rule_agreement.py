"""One rule matcher: quantize_, the size report, the exporter and the runtime decide every module the
same way, with rules that overlap (the first match wins) and a rule that keeps a module as it is."""

import copy

import pytest
import torch

from xtc.compression import export
from xtc.data.tasks import get_task
from xtc.models import load_model, load_tokenizer
from xtc.packed.read import read_packed
from xtc.quant.apply import quantize_, quantized_modules
from xtc.quant.config import QuantConfig, QuantRule
from xtc.quant.modules import QuantLinear
from xtc.runtime import PackedEmbedding, PackedLinear, load
from xtc.size import planned_entries, size_report

LAYER = r"bert\.encoder\.layer\.\d+\."
CONFIG = QuantConfig(rules=[
    QuantRule(pattern=LAYER + r"attention\.self\.query"),  # kept: no bits, though the next rule matches too
    QuantRule(pattern=LAYER + r"attention\.self\.(query|key)", weight_bits=2, granularity="row", act_bits=8),
    QuantRule(pattern=LAYER + r".*", weight_bits=1, act_bits=8),  # value, attention output, FFN in/out
    QuantRule(pattern=r"bert\.embeddings\.word_embeddings", weight_bits=2, granularity="row"),
    QuantRule(pattern=r"bert\.embeddings\.position_embeddings|bert\.pooler\.dense", weight_bits=8, granularity="row"),
], kept="fp16")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    model, _ = load_model("bert-tiny", get_task("RTE"))
    quantized = quantize_(copy.deepcopy(model), CONFIG)
    root = tmp_path_factory.mktemp("rules")
    tokenizer = load_tokenizer("bert-tiny")
    quantized.save_pretrained(root / "stage")
    tokenizer.save_pretrained(root / "stage")
    return quantized, root / "stage", export(root / "stage", root / "packed")


def test_quantize_size_export_and_runtime_agree_on_every_module(folders):
    quantized, stage, packed_dir = folders
    decided = {name: (m.spec.weight_bits, m.spec.granularity) for name, m in quantized_modules(quantized)}
    assert all(CONFIG.rule_for(name) == m.spec for name, m in quantized_modules(quantized))
    assert "bert.encoder.layer.0.attention.self.query" not in decided  # the first rule kept it
    assert decided["bert.encoder.layer.0.attention.self.key"] == (2, "row")
    assert decided["bert.encoder.layer.1.output.dense"] == (1, "tensor")
    assert decided["bert.pooler.dense"] == (8, "row")

    entries = read_packed(packed_dir).header["tensors"]
    _, planned = planned_entries(stage)
    for name, (bits, granularity) in decided.items():
        entry = entries[f"{name}.weight"]
        assert (entry["bits"], entry["granularity"]) == (bits, granularity), name
        linear = isinstance(quantized.get_submodule(name), QuantLinear)
        assert entry["act_bits"] == (8 if linear and bits in (1, 2) else None), name
        assert planned[f"{name}.weight"]["encoding"] == entry["encoding"], name
    assert size_report(stage)["total"] == size_report(packed_dir)["total"]

    runtime = load(packed_dir)
    for name, (bits, _) in decided.items():
        module = runtime.get_submodule(name)
        if bits in (1, 2):
            assert isinstance(module, (PackedLinear, PackedEmbedding)), name
            if isinstance(module, PackedLinear):
                assert module.bits == bits, name
        else:  # 8-bit rows run as the float values they decode to
            assert not isinstance(module, (PackedLinear, PackedEmbedding)), name
    assert isinstance(runtime.get_submodule("bert.encoder.layer.0.attention.self.query"), torch.nn.Linear)

"""Sizes by tensor group: the same accounting for a model folder and for its packed export."""

import json

import pytest
from click.testing import CliRunner

from xtc.cli import main
from xtc.data.tasks import get_task
from xtc.models import load_model, load_tokenizer
from xtc.quant.apply import quantize_
from xtc.size import size_report


@pytest.fixture(scope="module")
def stage_dirs(tmp_path_factory):
    """A full-precision and a W2A8 bert-tiny model folder, as xtc run writes them."""
    root = tmp_path_factory.mktemp("stages")
    tokenizer = load_tokenizer("bert-tiny")
    for name, preset in (("fp32", None), ("w2a8", "w2a8")):
        model, _ = load_model("bert-tiny", get_task("MRPC"))
        if preset:
            quantize_(model, preset)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root


def xtc(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_planned_size_is_the_exported_size(stage_dirs, tmp_path):
    planned = size_report(stage_dirs / "w2a8")
    result = xtc("export", stage_dirs / "w2a8", "--out", tmp_path / "packed")
    assert result.exit_code == 0, result.output
    exported = size_report(tmp_path / "packed")
    assert exported == planned
    file_bytes = (tmp_path / "packed" / "packed.safetensors").stat().st_size
    assert 0 < file_bytes - planned["total"] < 64_000  # the JSON headers
    # 2-bit codes + a scale per matrix (encoder) or per row (word embeddings), the rest in 16 bits
    hidden, ffn, layers, vocab = 128, 512, 2, 30522
    assert planned["groups"]["encoder weights"] == layers * ((4 * hidden * hidden + 2 * hidden * ffn) // 4 + 6 * 4)
    assert planned["groups"]["word embeddings"] == vocab * (hidden // 4 + 4)


def test_full_precision_folder_counts_as_fp32(stage_dirs):
    report = size_report(stage_dirs / "fp32")
    assert report["total"] == report["fp32"]


def test_size_command(stage_dirs, tmp_path):
    result = xtc("size", stage_dirs / "w2a8")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split("  ")[0] for line in lines[:5]] == ["word embeddings", "other embeddings", "encoder weights",
                                                           "head", "norms and biases"]
    assert lines[-1].startswith("total") and "ratio" in lines[-1]
    report = json.loads(xtc("size", stage_dirs / "w2a8", "--json").stdout)
    assert report == size_report(stage_dirs / "w2a8")


def test_export_and_size_errors(stage_dirs, tmp_path):
    result = xtc("export", stage_dirs / "fp32", "--out", tmp_path / "p")
    assert result.exit_code == 2 and "the model is not quantized" in result.stderr
    result = xtc("size", tmp_path / "none")
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = xtc("export", stage_dirs / "w2a8", "--out", tmp_path / "p", "--ternary-packing", "base4")
    assert result.exit_code == 2 and "--ternary-packing" in result.stderr
    result = xtc("export", stage_dirs / "w2a8", "--out", tmp_path / "p", "--int8", "nope.weight")
    assert result.exit_code == 2 and "int8_tensors names no tensor of the model: nope.weight" in result.stderr

"""The packed runtime: same logits as the fake-quant model, same GLUE metrics, weights kept packed."""

import copy
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from xtc.cli import main
from xtc.data.tasks import get_task
from xtc.models import load_model, load_tokenizer
from xtc.compression import export
from xtc.quant.apply import quantize_
from xtc.runtime import PackedEmbedding, PackedLinear, load

TEXTS = ["a short one", "a much longer sentence with several more words in it", "the third"]


@pytest.fixture(scope="module")
def trained_like():
    """bert-tiny with a head, its weights nudged away from the checkpoint (so the head is not trivial)."""
    torch.manual_seed(0)
    model, _ = load_model("bert-tiny", get_task("MRPC"))
    return model.eval()


@pytest.fixture(scope="module")
def batch():
    return load_tokenizer("bert-tiny")(TEXTS, padding=True, return_tensors="pt")


@pytest.mark.parametrize("preset,ternary", [("w1a8", "ternary2"), ("w2a8", "ternary2"), ("w2a8", "ternary_base3")])
def test_packed_logits_match_the_fake_quant_model(trained_like, batch, tmp_path, preset, ternary):
    fake = quantize_(copy.deepcopy(trained_like), preset).eval()
    export(fake, tmp_path / "fp32", load_tokenizer("bert-tiny"), ternary=ternary, kept="fp32")
    export(fake, tmp_path / "fp16", load_tokenizer("bert-tiny"), ternary=ternary)
    with torch.no_grad():
        expected = fake(**batch).logits
        exact = load(tmp_path / "fp32")(**batch).logits
        half = load(tmp_path / "fp16")(**batch).logits
    # the preset trains the kept tensors in float16: both files hold the values the model computes with
    assert torch.allclose(exact, expected, rtol=1e-4, atol=1e-5), (exact - expected).abs().max()
    assert torch.allclose(half, expected, rtol=1e-4, atol=1e-5), (half - expected).abs().max()


def test_packed_logits_do_not_depend_on_the_thread_count(trained_like, batch, tmp_path):
    export(quantize_(copy.deepcopy(trained_like), "w1a8"), tmp_path, load_tokenizer("bert-tiny"))
    model = load(tmp_path)
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            torch.set_num_threads(1)
            single = model(**batch).logits
            torch.set_num_threads(3)  # the kernels split their columns (and tokens) across 3 threads too
            multi = model(**batch).logits
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, multi)


def test_quantized_weights_stay_packed(trained_like, tmp_path):
    export(quantize_(copy.deepcopy(trained_like), "w1a8"), tmp_path, load_tokenizer("bert-tiny"))
    model = load(tmp_path)
    linears = [m for m in model.modules() if isinstance(m, PackedLinear)]
    embeddings = [m for m in model.modules() if isinstance(m, PackedEmbedding)]
    assert len(linears) == 12 and len(embeddings) == 1
    for m in linears:  # one bit per binary weight (plus one int32 row sum per output)
        assert m.weights.nonzero is None and m.weights.nbytes == m.in_features * m.out_features / 8 + 4 * m.out_features
    assert embeddings[0].stored.dtype == np.uint8 and embeddings[0].stored.shape == (30522, 16)
    float_params = sum(p.numel() for p in model.parameters())
    assert float_params < 100_000  # position/token-type embeddings, LayerNorms, pooler, classifier


def test_eval_of_a_packed_folder_agrees_with_the_fake_quant_folder(trained_like, tmp_path, glue_dir):
    fake = quantize_(copy.deepcopy(trained_like), "w2a8")
    fake.save_pretrained(tmp_path / "stage")
    load_tokenizer("bert-tiny").save_pretrained(tmp_path / "stage")
    runner = CliRunner()
    # the default export: the packed path differs from the fake-quant one by float summation order only
    export_args = ["export", str(tmp_path / "stage"), "--out", str(tmp_path / "packed")]
    assert runner.invoke(main, export_args).exit_code == 0
    scores = {}
    for folder in ("stage", "packed"):
        result = runner.invoke(main, ["eval", str(tmp_path / folder), "--task", "MRPC", "--glue-dir", str(glue_dir),
                                      "--max-eval-samples", "200", "--json"])
        assert result.exit_code == 0, result.output
        scores[folder] = json.loads(result.stdout)["dev"]
    for metric in ("f1", "accuracy"):
        assert abs(scores["stage"][metric] - scores["packed"][metric]) <= 0.001  # 0.1 points


def test_packed_folder_for_another_task(trained_like, tmp_path, glue_dir):
    export(quantize_(copy.deepcopy(trained_like), "w1a8"), tmp_path, load_tokenizer("bert-tiny"))
    result = CliRunner().invoke(main, ["eval", str(tmp_path), "--task", "MNLI", "--glue-dir", str(glue_dir)])
    assert result.exit_code == 2 and "has a 2-way head, but MNLI needs 3" in result.stderr


def test_predict_command(trained_like, tmp_path):
    export(quantize_(copy.deepcopy(trained_like), "w1a8"), tmp_path / "packed", load_tokenizer("bert-tiny"))
    runner = CliRunner()
    result = runner.invoke(main, ["predict", str(tmp_path / "packed"), "--text", "A man plays.", "--text-pair",
                                  "Someone plays.", "--text", "Cats.", "--text-pair", "Dogs."])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(line.split("\t")[0] in ("not_equivalent", "equivalent") for line in lines)
    assert all(0.5 <= float(line.split("\t")[1]) <= 1 for line in lines)
    (tmp_path / "in.tsv").write_text("A man plays.\tSomeone plays.\nCats.\tDogs.\n")
    from_file = runner.invoke(main, ["predict", str(tmp_path / "packed"), "--input", str(tmp_path / "in.tsv"), "--json"])
    assert [json.loads(line)["score"] for line in from_file.stdout.splitlines()] == pytest.approx(
        [float(line.split("\t")[1]) for line in lines], abs=1e-4)
    both = runner.invoke(main, ["predict", str(tmp_path / "packed"), "--text", "a", "--input", str(tmp_path / "in.tsv")])
    assert both.exit_code == 2 and both.stderr.strip() == (
        "xtc: error: give the examples either with --text (and --text-pair) or with --input, not both")
    none = runner.invoke(main, ["predict", str(tmp_path / "packed")])
    assert none.exit_code == 2 and "no examples: give them with --text" in none.stderr
    for content, message in [("one\ttwo\tthree\n", ":1: expected 1 or 2 tab-separated texts, found 3"),
                             ("a\tb\nc\n", ":2: expected 2 (as on the first line) tab-separated texts, found 1"),
                             ("", "the file is empty"),
                             ("caf\xe9 au lait\tun caf\xe9\n".encode("latin-1"), ":1: not UTF-8 (byte 0xe9")]:
        path = tmp_path / "bad.tsv"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        bad = runner.invoke(main, ["predict", str(tmp_path / "packed"), "--input", str(path)])
        assert bad.exit_code == 2 and message in bad.stderr and "Traceback" not in bad.output, bad.output


def test_packed_models_know_their_task(trained_like, tmp_path, glue_dir):
    """The MRPC model refuses single texts and another task's dev set, with the fix in the message."""
    packed = tmp_path / "packed"
    export(quantize_(copy.deepcopy(trained_like), "w1a8"), packed, load_tokenizer("bert-tiny"))
    runner = CliRunner()
    single = runner.invoke(main, ["predict", str(packed), "--text", "A man plays."])
    assert single.exit_code == 2 and "trained on MRPC, which scores pairs of texts: give a --text-pair" in single.stderr
    other = runner.invoke(main, ["eval", str(packed), "--task", "RTE", "--glue-dir", str(glue_dir)])
    assert other.exit_code == 2 and "was trained on MRPC, not RTE" in other.stderr and "--task-mismatch-ok" in other.stderr
    anyway = runner.invoke(main, ["eval", str(packed), "--task", "RTE", "--glue-dir", str(glue_dir),
                                  "--max-eval-samples", "16", "--task-mismatch-ok", "--json"])
    assert anyway.exit_code == 0, anyway.output

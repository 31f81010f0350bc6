"""The torch-free engine against the fake-quant model it was exported from, on real GLUE rows, and no torch
in a fresh interpreter.

The low-bit products are exact on both sides; the float ops that make a quantizer's input (embeddings sum,
LayerNorm, attention, GELU) give the same 8-bit codes only when both compute them in the same order: in torch's
own order a code on a rounding boundary flips now and then (measured on 277 RTE dev rows of MiniLM-L6 W1A8: 258
rows off by more than 1e-5, up to 0.1 of a logit). ``runtime_order_`` (which ``xtc eval`` applies to a stage
folder) follows the engine's order: the codes agree, and the logits differ only by the float rounding of the
pooler's tanh, which feeds no quantizer.
"""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from xtc.compression import export
from xtc.data.glue import load_examples
from xtc.data.tasks import get_task
from xtc import kernels
from xtc.arch import ARCHITECTURES
from xtc.bench import bench
from xtc.errors import XtcError
from xtc.engine import Engine
from xtc.models import load_model, load_tokenizer
from xtc.quant.apply import quantize_
from xtc.quant.runtime_order import runtime_order_
from xtc.recipe import BenchConfig
from tests.test_models import tiny_config


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model, _ = load_model("bert-tiny", get_task("MRPC"))
    with torch.no_grad():  # weights away from the checkpoint, and a head with logits of a trained size (~3)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        model.classifier.weight.mul_(30)
    out = {}
    for preset in ("w1a8", "w2a8"):
        fake = quantize_(copy.deepcopy(model), preset).eval()
        out[preset] = fake, export(fake, tmp_path_factory.mktemp(preset), load_tokenizer("bert-tiny"))
    return out


ROUNDING = 1e-5  # of the largest logit: a flipped 8-bit code moves a logit by 1e-3 or more


@pytest.mark.parametrize("preset", ["w1a8", "w2a8"])
def test_engine_logits_match_the_fake_quant_model_in_runtime_order_on_real_rows(exported, preset, glue_dir):
    fake, folder = exported[preset]
    rows = load_examples(get_task("MRPC"), "dev", glue_dir, 48)
    batch = load_tokenizer("bert-tiny")([r.texts[0] for r in rows], [r.texts[1] for r in rows], padding=True,
                                        truncation=True, max_length=128, return_tensors="np")
    engine = Engine.load(folder)
    got = engine.logits(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    errors = {}
    for order, model in (("torch's", fake), ("the runtime's", runtime_order_(copy.deepcopy(fake)))):
        with torch.no_grad():
            expected = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
        errors[order] = (np.abs(got - expected).max(-1) / np.abs(expected).max()).max()  # of the largest logit
    assert errors["the runtime's"] <= ROUNDING < errors["torch's"], errors  # torch's: some codes flip
    assert (got.argmax(-1) == expected.argmax(-1)).all()


@pytest.mark.parametrize("preset", ["w1a8", "w2a8"])
def test_every_kernel_path_and_thread_count_gives_the_same_logits_bit_for_bit(exported, preset, glue_dir):
    _, folder = exported[preset]
    rows = load_examples(get_task("MRPC"), "dev", glue_dir, 3)  # padded to the longest: masks and a ragged batch
    batch = load_tokenizer("bert-tiny")([r.texts[0] for r in rows], [r.texts[1] for r in rows], padding=True,
                                        truncation=True, max_length=37, return_tensors="np")  # 37: not a block multiple
    inputs = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    reference = Engine.load(folder, path="reference").logits(*inputs)
    for path in kernels.PATHS:
        for threads in (1, 2, 3):
            assert np.array_equal(Engine.load(folder, threads, path).logits(*inputs), reference), (path, threads)


def test_xtc_load_gives_the_engine_and_imports_no_torch(exported):
    """Nor pydantic, nor (to load and predict) numpy: a fresh process's start is its imports (pydantic and its
    schemas were ~100 ms of ~350, numpy 80-150 ms of ~230)."""
    _, folder = exported["w1a8"]
    heavy = "*(m in sys.modules for m in ('torch', 'transformers', 'pydantic', 'numpy'))"
    code = ("import sys, xtc\n"
            f"e = xtc.load({str(folder)!r})\np = e.predict(['A man is playing.', 'Cats sleep.'])\n"
            f"print(len(p), sorted(p[0]), {heavy})\n"
            f"logits = e.logits(**e.encode([['A man is playing.', 'Cats sleep.']]))\nprint(logits.shape, {heavy})\n"
            "print(all(r['label'] == e.config['id2label'][str(i)] for r, i in zip(p, logits.argmax(-1))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.splitlines() == ["2 ['label', 'score'] False False False False",
                                          "(2, 2) False False False True", "True"], result.stderr


@pytest.mark.parametrize("model_type", list(ARCHITECTURES))
def test_every_architecture_runs_on_the_engine_as_its_fake_quant_model(model_type, tmp_path):
    """RoBERTa's positions count from the padding id, DistilBERT has no token types, this ELECTRA's embeddings
    (8 wide) are projected to its hidden size (16), and each head has its own activation: padded rows of
    random ids through all of it."""
    config = tiny_config(model_type)
    config.num_labels = 3
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    with torch.no_grad():  # logits of a trained size (~1)
        model.get_submodule(ARCHITECTURES[model_type].classifier).weight.mul_(30)
    fake = runtime_order_(quantize_(model, "w1a8").eval())
    folder = export(fake, tmp_path, load_tokenizer("bert-tiny"))
    rng = np.random.default_rng(0)
    ids = rng.integers(3, config.vocab_size, (3, 9))
    mask = np.ones_like(ids)
    mask[1, 5:] = mask[2, 2:] = 0
    ids[mask == 0] = config.pad_token_id or 0
    types = np.tile(np.arange(9) >= 4, (3, 1)).astype(np.int64)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if ARCHITECTURES[model_type].token_type_embeddings and config.type_vocab_size > 1:
        inputs["token_type_ids"] = types
    with torch.no_grad():
        expected = fake(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()
    engine = Engine.load(folder)
    got = engine.logits(**inputs)
    assert np.abs(got - expected).max() <= ROUNDING * np.abs(expected).max()
    for path in kernels.PATHS:
        assert np.array_equal(Engine.load(folder, 2, path).logits(**inputs), got), path
    if not ARCHITECTURES[model_type].token_type_embeddings:  # DistilBERT: token types are ignored
        assert np.array_equal(engine.logits(**inputs, token_type_ids=types), got)
    # the longest input: RoBERTa's positions start after the padding id
    pad_offset = config.pad_token_id + 1 if ARCHITECTURES[model_type].positions_after_padding else 0
    assert engine.max_tokens == config.max_position_embeddings - pad_offset
    engine.logits(np.full((1, engine.max_tokens), 5))
    with pytest.raises(XtcError, match=f"input_ids have {engine.max_tokens + 1} tokens; this model takes at most "
                                       f"{engine.max_tokens}"):
        engine.logits(np.full((1, engine.max_tokens + 1), 5))
    report = bench(BenchConfig(model=str(folder), tokens=(4,), repeats=1, warmup=0))  # xtc bench runs it too
    assert (report["model"]["layers"], report["model"]["max_tokens"]) == (3, engine.max_tokens)


def test_xtc_predict_on_a_packed_bert_runs_without_torch_and_agrees_with_the_torch_runtime(exported):
    from xtc.predict import _torch_model, predict

    _, folder = exported["w1a8"]
    pairs = [("A man is playing a guitar.", "Someone plays music."), ("Cats sleep.", "The stock market fell.")]
    engine_results = predict(str(folder), pairs)
    torch_predict, _ = _torch_model(str(folder), 128)
    expected = torch_predict([list(c) for c in zip(*pairs)])
    assert [r["label"] for r in engine_results] == [r["label"] for r in expected]
    assert [r["score"] for r in engine_results] == pytest.approx([r["score"] for r in expected], abs=0.02)
    code = ("import sys\nfrom xtc.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print('exit', e.code, 'torch' in sys.modules, 'transformers' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code, "predict", str(folder), "--text", pairs[0][0],
                             "--text-pair", pairs[0][1]], capture_output=True, text=True)
    lines = result.stdout.splitlines()
    assert lines[-1].split() == ["exit", "0", "False", "False"], result.stderr
    assert lines[0].split("\t")[0] == engine_results[0]["label"]


def test_xtc_eval_on_a_packed_bert_runs_without_torch_and_matches_the_fake_quant_metrics(exported, glue_dir):
    from xtc.evaluation import evaluate
    from xtc.recipe import EvalConfig

    fake, folder = exported["w1a8"]
    fake.save_pretrained(folder.parent / "stage")
    load_tokenizer("bert-tiny").save_pretrained(folder.parent / "stage")
    stage = evaluate(EvalConfig(model=str(folder.parent / "stage"), task="MRPC", glue_dir=glue_dir))
    code = ("import sys, json\nfrom xtc.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print(json.dumps(['exit', e.code, 'torch' in sys.modules, 'transformers' in sys.modules]))\n"
            "    print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n")
    result = subprocess.run([sys.executable, "-c", code, "eval", str(folder), "--task", "MRPC", "--glue-dir",
                             str(glue_dir), "--json"], capture_output=True, text=True)
    *metrics, status, imported = result.stdout.strip().splitlines()
    assert status == '["exit", 0, false, false]', result.stderr
    # nothing of the `train` extra: the deployment install (`pip install xtc`) does not bring it
    assert not set(json.loads(imported)) & {"torch", "transformers", "datasets", "accelerate", "matplotlib"}
    packed = json.loads("\n".join(metrics))
    assert packed["dev"] == pytest.approx(stage["dev"], abs=1e-12)  # all 408 dev rows: the same predictions

"""The fine-tuning loop on the real bert-tiny model and real GLUE rows."""

import json

import pytest
import torch

from xtc.evaluation import evaluate
from xtc.models import load_model
from xtc.data.tasks import get_task
from xtc.recipe import EvalConfig, FinetuneConfig
from xtc.train import cpu_has_bf16, finetune, param_groups


def test_no_weight_decay_on_biases_and_layernorm():
    model, _ = load_model("bert-tiny", get_task("RTE"))
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("weight") and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert {names[id(p)] for p in no_decay["params"]} >= {"bert.embeddings.LayerNorm.weight", "classifier.bias"}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_learns_a_small_training_set(glue_dir, tmp_path):
    """Fitting 32 SST-2 sentences: the training loss must collapse, one dev evaluation per epoch."""
    out = tmp_path / "sst2"
    config = FinetuneConfig(model="bert-tiny", task="SST-2", glue_dir=glue_dir, out=out, max_train_samples=32,
                            max_eval_samples=32, epochs=8, lr=2e-3, batch_size=16, warmup_ratio=0.0,
                            logging_steps=2)
    metrics = finetune(config)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in log if e["event"] == "train"]
    assert losses[0] > 0.5 and losses[-1] < 0.1
    assert [e["step"] for e in log if e["event"] == "eval"] == [2, 4, 6, 8, 10, 12, 14, 16]
    assert metrics["total_steps"] == 16 and metrics["epochs"] == 8


def test_best_checkpoint_is_the_one_saved(glue_dir, tmp_path):
    """The folder holds the best dev checkpoint: re-evaluating it gives the recorded best metrics."""
    out = tmp_path / "mrpc"
    metrics = finetune(FinetuneConfig(model="bert-tiny", task="MRPC", glue_dir=glue_dir, out=out,
                                      max_train_samples=96, max_eval_samples=48, max_steps=12, eval_steps=3,
                                      batch_size=16, lr=5e-4))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    evals = [e for e in log if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [3, 6, 9, 12]
    best = max(evals, key=lambda e: e["dev"]["dev"]["score"])
    assert metrics["best_step"] == best["step"] and metrics["dev"] == best["dev"]
    again = evaluate(EvalConfig(model=str(out), task="MRPC", glue_dir=glue_dir, max_eval_samples=48))
    assert again["dev"] == pytest.approx(metrics["dev"]["dev"])
    saved = json.loads((out / "config.json").read_text())
    assert saved["id2label"] == {"0": "not_equivalent", "1": "equivalent"}


def test_regression_task_trains(glue_dir, tmp_path):
    metrics = finetune(FinetuneConfig(model="bert-tiny", task="STS-B", glue_dir=glue_dir, out=tmp_path / "stsb",
                                      max_train_samples=64, max_eval_samples=64, max_steps=8, batch_size=16,
                                      lr=5e-4))
    assert set(metrics["dev"]["dev"]) == {"pearson", "spearman", "score"}


def test_interrupted_training_resumes_to_the_same_result(glue_dir, tmp_path, monkeypatch):
    """Stop mid-epoch (as a kill would), run again: same weights and metrics as one uninterrupted run."""
    from safetensors.torch import load_file

    from xtc import train as train_module

    def config(out):
        return FinetuneConfig(model="bert-tiny", task="RTE", glue_dir=glue_dir, out=out, max_train_samples=40,
                              max_eval_samples=16, epochs=3, batch_size=8, lr=5e-4, checkpoint_steps=3)

    whole = finetune(config(tmp_path / "whole"))

    calls = {"n": 0}
    original = train_module.cross_entropy_loss

    def dies_at_step_8(model, batch):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt  # after the checkpoint of step 6, inside epoch 2
        return original(model, batch)

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "cross_entropy_loss", dies_at_step_8)
        with pytest.raises(KeyboardInterrupt):
            finetune(config(tmp_path / "resumed"))
    assert (tmp_path / "resumed" / "checkpoint" / "state.json").is_file()
    resumed = finetune(config(tmp_path / "resumed"))

    log = [json.loads(line) for line in (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines()]
    assert {"event": "resume", "step": 6} in log
    assert resumed["dev"] == whole["dev"] and resumed["last_dev"] == whole["last_dev"]
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "resumed" / "checkpoint").exists()


def test_non_finite_loss_stops_with_a_clear_message(glue_dir, tmp_path, monkeypatch):
    from xtc import train as train_module
    from xtc.errors import XtcError

    calls = {"n": 0}
    original = train_module.cross_entropy_loss

    def explodes_at_step_5(model, batch):
        calls["n"] += 1
        terms = original(model, batch)
        return {"loss": terms["loss"] * float("nan")} if calls["n"] == 5 else terms

    monkeypatch.setattr(train_module, "cross_entropy_loss", explodes_at_step_5)
    out = tmp_path / "nan"
    config = FinetuneConfig(model="bert-tiny", task="RTE", glue_dir=glue_dir, out=out, max_train_samples=16,
                            max_eval_samples=8, epochs=3, batch_size=4, checkpoint_steps=2)
    with pytest.raises(XtcError, match=r"loss became nan at step 4; lower the learning rate"):
        finetune(config)
    assert (out / "model.safetensors").is_file()  # the best checkpoint (epoch 1)
    assert (out / "checkpoint" / "state.json").is_file() and not (out / "metrics.json").exists()


def test_bf16_autocast_trains_float32_weights_and_evaluates_in_float32(glue_dir, tmp_path, monkeypatch, capsys):
    """--bf16 runs the training forward in bfloat16 (seen by the model's matmuls) but stores float32
    weights, and the recorded dev metrics are those of a float32 re-evaluation of the saved folder."""
    seen = []
    linear = torch.nn.functional.linear
    monkeypatch.setattr(torch.nn.functional, "linear",
                        lambda x, w, b=None: seen.append(torch.is_autocast_enabled(x.device.type)) or linear(x, w, b))
    out = tmp_path / "mrpc"
    metrics = finetune(FinetuneConfig(model="bert-tiny", task="MRPC", glue_dir=glue_dir, out=out,
                                      max_train_samples=64, max_eval_samples=48, max_steps=4, batch_size=16,
                                      lr=5e-4, bf16=True))
    monkeypatch.undo()
    assert any(seen) and not all(seen)  # autocast in the training steps, not in evaluation
    # a CPU without bf16 instructions emulates them, slower than float32: the run says so
    warned = "without bfloat16 instructions" in capsys.readouterr().err
    assert warned == (not cpu_has_bf16())
    model, _ = load_model(str(out))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    again = evaluate(EvalConfig(model=str(out), task="MRPC", glue_dir=glue_dir, max_eval_samples=48))
    assert again["dev"] == pytest.approx(metrics["dev"]["dev"])

"""`xtc run` end to end on the real bert-tiny: stages, records, skipping finished work, resuming a kill."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from xtc.cli import main
from xtc.data.tasks import get_task
from xtc.models import load_model
from xtc.quant.modules import QuantLinear
from xtc.rundir import write_json

def tiny(*stages):
    """Tiny budgets for bert-tiny (2 layers: the student keeps teacher layer 1)."""
    args = ["--model", "bert-tiny", "--task", "MRPC", "--max-train-samples", "48", "--max-eval-samples", "32",
            "--set", "layer_reduction.layers=[1]"]
    for stage in ("teacher", "layer_reduction", *stages):
        args += ["--set", f"{stage}.max_steps=4", "--set", f"{stage}.batch_size=16"]
    return args


TINY = tiny("quantize_w2a8", "quantize")


def xtc(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, glue_dir):
    out = tmp_path_factory.mktemp("xtc") / "mrpc-w1"
    result = xtc("run", "--recipe", "xtc-w1a8-l3", "--glue-dir", glue_dir, "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    return out, result.stdout


def test_final_table(run_dir):
    _, stdout = run_dir
    rows = [line for line in stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| stage | layers | W/A bits | dev f1 | dev accuracy | size (MB) | wall time |")
    assert [r.split(" | ")[:3] for r in rows[1:]] == [["| teacher", "2", "FP32"], ["| layer_reduction", "1", "FP32"],
                                                        ["| quantize_w2a8", "1", "W2A8"], ["| quantize", "1", "W1A8"]]
    for row in rows[1:]:  # 4 steps: a stage may predict one class only; the table then says so
        if "†" in row:
            assert f"† {row.split(' | ')[0].removeprefix('| ')}: degenerate: every prediction is" in stdout
    sizes = [float(r.split(" | ")[-2]) for r in rows[1:]]
    assert sizes[3] < sizes[2] < sizes[1] / 10 < sizes[0] / 10  # 1-/2-bit matrices and 16-bit rest, vs FP32


def test_stage_folders_record_layers_and_quantization(run_dir):
    out, _ = run_dir
    reduced = json.loads((out / "layer_reduction" / "config.json").read_text())
    assert reduced["num_hidden_layers"] == 1 and reduced["xtc_teacher_layers"] == [1]
    quantized = json.loads((out / "quantize" / "config.json").read_text())
    assert quantized["xtc_teacher_layers"] == [1]
    assert [r["weight_bits"] for r in quantized["xtc_quantization"]["rules"]] == [1, 2, 8, 8]  # w1a8-word2
    assert quantized["xtc_quantization"]["kept"] == "fp16"
    model, _ = load_model(out / "quantize", get_task("MRPC"))
    linears = [m for m in model.modules() if isinstance(m, QuantLinear) and m.spec.weight_bits == 1]
    assert len(linears) == 6 and all(m.spec.act_bits == 8 for m in linears)
    summary = json.loads((out / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["teacher", "layer_reduction", "quantize_w2a8", "quantize"]
    teacher = json.loads((out / "teacher" / "config.json").read_text())  # the preset trims the 1-bit stage's table
    assert quantized["vocab_size"] < teacher["vocab_size"]


def test_eval_rebuilds_the_exact_fake_quant_model(run_dir, glue_dir):
    out, _ = run_dir
    result = xtc("eval", out / "quantize", "--task", "MRPC", "--glue-dir", glue_dir, "--max-eval-samples", "32",
                 "--json")
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "quantize" / "metrics.json").read_text())["dev"]["dev"]
    assert json.loads(result.stdout)["dev"] == pytest.approx(recorded)


def test_rerun_skips_finished_stages(run_dir, glue_dir):
    out, first = run_dir
    again = xtc("run", "--recipe", "xtc-w1a8-l3", "--glue-dir", glue_dir, "--out", out, *TINY)
    assert again.exit_code == 0, again.output
    assert again.output.count("finished earlier, skipping") == 4
    table = lambda text: [line for line in text.splitlines() if line.startswith("| ")]  # noqa: E731
    assert table(again.stdout) == table(first)


def test_changed_recipe_is_refused(run_dir, glue_dir):
    out, _ = run_dir
    result = xtc("run", "--recipe", "xtc-w1a8-l3", "--glue-dir", glue_dir, "--out", out, *TINY,
                 "--set", "quantize.lr=2e-3")
    assert result.exit_code == 2 and "holds a different run (differs in: recipe)" in result.stderr


def _xtc_process(*args, log):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with open(log, "a") as f:
        return subprocess.Popen([sys.executable, "-m", "xtc", "run", *map(str, args)], env=env, stdout=f, stderr=f)


@pytest.mark.parametrize("group_by_length", ["false", "true"])
def test_killed_run_resumes_to_the_same_result(run_dir, glue_dir, tmp_path, group_by_length):
    """SIGKILL in the middle of the quantization stage, run the same command again: same weights
    as an uninterrupted run. The teacher comes from --teacher (its finetune stage is skipped)."""
    teacher, _ = run_dir
    args = ["--recipe", "xtc-w2a8-l3", "--teacher", teacher / "teacher", "--glue-dir", glue_dir, *tiny("quantize"),
            "--set", "quantize.max_steps=24", "--set", "quantize.batch_size=8", "--set", "quantize.checkpoint_steps=2",
            "--set", f"quantize.group_by_length={group_by_length}"]
    whole = _xtc_process(*args, "--out", tmp_path / "whole", log=tmp_path / "whole.log")
    killed = _xtc_process(*args, "--out", tmp_path / "killed", log=tmp_path / "killed.log")
    state = tmp_path / "killed" / "quantize" / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while not state.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert state.exists() or (tmp_path / "killed" / "quantize" / "checkpoint.old").exists()
    assert not (tmp_path / "killed" / "quantize" / "metrics.json").exists(), "the run ended before the kill"
    resumed = _xtc_process(*args, "--out", tmp_path / "killed", log=tmp_path / "killed.log")
    assert resumed.wait() == 0, (tmp_path / "killed.log").read_text()[-2000:]
    assert whole.wait() == 0, (tmp_path / "whole.log").read_text()[-2000:]
    log = [json.loads(line) for line in (tmp_path / "killed" / "quantize" / "train_log.jsonl").read_text().splitlines()]
    assert [e["event"] for e in log].count("resume") == 1
    a = load_file(tmp_path / "whole" / "quantize" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "quantize" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    metrics = [json.loads((tmp_path / run / "quantize" / "metrics.json").read_text()) for run in ("whole", "killed")]
    assert metrics[0]["dev"] == metrics[1]["dev"] and metrics[0]["best_step"] == metrics[1]["best_step"]


def test_teacher_outputs_in_files_are_read_by_the_next_run(run_dir, glue_dir, tmp_path):
    """Two runs quantizing one student from one teacher: the second reads the first's files, and its
    result equals a run that keeps the outputs in memory (same values: both come from the same fill)."""
    teacher, _ = run_dir
    args = ["run", "--recipe", "xtc-w1a8-l3", "--teacher", teacher / "teacher", "--glue-dir", glue_dir, *TINY,
            "--reuse", f"layer_reduction={teacher / 'layer_reduction'}", "--set", "quantize.max_steps=8"]
    first = xtc(*args, "--out", tmp_path / "a", "--teacher-cache-dir", tmp_path / "store")
    second = xtc(*args, "--out", tmp_path / "b", "--teacher-cache-dir", tmp_path / "store")
    memory = xtc(*args, "--out", tmp_path / "c")
    assert first.exit_code == second.exit_code == memory.exit_code == 0, first.output + second.output
    assert f"written to {tmp_path / 'store'}" in first.output and f"read from {tmp_path / 'store'}" in second.output
    weights = [load_file(tmp_path / run / "quantize" / "model.safetensors") for run in "abc"]
    assert all(torch.equal(weights[0][k], w[k]) for w in weights[1:] for k in weights[0])


def test_two_stage_schedule_continues_from_the_quantized_model(run_dir, glue_dir, tmp_path):
    teacher, _ = run_dir
    args = ["run", "--recipe", "xtc-w1a8-l3-two-stage", "--teacher", teacher / "teacher", "--glue-dir", glue_dir,
            "--out", tmp_path / "two", *tiny("quantize_w2a8", "quantize_intermediate", "quantize_prediction")]
    result = xtc(*args)
    assert result.exit_code == 0, result.output
    assert "| quantize_prediction | 1 | W1A8 |" in result.stdout
    log = [json.loads(line) for line in (tmp_path / "two" / "quantize_intermediate" / "train_log.jsonl").read_text().splitlines()]
    assert all("logit" not in e and {"hidden", "attention"} <= set(e) for e in log if e["event"] == "train")
    log = [json.loads(line) for line in (tmp_path / "two" / "quantize_prediction" / "train_log.jsonl").read_text().splitlines()]
    assert all(set(e) >= {"logit"} and "hidden" not in e for e in log if e["event"] == "train")


def test_augmented_distillation_stage(run_dir, glue_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XTC_CACHE", str(tmp_path / "cache"))
    teacher, _ = run_dir
    result = xtc("run", "--recipe", "xtc-w1a8-l3", "--teacher", teacher / "teacher", "--glue-dir", glue_dir,
                 "--out", tmp_path / "aug", *TINY, "--set", "layer_reduction.augment={copies: 2, replace_prob: 0.3}")
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (tmp_path / "aug" / "layer_reduction" / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "start" and log[0]["train_examples"] == 48 * 3
    quant_log = (tmp_path / "aug" / "quantize" / "train_log.jsonl").read_text().splitlines()
    assert json.loads(quant_log[0])["train_examples"] == 48  # only the stage that asks for it


def test_teacher_stage_refuses_augmentation():
    result = xtc("run", "--recipe", "xtc-w1a8-l3", "--task", "RTE", "--out", "unused",
                 "--set", "teacher.augment={copies: 2}")
    assert result.exit_code == 2 and "takes no layers, quant, augment or trim_vocabulary" in result.stderr


def test_stages_start_from_a_named_stage_or_another_model(run_dir, glue_dir, tmp_path):
    """One recipe, several students: two quantized ones from the same layer-reduced stage, one from another model."""
    teacher, _ = run_dir
    recipe = tmp_path / "glue.yaml"
    recipe.write_text("""
stages:
  - {name: teacher, kind: finetune}
  - {name: layer_reduction, kind: distill, layers: [1]}
  - {name: l1_w2, kind: distill, quant: w2a8}
  - {name: l1_w1, kind: distill, quant: w1a8, init: layer_reduction, lr: 1.0e-12}
  - {name: other, kind: distill, init: "model:bert-tiny", layer_map: [0, 1]}
""")
    args = ["run", "--recipe", recipe, "--teacher", teacher / "teacher", "--glue-dir", glue_dir, "--out",
            tmp_path / "out", *tiny("l1_w2", "l1_w1", "other")]
    result = xtc(*args)
    assert result.exit_code == 0, result.output
    reduced = load_file(tmp_path / "out" / "layer_reduction" / "model.safetensors")
    from_reduced = load_file(tmp_path / "out" / "l1_w1" / "model.safetensors")
    # with a vanishing learning rate, l1_w1's latent weights are still layer_reduction's, not l1_w2's
    assert all(torch.allclose(from_reduced[k], v, atol=1e-8) for k, v in reduced.items())
    other = json.loads((tmp_path / "out" / "other" / "config.json").read_text())
    assert other["num_hidden_layers"] == 2 and other["xtc_teacher_layers"] == [0, 1]


@pytest.mark.parametrize("stage, message", [
    ("{name: s, kind: distill, init: nowhere}", "init 'nowhere' is not"),
    ("{name: s, kind: distill, layer_map: [0]}", "layer_map is for a student started from another model"),
    ("{name: s, kind: distill, init: 'model:bert-tiny', layers: [1]}", "are exclusive"),
])
def test_bad_stage_starts_are_refused(tmp_path, stage, message):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(f"stages:\n  - {{name: teacher, kind: finetune}}\n  - {stage}\n")
    result = xtc("run", "--recipe", recipe, "--task", "RTE", "--out", tmp_path / "o")
    assert result.exit_code == 2 and message in result.stderr, result.output


def test_reuse_a_finished_stage(run_dir, glue_dir, tmp_path):
    teacher, _ = run_dir
    result = xtc("run", "--recipe", "xtc-w2a8-l3", "--teacher", teacher / "teacher", "--glue-dir", glue_dir,
                 "--out", tmp_path / "w2", *tiny("quantize"), "--reuse", f"layer_reduction={teacher / 'layer_reduction'}")
    assert result.exit_code == 0, result.output
    assert "| layer_reduction | 1 | FP32 |" in result.stdout and "| quantize | 1 | W2A8 |" in result.stdout
    assert not (tmp_path / "w2" / "layer_reduction").exists()  # not trained again
    bad = xtc("run", "--recipe", "xtc-w2a8-l3", "--teacher", teacher / "teacher", "--glue-dir", glue_dir,
              "--out", tmp_path / "bad", *tiny("quantize"), "--reuse", f"nosuch={teacher / 'layer_reduction'}")
    assert bad.exit_code == 2 and "has no distill stage 'nosuch'" in bad.stderr


def test_a_trimmed_vocabulary_is_what_is_scored_and_exported(run_dir, glue_dir, tmp_path):
    """quantize.trim_vocabulary=true (xtc-w1a8-l3's default): the stage folder holds the trimmed model, its recorded
    dev score is the trimmed model's (xtc eval of the folder and of its packed export agree with it), the full one
    beside."""
    from xtc.size import packed_size_bytes

    teacher, _ = run_dir
    only_training_tokens = ("--set", "quantize.trim_vocabulary=true", "--set", "quantize.vocabulary_rows=null")
    result = xtc("run", "--recipe", "xtc-w1a8-l3", "--teacher", teacher / "teacher", "--glue-dir", glue_dir,
                 "--out", tmp_path / "t", *TINY, "--reuse", f"layer_reduction={teacher / 'layer_reduction'}",
                 *only_training_tokens)
    assert result.exit_code == 0, result.output
    stage = tmp_path / "t" / "quantize"
    metrics = json.loads((stage / "metrics.json").read_text())
    kept = json.loads((stage / "config.json").read_text())["vocab_size"]
    assert 1994 < kept == metrics["vocabulary"]["kept"] < 4000  # 48 training rows' tokens + 1994 characters
    assert "dev_full_vocabulary" in metrics["vocabulary"] and not (stage / "trimmed.tmp").exists()
    full_size = packed_size_bytes(stage / "full_vocabulary") / 1e6
    size = json.loads((tmp_path / "t" / "summary.json").read_text())["stages"][3]["size_mb"]
    assert size < full_size - (30522 - kept) * 128 / 4 / 1e6 * 0.9  # bert-tiny's 2-bit word rows: 32 bytes each
    evaluated = xtc("eval", stage, "--task", "MRPC", "--glue-dir", glue_dir, "--max-eval-samples", "32", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["dev"] == pytest.approx(metrics["dev"]["dev"])
    assert xtc("export", stage, "--out", tmp_path / "packed").exit_code == 0
    engine = xtc("eval", tmp_path / "packed", "--task", "MRPC", "--glue-dir", glue_dir, "--max-eval-samples", "32",
                 "--json")
    assert engine.exit_code == 0, engine.output
    assert json.loads(engine.stdout)["dev"]["accuracy"] == pytest.approx(metrics["dev"]["dev"]["accuracy"], abs=2 / 32)
    # a run stopped halfway through publishing the trimmed files trims again from full_vocabulary/
    shutil.copy(stage / "full_vocabulary" / "config.json", stage / "config.json")
    write_json(stage / "metrics.json", {k: v for k, v in metrics.items() if k != "vocabulary"})
    again = xtc("run", "--recipe", "xtc-w1a8-l3", "--teacher", teacher / "teacher", "--glue-dir", glue_dir,
                "--out", tmp_path / "t", *TINY, "--reuse", f"layer_reduction={teacher / 'layer_reduction'}",
                *only_training_tokens)
    assert again.exit_code == 0, again.output
    assert json.loads((stage / "metrics.json").read_text()) == metrics
    assert json.loads((stage / "config.json").read_text())["vocab_size"] == kept
    # another row budget trims the trained model again, without training it again
    trained = (stage / "train_log.jsonl").read_text()
    filled = xtc("run", "--recipe", "xtc-w1a8-l3", "--teacher", teacher / "teacher", "--glue-dir", glue_dir,
                 "--out", tmp_path / "t", *TINY, "--reuse", f"layer_reduction={teacher / 'layer_reduction'}",
                 "--set", "quantize.vocabulary_rows=8000")
    assert filled.exit_code == 0, filled.output
    refilled = json.loads((stage / "metrics.json").read_text())
    assert refilled["vocabulary"]["kept"] == 8000 == json.loads((stage / "config.json").read_text())["vocab_size"]
    assert refilled["vocabulary"]["rows"] == 8000 and (stage / "train_log.jsonl").read_text() == trained
    assert refilled["vocabulary"]["dev_full_vocabulary"] == metrics["vocabulary"]["dev_full_vocabulary"]


def test_trimming_a_vocabulary_it_cannot_is_refused_before_training(tmp_path):
    result = xtc("run", "--recipe", "xtc-w1a8-l3", "--model", "bert-tiny", "--task", "RTE", "--out", tmp_path / "o",
                 "--set", "quantize.trim_vocabulary=true", "--set", "quantize.quant={rules: [{pattern: "
                 "'bert\\.embeddings\\.word_embeddings', weight_bits: 1, granularity: tensor}]}")
    assert result.exit_code == 2 and "trim_vocabulary: the word table is quantized with one scale" in result.stderr, \
        result.output
    assert not (tmp_path / "o" / "teacher").exists()


def test_no_stage_may_start_from_a_trimmed_one(tmp_path):
    result = xtc("run", "--recipe", "xtc-w1a8-l3", "--task", "RTE", "--out", tmp_path / "o",
                 "--set", "layer_reduction.trim_vocabulary=true")
    assert result.exit_code == 2 and "stage quantize_w2a8: starts from stage layer_reduction, which trims its " \
        "vocabulary" in result.stderr, result.output


def test_a_trimmed_stage_may_come_before_stages_that_start_elsewhere():
    from pydantic import ValidationError

    from xtc.recipe import Recipe

    recipe = Recipe.model_validate({"stages": [
        {"name": "teacher", "kind": "finetune"},
        {"name": "l3", "kind": "distill", "layers": [0], "quant": "w1a8-word2", "trim_vocabulary": True},
        {"name": "l6", "kind": "distill", "init": "teacher", "quant": "w1a8-word2", "trim_vocabulary": True}]})
    assert [s.trim_vocabulary for s in recipe.stages] == [False, True, True]
    with pytest.raises(ValidationError, match="stage l6: starts from stage l3, which trims its vocabulary"):
        Recipe.model_validate({"stages": [
            {"name": "teacher", "kind": "finetune"},
            {"name": "l3", "kind": "distill", "layers": [0], "quant": "w1a8-word2", "trim_vocabulary": True},
            {"name": "l6", "kind": "distill", "init": "l3", "quant": "w1a8-word2"}]})


def test_degenerate_stages_are_marked_in_the_table():
    from xtc.pipeline import format_table

    dev = {"dev": {"f1": 0.81, "accuracy": 0.68, "score": 0.745}}
    rows = [{"stage": "teacher", "layers": 2, "bits": "FP32", "dev": dev, "size_mb": 17.5, "wall_time_s": 60},
            {"stage": "quantize", "layers": 1, "bits": "W1A8", "dev": dev, "size_mb": 0.5, "wall_time_s": 30,
             "degenerate": "every prediction is 'equivalent' (one class)"}]
    table = format_table(rows, get_task("MRPC")).splitlines()
    assert table[2] == "| teacher | 2 | FP32 | 81.00 | 68.00 | 17.50 | 1.0 min |"
    assert table[3] == "| quantize | 1 | W1A8 | 81.00 † | 68.00 † | 0.50 | 0.5 min |"
    assert table[4] == "† quantize: degenerate: every prediction is 'equivalent' (one class) on dev; train longer or check the data"

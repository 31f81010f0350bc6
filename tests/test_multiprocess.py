"""Data-parallel training in 2 CPU processes (gloo, through Accelerate) matches 1 process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM

from xtc.models import load_tokenizer, resolve_model


@pytest.fixture(scope="module")
def dropout_free_tiny(tmp_path_factory):
    """The real bert-tiny with dropout off: with dropout, 2 processes draw other masks than 1 would."""
    folder = tmp_path_factory.mktemp("bert-tiny-nodrop")
    model = AutoModelForMaskedLM.from_pretrained(resolve_model("bert-tiny"))
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
    model.save_pretrained(folder)
    load_tokenizer("bert-tiny").save_pretrained(folder)
    return folder


def finetune(model, glue_dir, out, processes):
    cmd = [sys.executable, "-m", "xtc", "finetune", "--model", str(model), "--task", "MRPC", "--glue-dir",
           str(glue_dir), "--out", str(out), "--max-train-samples", "64", "--max-eval-samples", "30",
           "--max-steps", "6", "--batch-size", "16", "--eval-batch-size", "16", "--lr", "1e-3",
           "--num-processes", str(processes)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_two_processes_match_one(dropout_free_tiny, glue_dir, tmp_path):
    one = finetune(dropout_free_tiny, glue_dir, tmp_path / "one", 1)
    two = finetune(dropout_free_tiny, glue_dir, tmp_path / "two", 2)
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    start = load_file(dropout_free_tiny / "model.safetensors")
    moved = max((a[k] - start[k]).abs().max().item() for k in start if k in a and a[k].shape == start[k].shape)
    assert moved > 1e-3  # training changed the weights, so the comparison means something
    # Adam divides by sqrt(v): a float-rounding difference in a tiny gradient (the all-reduced mean of two
    # halves vs the mean of the whole batch) moves a weight by up to ~lr; 6 steps of lr 1e-3 move them by ~6e-3
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-4, msg=name)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m1["total_steps"] == m2["total_steps"] == 6  # same global batch, same number of steps
    assert m1["dev"] == m2["dev"]  # evaluation sharded over the processes and gathered: all 30 rows, once
    # one process writes: each log event once, the result printed once
    events = [json.loads(line)["event"] for line in (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()]
    assert events.count("start") == 1 and events.count("end") == 1
    assert two.stdout.count("best dev") == 1 and one.stdout.count("best dev") == 1


def test_batch_not_divisible_by_processes_is_refused(dropout_free_tiny, glue_dir, tmp_path):
    cmd = [sys.executable, "-m", "xtc", "finetune", "--model", str(dropout_free_tiny), "--task", "MRPC",
           "--glue-dir", str(glue_dir), "--out", str(tmp_path / "o"), "--max-train-samples", "16",
           "--max-steps", "1", "--batch-size", "15", "--num-processes", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            timeout=300)
    assert result.returncode != 0 and "must be multiples of the 2 processes" in result.stderr


def test_a_whole_recipe_runs_in_two_processes(dropout_free_tiny, glue_dir, tmp_path):
    """Teacher, layer reduction with KD and quantization with KD, each stage data-parallel; one table printed."""
    from tests.test_pipeline import tiny

    args = [a if a != "bert-tiny" else str(dropout_free_tiny) for a in tiny("quantize_w2a8", "quantize")]
    cmd = [sys.executable, "-m", "xtc", "run", "--recipe", "xtc-w1a8-l3", "--glue-dir", str(glue_dir),
           "--out", str(tmp_path / "run"), *args, "--num-processes", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("| quantize | 1 | W1A8 |") == 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["teacher", "layer_reduction", "quantize_w2a8", "quantize"]


def test_killed_two_process_run_resumes(dropout_free_tiny, glue_dir, tmp_path):
    """SIGKILL to the launcher and both workers mid-training; the same command resumes from the one checkpoint."""
    import contextlib
    import signal
    import time

    import psutil

    def start(out):
        cmd = [sys.executable, "-m", "xtc", "finetune", "--model", str(dropout_free_tiny), "--task", "MRPC",
               "--glue-dir", str(glue_dir), "--out", str(out), "--max-train-samples", "64", "--max-eval-samples", "16",
               "--max-steps", "16", "--batch-size", "8", "--checkpoint-steps", "2", "--num-processes", "2"]
        return subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{out.name}.log", "ab"))

    whole = start(tmp_path / "whole")
    assert whole.wait(timeout=300) == 0, (tmp_path / "whole.log").read_text()[-2000:]
    killed = start(tmp_path / "killed")
    state = tmp_path / "killed" / "checkpoint" / "state.json"
    deadline = time.time() + 200
    while not state.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    family = [killed.pid, *(c.pid for c in psutil.Process(killed.pid).children(recursive=True))]
    for pid in family:  # the launcher and its workers (which torch's launcher may start in their own groups)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    killed.wait()
    time.sleep(1)
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in family)
    assert not (tmp_path / "killed" / "metrics.json").exists(), "the run ended before the kill"
    resumed = start(tmp_path / "killed")
    assert resumed.wait(timeout=300) == 0, (tmp_path / "killed.log").read_text()[-2000:]
    events = [json.loads(line)["event"] for line in (tmp_path / "killed" / "train_log.jsonl").read_text().splitlines()]
    assert events.count("resume") == 1 and events.count("end") == 1
    a = load_file(tmp_path / "whole" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)

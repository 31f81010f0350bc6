"""The report's statistics, on a results file in the format the runner writes."""

import json

import pytest

from xtc.errors import XtcError
from xtc.study.report import latest_records, write_report


def record(cell, lr, seed, f1, acc, status="ok"):
    base = {"cell": cell, "task": "MRPC", "settings": {"quantize.lr": lr, "seed": seed}, "recipe": "xtc-w1a8-l3",
            "seed": seed, "status": status}
    if status != "ok":
        return {**base, "error": "xtc: error: boom"}
    return {**base, "dev": {"f1": f1, "accuracy": acc, "score": (f1 + acc) / 2}, "bits": "W1A8", "layers": 3,
            "size_mb": 2.5, "wall_time_s": 120.0, "stage": "quantize"}


@pytest.fixture
def study_dir(tmp_path):
    (tmp_path / "study.json").write_text(json.dumps({"description": "lr", "model": "minilm-l6", "recipe": "xtc-w1a8-l3",
                                                     "tasks": ["MRPC"], "grid": {"quantize.lr": [1e-4, 5e-5],
                                                                                  "seed": [1, 2]}}))
    rows = [record("a", 1e-4, 1, 0.80, 0.70), record("b", 1e-4, 2, 0.84, 0.74),
            record("c", 5e-5, 1, 0.0, 0.0, status="failed"), record("c", 5e-5, 1, 0.90, 0.80),  # retried: ok
            record("d", 5e-5, 2, 0.90, 0.80)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_mean_and_std_over_seeds(study_dir):
    assert [r["status"] for r in latest_records(study_dir)] == ["ok"] * 4
    text = write_report(study_dir).read_text()
    # lr 1e-4: f1 (80, 84) -> 82.00 ± 2.83; accuracy (70, 74) -> 72.00 ± 2.83; lr 5e-5 first (higher score)
    rows = [line for line in text.splitlines() if line.startswith(("| 0.0001", "| 5e-05"))]
    assert rows == ["| 5e-05 | 90.00 ± 0.00 | 80.00 ± 0.00 | 2 | W1A8 | 2.50 | 2.0 min |",
                    "| 0.0001 | 82.00 ± 2.83 | 72.00 ± 2.83 | 2 | W1A8 | 2.50 | 2.0 min |"]
    assert "Failed cells" not in text
    assert (study_dir / "plots" / "by_quantize_lr.png").is_file()


def test_a_flag_is_plotted_as_categories(tmp_path):
    """A boolean grid key (quantize.trim_vocabulary) is two categories on the plot's axis, not two numbers."""
    study = {"description": "trim", "model": "minilm-l6", "recipe": "xtc-w1a8-l3", "tasks": ["MRPC"],
             "grid": {"quantize.trim_vocabulary": [False, True]}}
    (tmp_path / "study.json").write_text(json.dumps(study))
    rows = [{**record(name, 5e-5, 1, f1, f1), "settings": {"quantize.trim_vocabulary": flag}}
            for name, flag, f1 in [("a", False, 0.8), ("b", True, 0.7)]]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = write_report(tmp_path).read_text()
    assert "2 of 2 cells finished" in text
    assert (tmp_path / "plots" / "by_quantize_trim_vocabulary.png").is_file()


def test_not_a_study(tmp_path):
    with pytest.raises(XtcError, match="not a study folder"):
        write_report(tmp_path)


def test_effects_answer_each_question_against_the_center(tmp_path):
    """A one-factor study: budget per bit width (keys varied together) and learning rate, two seeds,
    two tasks. Each effects table holds the other keys at the center and gives the differences."""
    study = {"description": "budget and lr", "model": "minilm-l6", "recipe": "xtc-w1a8-l3", "tasks": ["RTE", "MRPC"],
             "seeds": [1, 2], "center": {"quantize.epochs": 1, "quantize.quant": "w1a8", "quantize.lr": 5e-5},
             "grids": {"budget_w1a8": {"quantize.epochs": [1, 3]},
                       "budget_w2a8": {"quantize.epochs": [1, 3], "quantize.quant": ["w2a8"]},
                       "lr": {"quantize.lr": [2e-5, 5e-5]}}}
    (tmp_path / "study.json").write_text(json.dumps(study))

    def score(task, epochs, quant, lr, seed):  # 1-bit gains 4 points from 3x budget, 2-bit 1; lr 2e-5 loses 2
        return (60 if task == "RTE" else 70) + (4 if quant == "w1a8" else 1) * (epochs == 3) + (quant == "w2a8") \
            - 2 * (lr == 2e-5) + (0.5 if seed == 1 else -0.5)

    rows, settings = [], [(1, "w1a8", 5e-5), (3, "w1a8", 5e-5), (1, "w2a8", 5e-5), (3, "w2a8", 5e-5), (1, "w1a8", 2e-5)]
    for task in study["tasks"]:
        for epochs, quant, lr in settings:
            for seed in (1, 2):
                x = score(task, epochs, quant, lr, seed) / 100
                dev = {"accuracy": x, "score": x} if task == "RTE" else {"f1": x, "accuracy": x, "score": x}
                rows.append({"cell": f"{task}-{epochs}-{quant}-{lr}-{seed}", "task": task, "status": "ok",
                             "settings": {"quantize.epochs": epochs, "quantize.quant": quant, "quantize.lr": lr,
                                          "seed": seed}, "dev": dev, "bits": quant.upper(), "layers": 3,
                             "size_mb": 2.5 if quant == "w1a8" else 4.5, "wall_time_s": 60.0 * epochs})
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = write_report(tmp_path).read_text()
    effects = text.split("## Effects")[1].split("## Every setting")[0]
    assert "### quantize.epochs (with quantize.quant)" in effects
    assert "| RTE | w1a8 | 60.00 ± 0.71 (2) | 64.00 ± 0.71 (2) (+4.00) | 3 |" in effects
    assert "| MRPC | w2a8 | 71.00 ± 0.71 (2) | 72.00 ± 0.71 (2) (+1.00) | 3 |" in effects
    assert "| mean over 2 tasks | w1a8 | 65.00 | 69.00 (+4.00) | 3 |" in effects
    assert "### quantize.lr\n" in effects  # lr's table holds epochs and bits at the center: 1 epoch, w1a8
    assert "| RTE | 58.00 ± 0.71 (2) (-2.00) | 60.00 ± 0.71 (2) | 5e-05 |" in effects


def test_a_study_stopped_halfway_reports_what_it_has(tmp_path):
    """Seed 1 only (the runner's first half), and one cell of the second task not run yet."""
    study = {"description": "lr", "model": "minilm-l6", "recipe": "xtc-w1a8-l3", "tasks": ["RTE", "MRPC"],
             "seeds": [1, 2], "center": {"quantize.lr": 5e-5}, "grids": {"lr": {"quantize.lr": [2e-5, 5e-5]}}}
    (tmp_path / "study.json").write_text(json.dumps(study))
    rows = []
    for task, lr, x in [("RTE", 5e-5, 0.6), ("RTE", 2e-5, 0.58), ("MRPC", 5e-5, 0.7)]:
        rows.append({"cell": f"{task}-{lr}", "task": task, "status": "ok", "settings": {"quantize.lr": lr, "seed": 1},
                     "dev": {"accuracy": x, "score": x, **({"f1": x} if task == "MRPC" else {})}, "bits": "W1A8",
                     "layers": 3, "size_mb": 2.5, "wall_time_s": 60.0})
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows[0]["xtc_commit"], rows[1]["xtc_commit"] = "abc1234", "def5678"  # the third predates the field
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = write_report(tmp_path).read_text()
    assert "3 of 8 cells finished, 0 failed" in report  # 2 tasks x 2 learning rates x 2 seeds
    assert "Cells run by xtc commits abc1234, def5678 (1 recorded without their commit)." in report
    effects = report.split("## Effects")[1].split("## Every setting")[0]
    assert "| RTE | 58.00 ± 0.00 (1) (-2.00) | 60.00 ± 0.00 (1) | 5e-05 |" in effects
    assert "| MRPC | - | 70.00 ± 0.00 (1) | 5e-05 |" in effects


def test_a_quantization_config_is_labelled_in_a_few_words():
    from xtc.study.report import _label

    config = {"kept": "fp16", "rules": [
        {"pattern": r"bert\.encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|"
                    r"intermediate\.dense|output\.dense)", "weight_bits": 1, "granularity": "tensor", "act_bits": 8},
        {"pattern": r"bert\.embeddings\.word_embeddings", "weight_bits": 2, "granularity": "row"},
        {"pattern": r"bert\.embeddings\.position_embeddings|bert\.pooler\.dense", "weight_bits": 8, "granularity": "row"}]}
    assert _label(config) == ("linears W1/tensor A8; embeddings.word_embeddings W2/row; "
                              "embeddings.position_embeddings + pooler.dense W8/row; kept fp16")
    assert "|" not in _label(config)  # a Markdown table cell
